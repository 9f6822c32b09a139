"""From explained inputs to captioned grids, and finding TensorBoard writers among the loggers.

Two kinds of picture: one grid per explainer (:func:`render_views`) and, for face pairs, one
grid comparing all explainers (:func:`render_comparison`, drawn by :func:`comparison_grid`).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch.nn.functional as F
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor

from facexai.callbacks.comparison import ComparisonLayout, comparison_grid
from facexai.callbacks.overlays import classification_rows, compose_grid, pair_rows
from facexai.explain import ClassTarget
from facexai.pipeline import ExplanationInputs, View

__all__ = [
    "ComparisonLayout",
    "add_picture",
    "comparison_grid",
    "render_comparison",
    "render_views",
    "tensorboard_writers",
]

#: zlib level and strategy (3 = Z_RLE) of logged PNGs: on the demo's grids ~3x faster to encode
#: than PIL's default (level 6, default strategy) for files of the same size (155 kB per
#: 458 x 272 grid; 46 vs 150 ms on the loaded 2-core machine)
PNG_COMPRESSION, PNG_STRATEGY = 1, 3

#: comparison-grid titles: what each pair view explains
VIEW_TITLES = {"pos": "e+  what makes A and B match", "neg": "e-  what pushes A and B apart"}

try:  # the unified ``lightning`` package has its own logger class
    from lightning.pytorch.loggers import TensorBoardLogger as _UnifiedTensorBoardLogger

    TENSORBOARD_LOGGERS: tuple[type[Any], ...] = (TensorBoardLogger, _UnifiedTensorBoardLogger)
except ImportError:
    TENSORBOARD_LOGGERS = (TensorBoardLogger,)


def tensorboard_writers(trainer: pl.Trainer) -> list[Any]:
    """The ``SummaryWriter`` of every TensorBoard logger; other loggers get no images."""
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TENSORBOARD_LOGGERS)]


def add_picture(writer: Any, tag: str, picture: np.ndarray, step: int) -> None:
    """Log an RGB picture (H, W, 3) uint8 to a TensorBoard writer as a fast-compressed PNG.

    ``SummaryWriter.add_image`` always encodes at PIL's default level; with ten grids per
    epoch that encoding cost more than the explanations themselves. Writers without torch's
    ``_get_file_writer`` (e.g. tensorboardX) get ``add_image``, same picture, slower.
    """
    file_writer = getattr(writer, "_get_file_writer", None)
    if file_writer is None:
        writer.add_image(tag, picture, global_step=step, dataformats="HWC")
        return
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=PNG_COMPRESSION, compress_type=PNG_STRATEGY)
    height, width = picture.shape[:2]
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=buffer.getvalue())
    file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def render_views(
    inputs: ExplanationInputs,
    views: Sequence[View],
    denormalise: Callable[[Tensor], Tensor],
    class_names: Sequence[str] | None,
    colormap: str,
    tile_size: int,
    title: str,
) -> dict[str, Tensor]:
    """Grids of one explainer: ``{"heatmaps": ...}`` or ``{"pairs_pos": ..., "pairs_neg": ...}``.

    Single images: rows [image | heatmap | overlay] captioned with class and probability. Pairs:
    rows [A | map over A | B | map over B] captioned genuine/impostor and cosine similarity.
    """
    display = denormalise(inputs.images.detach().float().cpu())
    outputs = inputs.outputs.detach().float().cpu()
    if not inputs.pairs:
        view = views[0]
        rows = classification_rows(display, view.maps.detach().cpu(), colormap)
        captions = single_captions(outputs, view, inputs.labels, class_names)
        return {"heatmaps": compose_grid(rows, captions, tile_size, title)}
    n = len(display) // 2
    grids = {}
    for view in views:
        maps = view.maps.detach().cpu()
        rows = pair_rows(display[:n], display[n:], maps[:n], maps[n:], colormap)
        captions = pair_captions(outputs, inputs.issame, view.spec.label)
        grids[f"pairs_{view.suffix}"] = compose_grid(rows, captions, tile_size, f"{title}  {view.spec.label}")
    return grids


def single_captions(outputs: Tensor, view: View, labels: Tensor | None, class_names: Sequence[str] | None) -> list[str]:
    """Captions ``<class> p=0.91[, label <class>][, pred <class> p=...]`` per image, or the target score."""
    if not isinstance(view.target, ClassTarget):
        return [f"score {s:.3f}" for s in view.target(outputs).tolist()]

    def name(index: int) -> str:
        return str(class_names[index]) if class_names is not None and index < len(class_names) else str(index)

    probs = outputs.softmax(dim=1)
    captions = []
    for i, t in enumerate(view.target.labels.cpu().tolist()):
        text = f"{name(t)} p={probs[i, t]:.2f}"
        if labels is not None and int(labels[i]) != t:
            text += f", label {name(int(labels[i]))}"
        pred = int(probs[i].argmax())
        if pred != t:
            text += f", pred {name(pred)} p={probs[i, pred]:.2f}"
        captions.append(text)
    return captions


def pair_captions(outputs: Tensor, issame: Tensor | None, view_label: str = "") -> list[str]:
    """Captions ``genuine | cos=0.83 | e+`` per pair (cosine of the clean embeddings; no view label if empty)."""
    n = len(outputs) // 2
    cosine = F.cosine_similarity(outputs[:n], outputs[n:], dim=1).tolist()
    kinds = ["pair"] * n if issame is None else ["genuine" if s else "impostor" for s in issame.tolist()]
    suffix = f" | {view_label}" if view_label else ""
    return [f"{kind} | cos={c:.2f}{suffix}" for kind, c in zip(kinds, cosine, strict=True)]


def render_comparison(
    inputs: ExplanationInputs,
    views: Mapping[str, Sequence[View]],
    denormalise: Callable[[Tensor], Tensor],
    colormap: str,
    tile_size: int,
    subtitle: str = "",
) -> dict[str, np.ndarray]:
    """All explainers side by side on the explained pairs: ``{"pairs_pos": ..., "pairs_neg": ...}``.

    Args:
        inputs: the explained pair batch (images stacked [A; B]); its masks are outlined.
        views: explainer label -> its views (e+, and e- when computed); each label contributes
            one column per face.
        denormalise: normalised images -> display images in [0, 1].
        colormap: matplotlib colour map name.
        tile_size: tile side in pixels.
        subtitle: appended to the title (e.g. epoch and step).

    Returns:
        kind -> ``uint8`` (H, W, 3) picture; a view that only some explainers have is drawn
        with those. Empty for single images.
    """
    if not inputs.pairs:
        return {}
    display = denormalise(inputs.images.detach().float().cpu())
    n = len(display) // 2
    masks = None if inputs.masks is None else inputs.masks.detach().cpu()
    captions = pair_captions(inputs.outputs.detach().float().cpu(), inputs.issame)
    grids = {}
    for suffix, title in VIEW_TITLES.items():
        maps = {
            label.rsplit("/", 1)[-1]: (view.maps[:n], view.maps[n:])
            for label, label_views in views.items()
            for view in label_views
            if view.suffix == suffix
        }
        if maps:
            grids[f"pairs_{suffix}"] = comparison_grid(
                display[:n],
                display[n:],
                maps,
                captions,
                None if masks is None else masks[:n],
                None if masks is None else masks[n:],
                tile_size,
                colormap,
                f"{title}  {subtitle}".rstrip(),
            )
    return grids
