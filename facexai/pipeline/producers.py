"""One producer per metric input kind: what a metric's ``update`` is fed, from explained maps.

A metric class declares the kind of its ``update`` arguments (``inputs``, see
:mod:`facexai.metrics.inputs`); the producer of that kind makes them. Per-view producers read a
:class:`ViewSource` (images, maps, the view's score and the batch's masks); the perturbation
passes they share are computed once per view: deletion and insertion curves of the same steps
in one batched pass, the kept and deleted scores of the confidence metrics in another (whose
clean score is the curves' first point when the view has curves, not a second forward of the
clean image). Pair producers read a :class:`PairSource` (the probes' e+ maps, both faces,
genuine/impostor labels); its deletion and insertion curves of the same steps also come from
one pass. A producer returns ``None`` when the batch lacks what it needs (e.g. masks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from facexai.metrics import inputs as kinds
from facexai.metrics.functional import (
    deletion_insertion_curves,
    masked_scores,
    perturbation_curves,
    road_curves,
    verification_deletion_insertion_curves,
    verification_perturbation_curves,
)

#: per-view curve kinds and the perturbation mode that makes them
CURVE_MODES = {kinds.DELETION_CURVES: "deletion", kinds.INSERTION_CURVES: "insertion"}
UpdateArgs = tuple[Tensor, ...] | None
#: (mode, steps, baseline) of one kind of deletion/insertion curves
CurveKey = tuple[str, int, str]


@dataclass
class ViewSource:
    """What the per-view producers read, with the shared perturbation passes cached.

    Attributes:
        images: normalised images (N, 3, H, W).
        maps: maps (N, H, W) of one view, all finite.
        score_fn: the view's indexed score ``(images, index) -> (B,)``.
        masks: ground-truth masks (N, H, W) or None.
        mean: per-channel normalisation mean (ROAD imputes in pixel space).
        std: per-channel normalisation std.
        chunk_size: images per forward pass when scoring perturbed images.
    """

    images: Tensor
    maps: Tensor
    score_fn: Callable[..., Tensor]
    masks: Tensor | None
    mean: Sequence[float]
    std: Sequence[float]
    chunk_size: int
    planned: list[CurveKey] = field(default_factory=list)
    _curves: dict[CurveKey, Tensor] = field(default_factory=dict)
    _masked: tuple[Tensor, Tensor, Tensor] | None = None

    def plan(self, metrics: Iterable[Any]) -> None:
        """Note the curves the view's metrics will ask for, so matching pairs share one pass."""
        self.planned = [(CURVE_MODES[m.inputs], m.steps, m.baseline) for m in metrics if m.inputs in CURVE_MODES]

    def curves(self, mode: str, steps: int, baseline: str) -> Tensor:
        """Deletion or insertion curves (N, steps + 1), joint with a planned partner of the same steps."""
        return _joint_or_single(
            self._curves,
            self.planned,
            (mode, steps, baseline),
            lambda: perturbation_curves(
                self.score_fn, self.images, self.maps, steps, baseline, mode, self.chunk_size, with_index=True
            ),
            lambda bases: deletion_insertion_curves(
                self.score_fn, self.images, self.maps, steps, *bases, self.chunk_size, with_index=True
            ),
        )

    def masked(self) -> tuple[Tensor, Tensor, Tensor]:
        """Clean, map-kept and map-deleted scores (N,) each, from one pass.

        With curves planned, the clean score is their clean point (deletion's first, insertion's
        last), computed anyway, so the clean images are not forwarded a second time.
        """
        if self._masked is None:
            clean = self._clean_from_curves()
            self._masked = masked_scores(
                self.score_fn, self.images, self.maps, self.chunk_size, with_index=True, clean=clean
            )
        return self._masked

    def _clean_from_curves(self) -> Tensor | None:
        """The clean scores (N,) from the first planned curves, or None when no curve is planned."""
        if not self.planned:
            return None
        mode, steps, baseline = self.planned[0]
        curves = self.curves(mode, steps, baseline)
        return curves[:, 0] if mode == "deletion" else curves[:, -1]


@dataclass
class PairSource:
    """What the pair producers read: probes A with their e+ maps, partners B, labels.

    Attributes:
        model: maps images to embeddings.
        probes: faces A (M, 3, H, W).
        partners: faces B (M, 3, H, W).
        maps: e+ maps of the probes (M, H, W), all finite.
        issame: genuine (True) or impostor pair (M,).
        chunk_size: images per forward pass.
    """

    model: nn.Module
    probes: Tensor
    partners: Tensor
    maps: Tensor
    issame: Tensor
    chunk_size: int
    planned: list[CurveKey] = field(default_factory=list)
    _curves: dict[CurveKey, Tensor] = field(default_factory=dict)

    def plan(self, metrics: Iterable[Any]) -> None:
        """Note the pair curves the metrics will ask for, so deletion and insertion share one pass."""
        self.planned = [(m.mode, m.steps, m.baseline) for m in metrics if m.inputs == kinds.PAIR_CURVES]

    def curves(self, mode: str, steps: int, baseline: str) -> Tensor:
        """Pair curves (M, steps + 1) of ``mode``, joint with a planned partner of the same steps."""
        return _joint_or_single(
            self._curves,
            self.planned,
            (mode, steps, baseline),
            lambda: verification_perturbation_curves(
                self.model, self._interleaved(), self.maps, steps, mode, baseline, self.chunk_size
            ),
            lambda bases: verification_deletion_insertion_curves(
                self.model, self._interleaved(), self.maps, steps, *bases, self.chunk_size
            ),
        )

    def _interleaved(self) -> Tensor:
        """A0, B0, A1, B1, ...: the layout the verification curve functions read."""
        return torch.stack([self.probes, self.partners], dim=1).flatten(0, 1)


def _joint_or_single(
    cache: dict[CurveKey, Tensor],
    planned: list[CurveKey],
    key: CurveKey,
    single: Callable[[], Tensor],
    joint: Callable[[tuple[str, str]], tuple[Tensor, Tensor]],
) -> Tensor:
    """Curves of ``key`` = (mode, steps, baseline) from ``cache``, else computed and cached.

    With a planned curve of the other mode and the same steps, ``joint((deletion baseline,
    insertion baseline))`` makes both in one pass and both are cached; otherwise ``single()``.
    """
    if key not in cache:
        mode, steps, baseline = key
        partner = _partner(planned, mode, steps)
        if partner is None:
            cache[key] = single()
        else:
            bases = (baseline, partner) if mode == "deletion" else (partner, baseline)
            cache.update(_joint_keys(steps, bases, joint(bases)))
    return cache[key]


def _partner(planned: list[CurveKey], mode: str, steps: int) -> str | None:
    """Baseline of a planned curve of the other mode with the same steps (one pass makes both), or None."""
    other = "insertion" if mode == "deletion" else "deletion"
    return next((b for m, s, b in planned if m == other and s == steps), None)


def _joint_keys(steps: int, bases: tuple[str, str], both: tuple[Tensor, Tensor]) -> dict[CurveKey, Tensor]:
    """Cache entries of a joint pass: (mode, steps, baseline) -> curves, deletion then insertion."""
    return {
        (mode, steps, base): curves for mode, base, curves in zip(("deletion", "insertion"), bases, both, strict=True)
    }


def _curves(source: ViewSource, metric: Any) -> UpdateArgs:
    return (source.curves(CURVE_MODES[metric.inputs], metric.steps, metric.baseline),)


def _kept(source: ViewSource, metric: Any) -> UpdateArgs:
    clean, kept, _ = source.masked()
    return clean, kept


def _deleted(source: ViewSource, metric: Any) -> UpdateArgs:
    clean, _, deleted = source.masked()
    return clean, deleted


def _maps(source: ViewSource, metric: Any) -> UpdateArgs:
    return (source.maps,)


def _maps_and_masks(source: ViewSource, metric: Any) -> UpdateArgs:
    return None if source.masks is None else (source.maps, source.masks)


def _road(source: ViewSource, metric: Any) -> UpdateArgs:
    curves = road_curves(
        source.score_fn,
        source.images,
        source.maps,
        source.mean,
        source.std,
        metric.percentages,
        order=metric.order,
        noise_std=metric.noise_std,
        chunk_size=source.chunk_size,
        with_index=True,
    )
    return (curves,)


def _pair_curves(source: PairSource, metric: Any) -> UpdateArgs:
    curves = source.curves(metric.mode, metric.steps, metric.baseline)
    return curves, source.issame.to(curves.device)


#: input kind -> producer of the ``update`` arguments of one view's metric
VIEW_PRODUCERS: dict[str, Callable[[ViewSource, Any], UpdateArgs]] = {
    kinds.DELETION_CURVES: _curves,
    kinds.INSERTION_CURVES: _curves,
    kinds.KEPT_SCORES: _kept,
    kinds.DELETED_SCORES: _deleted,
    kinds.MAPS: _maps,
    kinds.MAPS_AND_MASKS: _maps_and_masks,
    kinds.ROAD_CURVES: _road,
}
#: input kind -> producer of a pair-level metric's arguments (from the e+ maps of the probes)
PAIR_PRODUCERS: dict[str, Callable[[PairSource, Any], UpdateArgs]] = {kinds.PAIR_CURVES: _pair_curves}
