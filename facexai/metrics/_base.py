"""The one private family base of the averaged metrics.

Most metrics here are a mean of per-sample values, so their state is a running sum and a count
(``dist_reduce_fx="sum"``): exact under DDP, tiny in checkpoints. Every metric records its
settings, because a faithfulness number is meaningless without them (``docs/metrics.md``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from facexai.metrics.functional._reduce import mean_compute
from facexai.metrics.functional.perturbation import BASELINES
from facexai.metrics.inputs import DeclaredMetric


def settings_name(key: str, settings: dict[str, Any]) -> str:
    """A TensorBoard-safe name carrying the settings: ``deletion_auc_steps-50_baseline-zero``."""
    parts = [f"{name}-{value}" for name, value in settings.items()]
    return "_".join([key, *parts])


def check_baseline_name(baseline: str) -> None:
    """Metric classes record the baseline by name; "custom" stands for a Tensor baseline."""
    valid = (*BASELINES, "custom")
    if baseline not in valid:
        raise ValueError(f"Unknown baseline {baseline!r}. Available: {', '.join(valid)}")


def check_label(value: str, what: str) -> None:
    """Raise ``ValueError`` unless a recorded setting is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")


class _MeanMetric(DeclaredMetric):
    """Running sum and count of per-sample values, plus a ``settings`` dict and ``log_name``.

    Subclasses are registered with ``register_metric`` (which sets ``key``), declare their
    ``inputs``, and call ``self._accumulate`` from ``update`` with the result of their
    functional twin's ``_update`` helper; ``compute`` is the running mean unless a subclass
    reduces otherwise. A subclass with settings records them with ``self._record`` (curve
    metrics also pass ``points`` to keep a pointwise sum of their curves, so the mean curve can
    be plotted); the constructor itself takes only torchmetrics options, so a metric's own
    signature lists exactly its options.

    Args:
        **kwargs: ``torchmetrics.Metric`` options.
    """

    full_state_update = False
    is_differentiable = False
    total: Tensor
    count: Tensor
    curve_total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings: dict[str, Any] = {}
        self.points: int | None = None
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def _record(self, settings: dict[str, Any], points: int | None = None) -> None:
        """Record what the number depends on; ``points``: points per curve, for the mean curve."""
        self.settings = dict(settings)
        if points is not None:
            self.points = points
            self.add_state("curve_total", default=torch.zeros(points), dist_reduce_fx="sum")

    @property
    def log_name(self) -> str:
        """Name for logging that carries the settings, e.g. ``deletion_auc_steps-50_baseline-zero``."""
        return settings_name(self.key, self.settings)

    def _accumulate(self, total: Tensor, count: Tensor, curve_total: Tensor | None = None) -> None:
        self.total += total.to(self.total)
        self.count += count.to(self.count)
        if curve_total is not None:
            self.curve_total += curve_total.to(self.curve_total)

    def compute(self) -> Tensor:
        """Mean of the per-sample values seen (NaN before any update)."""
        return mean_compute(self.total, self.count)

    def mean_curve(self) -> Tensor:
        """Mean curve (points,) over every curve seen, synced across processes (for plots)."""
        if self.points is None:
            raise TypeError(f"{type(self).__name__} keeps no curves")
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync):
            return self.curve_total / self.count

    def fractions(self) -> Tensor:
        """The x axis of the mean curve: 0, 1 / (points - 1), ..., 1."""
        if self.points is None:
            raise TypeError(f"{type(self).__name__} keeps no curves")
        return torch.linspace(0.0, 1.0, self.points, device=self.curve_total.device)

    def extra_repr(self) -> str:
        """The settings, shown in the metric's ``repr``."""
        return ", ".join(f"{name}={value!r}" for name, value in self.settings.items())
