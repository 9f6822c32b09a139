"""The metrics of one run, keyed ``"<explainer>/<metric>[_<suffix>]"``, fed by their declarations.

Every metric is a ``facexai.metrics`` torchmetrics object, one per (explainer, metric, view),
created on the first batch that feeds it (only then is it known whether the data are face
pairs, or carry masks). Pair-level metrics are keyed without a view suffix: they score the
pair through the probe's e+ map. States sync through torchmetrics under DDP, so ``compute``
must be called on every rank; the suite agrees with the other ranks on which metrics to compute
(see :meth:`MetricSuite.compute`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchmetrics.aggregation import SumMetric

from facexai.metrics import DeclaredMetric, metric_class
from facexai.metrics.functional import target_score_fn
from facexai.metrics.functional.perturbation import DEFAULT_CHUNK_SIZE
from facexai.pipeline.inputs import ExplanationInputs
from facexai.pipeline.producers import CURVE_MODES, PAIR_PRODUCERS, VIEW_PRODUCERS, PairSource, ViewSource
from facexai.pipeline.specs import build_metric
from facexai.pipeline.views import POS_VIEW, View, ViewSpec, invalid_maps, warn_invalid_maps


@dataclass(frozen=True)
class Entry:
    """How a metric of the suite was built: explainer label, metric name, view (None: pair-level)."""

    label: str
    name: str
    spec: ViewSpec | None


class MetricSuite:
    """All metric objects of one callback or one ``evaluate`` row.

    Args:
        specs: metric name -> options, from :func:`~facexai.pipeline.specs.parse_metric_specs`.
        mean: per-channel normalisation mean (ROAD imputes in pixel space).
        std: per-channel normalisation std.
        owner: who runs the suite, named in warnings ("ExplanationCallback", "evaluate").
        chunk_size: images per forward pass when scoring perturbed images.
    """

    def __init__(
        self,
        specs: dict[str, dict[str, Any]],
        mean: Sequence[float],
        std: Sequence[float],
        owner: str = "ExplanationCallback",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.specs, self.owner, self.chunk_size = specs, owner, chunk_size
        self.mean, self.std = list(mean), list(std)
        self.metrics: dict[str, DeclaredMetric] = {}
        #: key -> how it was built, so other ranks can build it too
        self.entries: dict[str, Entry] = {}
        self.samples = SumMetric()

    def names(self, inputs: str) -> list[str]:
        """Configured metric names whose class declares ``inputs`` (a :mod:`facexai.metrics.inputs` kind)."""
        return [name for name in self.specs if metric_class(name).inputs == inputs]

    @staticmethod
    def key(label: str, name: str, spec: ViewSpec | None) -> str:
        """``"<label>/<name>[_<suffix>]"``; no ``"<label>/"`` for an empty label."""
        column = f"{name}_{spec.suffix}" if spec is not None and spec.suffix else name
        return f"{label}/{column}" if label else column

    def metric(self, label: str, name: str, spec: ViewSpec | None, device: torch.device) -> DeclaredMetric:
        """The metric for (explainer ``label``, ``name``, view ``spec``), created on first use."""
        key = self.key(label, name, spec)
        if key not in self.metrics:
            self._store(key, Entry(label, name, spec), build_metric(name, self.specs[name], spec).to(device))
        return self.metrics[key]

    def _store(self, key: str, entry: Entry, metric: DeclaredMetric) -> None:
        self.metrics[key], self.entries[key] = metric, entry

    def count(self, n: int, device: torch.device) -> None:
        """Record ``n`` explained samples (images, or pairs)."""
        self.samples = self.samples.to(device)
        self.samples.update(torch.tensor(float(n), device=device))

    def update(self, label: str, views: Sequence[View], inputs: ExplanationInputs, model: nn.Module) -> None:
        """Feed every configured metric the views of one batch (runs the perturbation scoring).

        Maps with NaN or Inf values are left out, with a warning naming the explainer and the
        samples; the finite ones are scored.
        """
        for view in views:
            finite = ~invalid_maps(view.maps)
            if not bool(finite.all()):
                warn_invalid_maps(self.owner, label, view, inputs.pairs)
            if bool(finite.any()):
                self._update_view(label, view, inputs, model, torch.nonzero(finite).flatten())
        positive = next((view for view in views if view.spec == POS_VIEW), None)
        if positive is not None and inputs.issame is not None:
            self._update_pairs(label, positive.maps, inputs, model)

    def _update_view(self, label: str, view: View, inputs: ExplanationInputs, model: nn.Module, keep: Tensor) -> None:
        whole = len(keep) == len(view.maps)
        target = view.target if whole else view.target.select(keep)
        masks = inputs.masks if inputs.masks is None or whole else inputs.masks[keep]
        source = ViewSource(
            inputs.images if whole else inputs.images[keep],
            view.maps if whole else view.maps[keep],
            target_score_fn(model, target, softmax=view.spec.softmax),
            masks,
            self.mean,
            self.std,
            self.chunk_size,
        )
        metrics = self._candidates(label, view.spec, VIEW_PRODUCERS, inputs.images.device)
        source.plan(metric for _, _, metric in metrics)
        for key, entry, metric in metrics:
            args = VIEW_PRODUCERS[metric.inputs](source, metric)
            if args is not None:  # a fresh metric that gets nothing is not kept
                self._store(key, entry, metric)
                metric.update(*args)

    def _update_pairs(self, label: str, pos_maps: Tensor, inputs: ExplanationInputs, model: nn.Module) -> None:
        """Feed the pair-level metrics: probes A explained against B (their e+ maps), finite maps only."""
        n = len(inputs.images) // 2
        keep = torch.nonzero(~invalid_maps(pos_maps[:n])).flatten()
        if inputs.issame is None or not len(keep):
            return
        probes, partners = inputs.images[:n][keep], inputs.images[n:][keep]
        source = PairSource(model, probes, partners, pos_maps[:n][keep], inputs.issame[keep], self.chunk_size)
        metrics = self._candidates(label, None, PAIR_PRODUCERS, inputs.images.device)
        source.plan(metric for _, _, metric in metrics)
        for key, entry, metric in metrics:
            args = PAIR_PRODUCERS[metric.inputs](source, metric)
            if args is not None:
                self._store(key, entry, metric)
                metric.update(*args)

    def _candidates(
        self, label: str, spec: ViewSpec | None, producers: Mapping[str, Any], device: torch.device
    ) -> list[tuple[str, Entry, DeclaredMetric]]:
        """Every configured metric fed by ``producers``: the stored one, or a fresh one not yet stored."""
        out = []
        for name in self.specs:
            if metric_class(name).inputs in producers:
                key = self.key(label, name, spec)
                metric = self.metrics.get(key) or build_metric(name, self.specs[name], spec).to(device)
                out.append((key, Entry(label, name, spec), metric))
        return out

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
                entry, metric = self.entries[key], self.metrics[key]
                mean_curve = getattr(metric, "mean_curve", None)  # curve kinds keep their mean curve
                if entry.spec is not None and metric.inputs in CURVE_MODES and callable(mean_curve):
                    lines = out.setdefault(entry.label, {}).setdefault(CURVE_MODES[metric.inputs], {})
                    lines[entry.spec.label] = mean_curve()
        return out

    def _agreed_keys(self) -> tuple[list[str], bool]:
        """Keys of the metrics updated on any rank, in one order on every rank, and whether any rank counted samples.

        Under DDP one ``all_gather_object`` of the locally updated keys (with how to build
        them); a metric another rank created is built here, empty, so this rank can take part
        in its gather. Every per-view metric keeps fixed-shape "sum" states, so an empty one
        contributes zeros. Outside DDP: the local keys, nothing is communicated.
        """
        local = [(key, self.entries[key]) for key, metric in self.metrics.items() if metric.update_called]
        counted = bool(self.samples.update_called)
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return [key for key, _ in local], counted
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (local, counted))
        entries: dict[str, Entry] = {}
        for rank_local, _ in gathered:  # rank order: the same dict on every rank
            for key, entry in rank_local:
                entries.setdefault(key, entry)
        for key, entry in entries.items():
            if key not in self.metrics:
                metric = build_metric(entry.name, self.specs[entry.name], entry.spec)
                self._store(key, entry, metric.to(self.samples.device))
        return list(entries), any(rank_counted for _, rank_counted in gathered)

    def settings(self) -> dict[str, str]:
        """Metric key -> its ``log_name`` carrying the settings (steps, baseline, score)."""
        return {key: getattr(metric, "log_name", key) for key, metric in self.metrics.items()}

    def directions(self) -> dict[str, bool | None]:
        """Metric key -> whether higher is better."""
        return {key: metric.higher_is_better for key, metric in self.metrics.items()}

    def reset(self) -> None:
        """Clear every state (at the end of each validation epoch)."""
        for metric in self.metrics.values():
            metric.reset()
        self.samples.reset()


@contextmanager
def _empty_rank_compute() -> Iterator[None]:
    """Silence torchmetrics' "compute before update" warning on a rank that saw no batch of a metric.

    Computing is right there: the gather brings the other ranks' states.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The ``compute`` method of metric", category=UserWarning)
        yield
