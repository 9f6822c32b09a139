"""Callbacks: explanations, faithfulness metrics and heatmaps inside a Lightning run.

>>> from facexai.callbacks import ExplanationCallback
>>> trainer = pl.Trainer(callbacks=[ExplanationCallback(explainers=["gradcam", "liftcam"])])
"""

from facexai.callbacks.adapters import BatchAdapter, ExplanationInputs
from facexai.callbacks.comparison import ComparisonLayout, comparison_grid
from facexai.callbacks.explanation import ExplanationCallback
from facexai.callbacks.metric_suite import DEFAULT_METRICS
from facexai.callbacks.metric_suite import SUPPORTED as SUPPORTED_METRICS
from facexai.callbacks.overlays import (
    COLORMAPS,
    apply_colormap,
    check_colormap,
    compose_grid,
    overlay,
    save_grid,
    save_heatmap_grid,
)

__all__ = [
    "COLORMAPS",
    "DEFAULT_METRICS",
    "SUPPORTED_METRICS",
    "BatchAdapter",
    "ComparisonLayout",
    "ExplanationCallback",
    "ExplanationInputs",
    "apply_colormap",
    "check_colormap",
    "comparison_grid",
    "compose_grid",
    "overlay",
    "save_grid",
    "save_heatmap_grid",
]
