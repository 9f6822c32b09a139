"""What a metric's ``update`` consumes, declared on the metric class itself.

A pipeline that explains samples and scores the maps (``facexai.pipeline``, used by the
callback and by ``evaluate``) has one producer per input kind below and feeds any metric by
the kind its class declares, so adding a metric needs no table anywhere: one class (with
``inputs``) plus its functional twin. A metric that no explanation pipeline can feed says why in
``refusal``; one whose value needs every pair of a dataset at once says so with
``dataset_level``. See ``docs/metrics.md``.
"""

from __future__ import annotations

from typing import ClassVar

from torchmetrics import Metric

#: ``update(curves)``: deletion curves (N, steps + 1); reads the metric's ``steps`` and ``baseline``
DELETION_CURVES = "deletion_curves"
#: ``update(curves)``: insertion curves (N, steps + 1); reads ``steps`` and ``baseline``
INSERTION_CURVES = "insertion_curves"
#: ``update(scores, masked_scores)``: clean scores Y and map-kept scores O = s(x * E), (N,) each
KEPT_SCORES = "clean_and_kept_scores"
#: ``update(scores, deleted_scores)``: clean scores Y and map-deleted scores D = s(x * (1 - E))
DELETED_SCORES = "clean_and_deleted_scores"
#: ``update(maps)``: the maps (N, H, W)
MAPS = "maps"
#: ``update(maps, masks)``: maps and ground-truth masks (N, H, W); skipped on batches without masks
MAPS_AND_MASKS = "maps_and_masks"
#: ``update(curves)``: ROAD scores (N, P); reads ``percentages``, ``noise_std`` and ``order``
ROAD_CURVES = "road_curves"
#: ``update(curves, issame)``: pair similarities under perturbation of the probe's e+ map
#: (M, steps + 1) and genuine/impostor labels (M,); reads ``steps``, ``baseline`` and ``mode``
PAIR_CURVES = "pair_curves_and_issame"
#: ``update(maps, randomised_maps)``: maps of the trained and of a re-initialised model
RANDOMISED_MAPS = "maps_and_randomised_maps"
#: ``update(scores, issame[, index])``: clean pair similarities and labels (the model, not a map)
PAIR_SCORES = "pair_scores_and_issame"

INPUT_KINDS = (
    DELETION_CURVES,
    INSERTION_CURVES,
    KEPT_SCORES,
    DELETED_SCORES,
    MAPS,
    MAPS_AND_MASKS,
    ROAD_CURVES,
    PAIR_CURVES,
    RANDOMISED_MAPS,
    PAIR_SCORES,
)


class DeclaredMetric(Metric):
    """A torchmetrics ``Metric`` that says what its ``update`` consumes.

    Attributes:
        key: the registry name, set by :func:`~facexai.metrics.registry.register_metric`.
        inputs: one of :data:`INPUT_KINDS`.
        refusal: why no explanation pipeline can feed the metric ("" when one can).
        dataset_level: the value needs every pair of a dataset at once (a threshold over all
            pairs): ``evaluate`` feeds it, the callback, which explains a few samples per
            epoch, refuses it.
    """

    key: ClassVar[str] = ""
    inputs: ClassVar[str] = ""
    refusal: ClassVar[str] = ""
    dataset_level: ClassVar[bool] = False
