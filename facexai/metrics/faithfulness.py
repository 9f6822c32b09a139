"""Faithfulness metrics as torchmetrics classes (twins of ``facexai.metrics.functional``).

The model-dependent step -- perturbing images and scoring them -- is done outside, by
:func:`~facexai.metrics.functional.perturbation_curves` or
:func:`~facexai.metrics.functional.masked_scores`; ``update`` takes the resulting tensors, so a
metric never owns a model and ``update`` needs no gradients.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from facexai.metrics._base import _MeanMetric, check_baseline_name, check_label
from facexai.metrics.functional._checks import check_steps
from facexai.metrics.functional._reduce import percent_compute
from facexai.metrics.functional.confidence import (
    _average_drop_update,
    _drop_in_deletion_update,
    _increase_update,
    check_form,
)
from facexai.metrics.functional.perturbation import DEFAULT_BASELINES, _auc_update
from facexai.metrics.functional.road import DEFAULT_PERCENTAGES, _road_update
from facexai.metrics.inputs import DELETED_SCORES, DELETION_CURVES, INSERTION_CURVES, KEPT_SCORES, ROAD_CURVES
from facexai.metrics.registry import register_metric


def _curve_settings(steps: int, baseline: str, score: str) -> dict[str, Any]:
    check_steps(steps)
    check_baseline_name(baseline)
    check_label(score, "score")
    return {"steps": steps, "baseline": baseline, "score": score}


def _confidence_settings(score: str, form: str | None) -> dict[str, Any]:
    check_label(score, "score")
    if form is None:
        return {"score": score}
    check_form(form)
    return {"score": score, "form": form}


class _CurveAUC(_MeanMetric):
    """Mean area under deletion or insertion curves; subclasses fix ``mode`` and ``inputs``.

    Args:
        steps: number of steps the curves were computed with (checked in ``update``).
        baseline: name of the baseline used ("zero", "blur", "mean" or "custom"); recorded.
            ``None``: the mode's default, "zero" for deletion and "blur" for insertion.
        score: what the curves score ("probability", "logit", "cosine", ...); recorded.
        **kwargs: ``torchmetrics.Metric`` options.
    """

    mode: ClassVar[str] = ""

    def __init__(self, steps: int = 50, baseline: str | None = None, score: str = "probability", **kwargs: Any) -> None:
        baseline = DEFAULT_BASELINES[self.mode] if baseline is None else baseline
        settings = _curve_settings(steps, baseline, score)
        super().__init__(**kwargs)
        self._record(settings, points=steps + 1)
        self.steps, self.baseline, self.score = steps, baseline, score

    def update(self, curves: Tensor) -> None:
        """Add curves (N, steps + 1)."""
        self._accumulate(*_auc_update(curves, self.steps))


@register_metric("deletion_auc")
class DeletionAUC(_CurveAUC):
    """Mean deletion AUC (RISE, Petsiuk et al., BMVC 2018, arXiv 1806.07421); lower is better.

    ``update(curves)`` takes deletion curves (N, steps + 1) from
    ``perturbation_curves(..., mode="deletion")``. For a face pair's e- map, pass curves of the
    "dissimilar" score 1 - s, so that lower stays better. ``mean_curve()`` gives the mean curve.
    Arguments as in :class:`_CurveAUC`; the default baseline is "zero".

    >>> import torch
    >>> metric = DeletionAUC(steps=2)
    >>> metric.update(torch.tensor([[1.0, 0.5, 0.0]]))
    >>> float(metric.compute())
    0.5
    """

    mode = "deletion"
    inputs = DELETION_CURVES
    higher_is_better = False


@register_metric("insertion_auc")
class InsertionAUC(_CurveAUC):
    """Mean insertion AUC (RISE); higher is better. Default baseline "blur" (``docs/metrics.md``).

    ``update(curves)`` takes insertion curves (N, steps + 1) from
    ``perturbation_curves(..., mode="insertion")``. Arguments as in :class:`DeletionAUC`.
    """

    mode = "insertion"
    inputs = INSERTION_CURVES
    higher_is_better = True


class _Percent(_MeanMetric):
    """A percentage over samples of clean vs perturbed scores; subclasses set ``inputs`` and ``update``.

    Args:
        score: what the scores are ("probability", "cosine", ...); recorded.
        **kwargs: ``torchmetrics.Metric`` options.
    """

    def __init__(self, score: str = "probability", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._record(_confidence_settings(score, None))
        self.score = score

    def compute(self) -> Tensor:
        """Percentage over the counted samples (NaN if none counted)."""
        return percent_compute(self.total, self.count)


class _FormPercent(_Percent):
    """A :class:`_Percent` with a ratio or difference form (ratio forms need positive scores).

    Args:
        score: what the scores are; recorded.
        form: "ratio" (divide by the clean score Y, over samples with Y > 0) or "difference".
        **kwargs: ``torchmetrics.Metric`` options.
    """

    def __init__(self, score: str = "probability", form: str = "ratio", **kwargs: Any) -> None:
        super().__init__(score, **kwargs)
        self._record(_confidence_settings(score, form))
        self.form = form


@register_metric("average_drop")
class AverageDrop(_FormPercent):
    """Average Drop in % (Grad-CAM++, Chattopadhay et al., WACV 2018); lower is better.

    ``update(scores, masked_scores)`` with Y = s(x) and O = s(x * E) from ``masked_scores``;
    ``form="ratio"`` averages max(0, Y - O) / Y over samples with Y > 0, ``"difference"``
    max(0, Y - O) (cosine scores of face pairs). Arguments as in :class:`_FormPercent`.
    """

    inputs = KEPT_SCORES
    higher_is_better = False

    def update(self, scores: Tensor, masked_scores: Tensor) -> None:
        """Add clean scores Y (N,) and map-kept scores O (N,)."""
        self._accumulate(*_average_drop_update(scores, masked_scores, self.form))


@register_metric("increase_in_confidence")
class IncreaseInConfidence(_Percent):
    """Increase in Confidence in %, share of samples with O > Y (Grad-CAM++); higher is better.

    ``update(scores, masked_scores)`` as :class:`AverageDrop`. Arguments as in :class:`_Percent`.
    """

    inputs = KEPT_SCORES
    higher_is_better = True

    def update(self, scores: Tensor, masked_scores: Tensor) -> None:
        """Add clean scores Y (N,) and map-kept scores O (N,)."""
        self._accumulate(*_increase_update(scores, masked_scores))


@register_metric("average_drop_in_deletion")
class AverageDropInDeletion(_FormPercent):
    """Average Drop in Deletion in % (LIFT-CAM, Jung & Oh, ICCV 2021); higher is better.

    ``update(scores, deleted_scores)`` with Y = s(x) and D = s(x * (1 - E)); ``form="ratio"``
    averages (Y - D) / Y over samples with Y > 0, ``"difference"`` Y - D. Arguments as in
    :class:`_FormPercent`.
    """

    inputs = DELETED_SCORES
    higher_is_better = True

    def update(self, scores: Tensor, deleted_scores: Tensor) -> None:
        """Add clean scores Y (N,) and map-deleted scores D (N,)."""
        self._accumulate(*_drop_in_deletion_update(scores, deleted_scores, self.form))


def _road_settings(percentages: tuple[float, ...], noise_std: float, score: str) -> dict[str, Any]:
    check_label(score, "score")
    if not percentages or any(not 0 <= p <= 100 for p in percentages):
        raise ValueError(f"percentages must be a non-empty list in [0, 100], got {list(percentages)}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    span = f"{percentages[0]:g}-{percentages[-1]:g}x{len(percentages)}"
    return {"percentages": span, "noise": noise_std, "score": score}


class _ROAD(_MeanMetric):
    """Mean ROAD score over samples and removal percentages; subclasses fix ``order``.

    Args:
        percentages: removal percentages the curves were computed with (checked by length).
        noise_std: imputation noise used; recorded.
        score: what the curves score; recorded.
        **kwargs: ``torchmetrics.Metric`` options.
    """

    inputs = ROAD_CURVES
    order: ClassVar[str] = ""

    def __init__(
        self,
        percentages: tuple[float, ...] = DEFAULT_PERCENTAGES,
        noise_std: float = 0.01,
        score: str = "probability",
        **kwargs: Any,
    ) -> None:
        percentages = tuple(percentages)
        settings = _road_settings(percentages, noise_std, score)
        super().__init__(**kwargs)
        self._record(settings, points=len(percentages))
        self.percentages, self.noise_std, self.score = percentages, noise_std, score

    def update(self, curves: Tensor) -> None:
        """Add ROAD curves (N, P)."""
        self._accumulate(*_road_update(curves, len(self.percentages)))


@register_metric("road_morf")
class ROADMoRF(_ROAD):
    """ROAD, most relevant first (Rong et al., ICML 2022, arXiv 2202.00449); lower is better.

    ``update(curves)`` with scores (N, P) from ``road_curves(..., order="morf")``; the value is
    the mean score over samples and percentages. ``mean_curve()`` gives the mean curve.
    Arguments as in :class:`_ROAD`.
    """

    order = "morf"
    higher_is_better = False


@register_metric("road_lerf")
class ROADLeRF(_ROAD):
    """ROAD, least relevant first; higher is better. Arguments as in :class:`ROADMoRF`.

    ``update(curves)`` with scores (N, P) from ``road_curves(..., order="lerf")``.
    """

    order = "lerf"
    higher_is_better = True
