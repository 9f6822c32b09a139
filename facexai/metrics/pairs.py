"""Verification accuracy under deletion / insertion as torchmetrics classes.

The operating threshold is the EER threshold of the clean pair scores over the *whole* dataset,
so per-pair curves are kept in "cat" states and everything is computed in ``compute()``, after
torchmetrics gathered the curves of all processes. See :mod:`facexai.metrics.functional.pairs`
for the protocol (CorrRISE / FAME).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics.utilities import rank_zero_warn
from torchmetrics.utilities.data import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from facexai.metrics._base import check_baseline_name, settings_name
from facexai.metrics._sync import fill_empty_cat_states
from facexai.metrics.functional._checks import check_steps
from facexai.metrics.functional.pairs import _pair_curve_compute, _pair_curve_update
from facexai.metrics.inputs import PAIR_CURVES, DeclaredMetric
from facexai.metrics.registry import register_metric


class _PairCurveAUC(DeclaredMetric):
    """Pair curves and labels in "cat" states; subclasses fix ``mode``.

    Where the threshold is undefined (the pairs are all genuine or all impostor) every value is
    NaN, with a warning, rather than a number computed from a meaningless threshold.

    Args:
        steps: P = 100 k / steps % (default 10: 0, 10, ..., 100).
        baseline: name of the fill used; "zero" in the protocol; recorded.
        **kwargs: ``torchmetrics.Metric`` options.
    """

    mode: ClassVar[str] = ""
    inputs = PAIR_CURVES
    dataset_level = True
    full_state_update = False
    is_differentiable = False
    curves: list[Tensor]
    issame: list[Tensor]

    def __init__(self, steps: int = 10, baseline: str = "zero", **kwargs: Any) -> None:
        check_steps(steps)
        check_baseline_name(baseline)
        super().__init__(**kwargs)
        self.steps, self.baseline = steps, baseline
        self.settings: dict[str, Any] = {"steps": steps, "baseline": baseline}
        self.add_state("curves", default=[], dist_reduce_fx="cat")
        self.add_state("issame", default=[], dist_reduce_fx="cat")

    @property
    def log_name(self) -> str:
        """Name for logging that carries the settings."""
        return settings_name(self.key, self.settings)

    def update(self, curves: Tensor, issame: Tensor) -> None:
        """Add pair curves (M, steps + 1) and genuine/impostor labels (M,)."""
        curves, issame = _pair_curve_update(curves, issame, self.steps)
        self.curves.append(curves)
        self.issame.append(issame)

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None) -> None:
        """Gather the states; a process that saw no pair sends typed empty states (see fill_empty_cat_states)."""
        empties = {"curves": torch.empty(0, self.steps + 1), "issame": torch.empty(0, dtype=torch.long)}
        fill_empty_cat_states(self, empties)
        super()._sync_dist(dist_sync_fn, process_group)

    def _result(self) -> tuple[Tensor, Tensor, Tensor]:
        curves, issame = dim_zero_cat(self.curves), dim_zero_cat(self.issame)
        genuine = int(issame.sum())
        if genuine in (0, len(issame)):
            rank_zero_warn(
                f"{self.key}: {genuine} genuine pairs of {len(issame)}; both kinds are needed, returning NaN"
            )
            nan = curves.new_tensor(float("nan"))
            return nan, curves.new_full((self.steps + 1,), float("nan")), nan
        return _pair_curve_compute(curves, issame, self.mode)

    def compute(self) -> Tensor:
        """AUC of accuracy over P in [0, 1] at the clean EER threshold."""
        return self._result()[2]

    def accuracy_curve(self) -> Tensor:
        """Verification accuracy per step (steps + 1,), synced across processes."""
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync):
            return self._result()[1]

    def threshold(self) -> Tensor:
        """EER threshold of the clean pair scores, synced across processes."""
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync):
            return self._result()[0]


@register_metric("verification_deletion_auc")
class VerificationDeletionAUC(_PairCurveAUC):
    """Area under verification accuracy vs. fraction of probe pixels deleted; lower is better.

    ``update(curves, issame)`` with pair curves (M, steps + 1) from
    ``verification_perturbation_curves(..., mode="deletion")`` and labels (M,).
    ``accuracy_curve()`` gives the accuracy per step; ``threshold()`` the clean EER threshold.
    Arguments: ``steps=10``, ``baseline="zero"`` (recorded), torchmetrics options.
    """

    mode = "deletion"
    higher_is_better = False


@register_metric("verification_insertion_auc")
class VerificationInsertionAUC(_PairCurveAUC):
    """Area under verification accuracy vs. fraction of probe pixels kept; higher is better.

    ``update(curves, issame)`` with curves from ``verification_perturbation_curves(...,
    mode="insertion")``; the clean score is the last column. Arguments as in
    :class:`VerificationDeletionAUC`.
    """

    mode = "insertion"
    higher_is_better = True
