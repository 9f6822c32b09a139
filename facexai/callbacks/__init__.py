"""Callbacks: explanations, faithfulness metrics and heatmaps inside a Lightning run.

The explanations and their metrics come from :mod:`facexai.pipeline`, which ``evaluate``
shares, so the same settings log the same numbers here as ``evaluate`` reports.

>>> import pytorch_lightning as pl
>>> from facexai.callbacks import ExplanationCallback
>>> trainer = pl.Trainer(callbacks=[ExplanationCallback(explainers=["gradcam", "liftcam"])], logger=False)
>>> "deletion_auc" in callback_metrics()
True
"""

from facexai.callbacks.comparison import ComparisonLayout, comparison_grid
from facexai.callbacks.explanation import DEFAULT_METRICS, ExplanationCallback
from facexai.callbacks.overlays import (
    COLORMAPS,
    apply_colormap,
    check_colormap,
    compose_grid,
    overlay,
    save_grid,
    save_heatmap_grid,
)
from facexai.pipeline import BatchAdapter, ExplanationInputs, feedable_metrics


def callback_metrics() -> list[str]:
    """Registered metrics the callback can compute (dataset-level ones need ``evaluate``)."""
    return feedable_metrics(dataset_level=False)


__all__ = [
    "COLORMAPS",
    "DEFAULT_METRICS",
    "BatchAdapter",
    "ComparisonLayout",
    "ExplanationCallback",
    "ExplanationInputs",
    "apply_colormap",
    "callback_metrics",
    "check_colormap",
    "comparison_grid",
    "compose_grid",
    "overlay",
    "save_grid",
    "save_heatmap_grid",
]
