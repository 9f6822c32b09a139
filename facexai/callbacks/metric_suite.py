"""The callback's metrics: which registry metrics it can feed, and feeding them per explainer.

Every metric is a ``facexai.metrics`` torchmetrics object, one per (explainer, metric, view),
created lazily on the first explained batch (only then is it known whether the data are face
pairs). States sync through torchmetrics under DDP, so ``compute`` must be called on every rank;
the callback calls the suite's methods on all ranks in the same order, and the suite agrees with
the other ranks on which metrics to compute (see :meth:`MetricSuite.compute`).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.aggregation import SumMetric

from facexai.explain import Target
from facexai.metrics import create_metric, metric_class
from facexai.metrics.functional import (
    deletion_insertion_curves,
    masked_scores,
    perturbation_curves,
    road_curves,
    target_score_fn,
)

#: metric name -> how the callback feeds it
SUPPORTED: dict[str, str] = {
    "deletion_auc": "curve",
    "insertion_auc": "curve",
    "average_drop": "confidence",
    "increase_in_confidence": "confidence",
    "average_drop_in_deletion": "confidence",
    "pointing_game": "mask",
    "energy_pointing_game": "mask",
    "sparsity": "map",
    "complexity": "map",
    "road_morf": "road",
    "road_lerf": "road",
}
UNSUPPORTED: dict[str, str] = {
    "randomisation_sanity": "it needs a re-initialised copy of the model",
    "verification_deletion_auc": "it is a dataset-level protocol (EER threshold over all pairs)",
    "verification_insertion_auc": "it is a dataset-level protocol (EER threshold over all pairs)",
    "pair_verification": "it measures the model, not the explanation (VerificationModule logs it)",
}
#: deletion and insertion AUC, and the energy pointing game when the batches carry masks
DEFAULT_METRICS = ("deletion_auc", "insertion_auc", "energy_pointing_game")
VIEW_LABELS = {"": "", "pos": "e+", "neg": "e-"}
CURVE_MODES = {"deletion_auc": "deletion", "insertion_auc": "insertion"}


@dataclass
class View:
    """One set of maps of one explainer: ``suffix`` "" (single images), "pos" (e+) or "neg" (e-).

    ``softmax`` scores the softmax probability of the target (classifiers, METRICS.md's default);
    ``score`` names what is scored and is recorded in the metrics' settings.
    """

    suffix: str
    maps: Tensor
    target: Target
    softmax: bool
    score: str


MetricSpec = Sequence[str] | Mapping[str, Mapping[str, Any] | None] | None


def parse_metric_specs(metrics: MetricSpec) -> dict[str, dict[str, Any]]:
    """Normalise a list of names or a ``name -> options`` dict and check it fully, now.

    Raises:
        ValueError: unknown or unsupported metric name (listing the valid ones), bad options.
        TypeError: a value of the wrong type.
    """
    if metrics is None:
        specs: dict[str, dict[str, Any]] = {name: {} for name in DEFAULT_METRICS}
    elif isinstance(metrics, Mapping):
        specs = {_name(k): _options(k, v) for k, v in metrics.items()}
    elif isinstance(metrics, Sequence) and not isinstance(metrics, str):
        specs = {_name(k): {} for k in metrics}
    else:
        raise TypeError(f"metrics must be a list of names or a dict name -> options, got {metrics!r}")
    for name, options in specs.items():
        _check_supported(name)
        if "score" in options:
            raise ValueError(
                f"metric {name!r}: 'score' is set by ExplanationCallback (softmax probability for "
                "classifiers, cosine for e+, 1 - cosine for e-); remove it from the options"
            )
        if options.get("baseline") == "custom":
            raise ValueError(f"metric {name!r}: the callback supports baselines 'zero', 'blur', 'mean', not 'custom'")
        build_metric(name, options, "probability")
    return specs


def _name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"metric names must be strings, got {name!r}")
    return name.lower()


def _options(name: Any, options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"options of metric {name!r} must be a dict, got {options!r}")
    return dict(options)


def _check_supported(name: str) -> None:
    metric_class(name)  # unknown names: ValueError listing every registered metric
    if name in UNSUPPORTED:
        raise ValueError(
            f"Metric {name!r} cannot be computed by ExplanationCallback: {UNSUPPORTED[name]}. "
            f"Supported: {', '.join(sorted(SUPPORTED))}"
        )


def build_metric(name: str, options: Mapping[str, Any], score: str) -> Metric:
    """Create metric ``name`` with ``options``, recording ``score`` where the metric takes one."""
    params = inspect.signature(metric_class(name).__init__).parameters
    accepted = [p for p in params if p not in ("self", "kwargs", "score")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"Invalid options {unknown} for metric {name!r}. Accepted: {accepted}")
    kwargs = {**options, "score": score} if "score" in params else dict(options)
    return create_metric(name, **kwargs)


class MetricSuite:
    """All metric objects of one callback, keyed ``"<explainer>/<metric>[_<suffix>]"``.

    Args:
        specs: metric name -> options, from :func:`parse_metric_specs`.
        mean: per-channel normalisation mean (ROAD imputes in pixel space).
        std: per-channel normalisation std.
    """

    def __init__(self, specs: dict[str, dict[str, Any]], mean: Sequence[float], std: Sequence[float]) -> None:
        self.specs = specs
        self.mean, self.std = list(mean), list(std)
        self.metrics: dict[str, Metric] = {}
        #: key -> (metric name, score) it was built with, so other ranks can build it too
        self.recipes: dict[str, tuple[str, str]] = {}
        self.samples = SumMetric()

    def names(self, kind: str) -> list[str]:
        """Configured metric names fed the way ``kind`` says (see :data:`SUPPORTED`)."""
        return [name for name in self.specs if SUPPORTED[name] == kind]

    def metric(self, label: str, name: str, view: View, device: torch.device) -> Metric:
        """The metric for (explainer ``label``, ``name``, ``view``), created on first use."""
        key = f"{label}/{name}" + (f"_{view.suffix}" if view.suffix else "")
        if key not in self.metrics:
            self.metrics[key] = build_metric(name, self.specs[name], view.score).to(device)
            self.recipes[key] = (name, view.score)
        return self.metrics[key]

    def count(self, n: int, device: torch.device) -> None:
        """Record ``n`` explained samples (images, or pairs)."""
        self.samples = self.samples.to(device)
        self.samples.update(torch.tensor(float(n), device=device))

    def update(self, label: str, view: View, images: Tensor, masks: Tensor | None, model: nn.Module) -> None:
        """Feed every configured metric the maps of one view (runs the perturbation scoring)."""
        device = images.device
        score_fn = target_score_fn(model, view.target, softmax=view.softmax)
        self._update_curves(label, view, images, score_fn)
        if self.names("confidence"):
            clean, kept, deleted = masked_scores(score_fn, images, view.maps, with_index=True)
            for name in self.names("confidence"):
                other = deleted if name == "average_drop_in_deletion" else kept
                self.metric(label, name, view, device).update(clean, other)
        for name in self.names("mask") if masks is not None else []:
            self.metric(label, name, view, device).update(view.maps, masks)
        for name in self.names("map"):
            self.metric(label, name, view, device).update(view.maps)
        for name in self.names("road"):
            metric = self.metric(label, name, view, device)
            curves = road_curves(
                score_fn, images, view.maps, self.mean, self.std, metric.percentages,
                order=name.split("_")[1], noise_std=metric.noise_std, with_index=True,
            )  # fmt: skip
            metric.update(curves)

    def _update_curves(self, label: str, view: View, images: Tensor, score_fn: Callable[..., Tensor]) -> None:
        metrics = {name: self.metric(label, name, view, images.device) for name in self.names("curve")}
        deletion, insertion = metrics.get("deletion_auc"), metrics.get("insertion_auc")
        if deletion is not None and insertion is not None and deletion.steps == insertion.steps:
            curves = deletion_insertion_curves(
                score_fn, images, view.maps, deletion.steps, deletion.baseline, insertion.baseline, with_index=True
            )
            deletion.update(curves[0])
            insertion.update(curves[1])
            return
        for name, metric in metrics.items():
            curves = perturbation_curves(
                score_fn, images, view.maps, metric.steps, metric.baseline, CURVE_MODES[name], with_index=True
            )
            metric.update(curves)

    def to(self, device: torch.device) -> None:
        """Move every metric state to ``device`` (the module's, known only once training starts)."""
        for key, metric in self.metrics.items():
            self.metrics[key] = metric.to(device)
        self.samples = self.samples.to(device)

    def compute(self) -> dict[str, Tensor]:
        """Synced values of every metric updated since the last reset on any rank (collective under DDP).

        Every rank computes the same metrics in the same order, also a rank that explained no
        batch or other explainers/sets than the others: each ``compute`` is a gather, and ranks
        deciding from their own ``update_called`` would call different collectives and hang (or
        silently pair one metric's states with another's).
        """
        keys, counted = self._agreed_keys()
        with _empty_rank_compute():
            values = {key: self.metrics[key].compute() for key in keys}
            if counted:
                values["samples"] = self.samples.compute()
        return values

    def mean_curves(self) -> dict[str, dict[str, dict[str, Tensor]]]:
        """``{explainer: {"deletion"|"insertion": {view label: mean curve}}}`` (collective under DDP)."""
        out: dict[str, dict[str, dict[str, Tensor]]] = {}
        keys, _ = self._agreed_keys()
        with _empty_rank_compute():
            for key in keys:
                label, name = key.rsplit("/", 1)
                base, _, suffix = name.partition("_auc")
                if name.startswith(tuple(CURVE_MODES)):
                    lines = out.setdefault(label, {}).setdefault(base, {})
                    lines[VIEW_LABELS[suffix.lstrip("_")]] = self.metrics[key].mean_curve()
        return out

    def _agreed_keys(self) -> tuple[list[str], bool]:
        """Keys of the metrics updated on any rank, in one order on every rank, and whether any rank counted samples.

        Under DDP one ``all_gather_object`` of the locally updated keys (with how to build
        them); a metric another rank created is built here, empty, so this rank can take part
        in its gather. Every metric the callback feeds keeps fixed-shape "sum" states, so an
        empty one contributes zeros. Outside DDP: the local keys, nothing is communicated.
        """
        local = [(key, *self.recipes[key]) for key, metric in self.metrics.items() if metric.update_called]
        counted = bool(self.samples.update_called)
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return [key for key, _, _ in local], counted
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (local, counted))
        recipes: dict[str, tuple[str, str]] = {}
        for rank_local, _ in gathered:  # rank order: the same dict on every rank
            for key, name, score in rank_local:
                recipes.setdefault(key, (name, score))
        for key, (name, score) in recipes.items():
            if key not in self.metrics:
                self.metrics[key] = build_metric(name, self.specs[name], score).to(self.samples.device)
                self.recipes[key] = (name, score)
        return list(recipes), any(rank_counted for _, rank_counted in gathered)

    def settings(self) -> dict[str, str]:
        """Metric key -> its ``log_name`` carrying the settings (steps, baseline, score)."""
        return {key: getattr(metric, "log_name", key) for key, metric in self.metrics.items()}

    def reset(self) -> None:
        """Clear every state (at the end of each validation epoch)."""
        for metric in self.metrics.values():
            metric.reset()
        self.samples.reset()


@contextmanager
def _empty_rank_compute() -> Iterator[None]:
    """Silence torchmetrics' "compute before update" warning: on a rank that saw no batch of a
    metric the other ranks updated, computing is right (the gather brings their states).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The ``compute`` method of metric", category=UserWarning)
        yield
