"""From explained inputs to captioned grids, and finding TensorBoard writers among the loggers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor

from facexai.callbacks.adapters import ExplanationInputs
from facexai.callbacks.metric_suite import VIEW_LABELS, View
from facexai.callbacks.overlays import classification_rows, compose_grid, pair_rows
from facexai.explain import ClassTarget

try:  # the unified ``lightning`` package has its own logger class
    from lightning.pytorch.loggers import TensorBoardLogger as _UnifiedTensorBoardLogger

    TENSORBOARD_LOGGERS: tuple[type, ...] = (TensorBoardLogger, _UnifiedTensorBoardLogger)
except ImportError:
    TENSORBOARD_LOGGERS = (TensorBoardLogger,)


def tensorboard_writers(trainer: pl.Trainer) -> list[Any]:
    """The ``SummaryWriter`` of every TensorBoard logger; other loggers get no images."""
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TENSORBOARD_LOGGERS)]


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
        captions = pair_captions(outputs, inputs.issame, VIEW_LABELS[view.suffix])
        grids[f"pairs_{view.suffix}"] = compose_grid(rows, captions, tile_size, f"{title}  {VIEW_LABELS[view.suffix]}")
    return grids


def single_captions(
    outputs: Tensor, view: View, labels: Tensor | None, class_names: Sequence[str] | None
) -> list[str]:
    """"<class> p=0.91[, label <class>][, pred <class> p=...]" per image, or the target score."""
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


def pair_captions(outputs: Tensor, issame: Tensor | None, view_label: str) -> list[str]:
    """"genuine cos=0.83 e+" per pair (cosine of the two clean embeddings)."""
    n = len(outputs) // 2
    cosine = F.cosine_similarity(outputs[:n], outputs[n:], dim=1).tolist()
    kinds = ["pair"] * n if issame is None else ["genuine" if s else "impostor" for s in issame.tolist()]
    return [f"{kind} | cos={c:.2f} | {view_label}" for kind, c in zip(kinds, cosine, strict=True)]
