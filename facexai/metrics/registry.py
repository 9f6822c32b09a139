"""Metric names for YAML configs: ``create_metric("deletion_auc", steps=20)``."""

from __future__ import annotations

from typing import Any

from torchmetrics import Metric

from facexai.registry import Registry
from facexai.metrics.faithfulness import (
    AverageDrop,
    AverageDropInDeletion,
    DeletionAUC,
    IncreaseInConfidence,
    InsertionAUC,
    ROADLeRF,
    ROADMoRF,
)
from facexai.metrics.localisation import (
    Complexity,
    EnergyPointingGame,
    PointingGame,
    RandomisationSanity,
    Sparsity,
)
from facexai.metrics.pairs import VerificationDeletionAUC, VerificationInsertionAUC
from facexai.metrics.verification import PairVerificationMetrics

METRICS: Registry[Metric] = Registry("metric")
for _name, _cls in {
    "deletion_auc": DeletionAUC,
    "insertion_auc": InsertionAUC,
    "average_drop": AverageDrop,
    "increase_in_confidence": IncreaseInConfidence,
    "average_drop_in_deletion": AverageDropInDeletion,
    "pointing_game": PointingGame,
    "energy_pointing_game": EnergyPointingGame,
    "sparsity": Sparsity,
    "complexity": Complexity,
    "randomisation_sanity": RandomisationSanity,
    "road_morf": ROADMoRF,
    "road_lerf": ROADLeRF,
    "verification_deletion_auc": VerificationDeletionAUC,
    "verification_insertion_auc": VerificationInsertionAUC,
    "pair_verification": PairVerificationMetrics,
}.items():
    METRICS.register(_name)(_cls)


def available_metrics() -> list[str]:
    """Sorted names accepted by :func:`create_metric`."""
    return METRICS.names()


def metric_class(name: str) -> type[Metric]:
    """The class registered as ``name``; ``ValueError`` listing the valid names if unknown."""
    return METRICS.get(name)


def create_metric(name: str, **kwargs: Any) -> Metric:
    """Build the metric registered as ``name`` (case-insensitive) with keyword options.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or a bad option value.
    """
    return metric_class(name)(**kwargs)
