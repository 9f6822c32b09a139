"""The report's pictures: mean curve plots per method and overlaid, and the face-pair galleries.

Plots use the figure the training callback logs (:func:`facexai.callbacks.overlays.curves_figure`)
on a bare ``matplotlib.figure.Figure`` (Agg canvas, no pyplot global state). For face pairs,
``gallery.png`` (e+) and ``gallery_neg.png`` (e-) put every method's maps of the first pairs side
by side, so a reader sees what the numbers rank.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from facexai.callbacks.overlays import curves_figure
from facexai.evaluate.settings import EvaluationResult
from facexai.pipeline import ExplanationInputs
from facexai.writing import atomic_path

#: pairs shown in the gallery: enough to compare methods, few enough to read at a glance
GALLERY_PAIRS = 4
GALLERY_VIEWS = {
    "pos": ("gallery.png", "e+ what makes A and B match"),
    "neg": ("gallery_neg.png", "e- what pushes A and B apart"),
}


def safe_name(name: str) -> str:
    """A file-name-safe version of a row label (``inverted gradcam++`` -> ``inverted_gradcam++``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "method"


def plot_method(result: EvaluationResult, path: Path) -> Path:
    """Mean deletion and insertion curves of one method, one line per view."""
    save_figure(curves_figure(result.curves, result.name), path)
    return path


def save_figure(fig: Figure, path: Path) -> None:
    """A figure as PNG, written atomically (a failed draw leaves the previous file)."""
    with atomic_path(path) as partial:
        fig.savefig(partial, format="png")


def plot_overlay(results: Sequence[EvaluationResult], path: Path) -> Path:
    """All methods on shared axes: one panel per (mode, view), reference rows dashed."""
    panels: dict[str, dict[str, torch.Tensor]] = {}
    for r in results:
        for mode, lines in r.curves.items():
            for view, curve in lines.items():
                panels.setdefault(f"{mode} {view}".strip(), {})[r.name] = curve
    dashed = [r.name for r in results if r.kind == "reference"]
    fig = curves_figure(dict(sorted(panels.items(), key=lambda kv: kv[0].split()[-1])), "all methods", dashed)
    save_figure(fig, path)
    return path


def gallery_captions(gallery: ExplanationInputs, count: int) -> list[str]:
    """Captions such as ``genuine | cos=0.83`` per shown pair: the clean cosine of the two embeddings."""
    from facexai.callbacks.rendering import pair_captions

    return pair_captions(gallery.outputs.detach().float().cpu(), gallery.issame)[:count]


def gallery_picture(results: Sequence[EvaluationResult], gallery: ExplanationInputs, suffix: str, title: str) -> Any:
    """The comparison grid (uint8 HWC) of one view: rows are pairs, each explainer's maps side by side."""
    from facexai.callbacks.rendering import comparison_grid
    from facexai.data.transforms import denormalise

    n = len(gallery.images) // 2
    k = min(GALLERY_PAIRS, n)

    def sides(stack: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return stack[:k].cpu(), stack[n : n + k].cpu()

    maps = {r.name: sides(r.examples[suffix]) for r in results if r.kind == "explainer" and suffix in r.examples}
    masks_a, masks_b = sides(gallery.masks) if gallery.masks is not None else (None, None)
    images_a, images_b = sides(denormalise(gallery.images.detach().float()))
    return comparison_grid(images_a, images_b, maps, gallery_captions(gallery, k), masks_a, masks_b, title=title)


def write_galleries(
    results: Sequence[EvaluationResult], gallery: ExplanationInputs | None, out: Path
) -> dict[str, Path]:
    """``gallery.png`` (e+) and ``gallery_neg.png`` (e-) for face pairs; classifier runs get none."""
    from PIL import Image

    if gallery is None or not gallery.pairs:
        return {}
    paths = {}
    for suffix, (name, title) in GALLERY_VIEWS.items():
        if any(suffix in r.examples for r in results if r.kind == "explainer"):
            picture = Image.fromarray(gallery_picture(results, gallery, suffix, title))
            with atomic_path(out / name) as partial:
                picture.save(partial, format="PNG")
            paths[f"gallery {suffix}"] = out / name
    return paths
