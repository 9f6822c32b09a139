"""Metrics: verification quality, faithfulness, localisation and sanity (torchmetrics style).

Every metric is a ``torchmetrics.Metric`` whose ``update`` takes tensors (curves, scores, maps),
never a model; the model-dependent steps and the function twins live in
:mod:`facexai.metrics.functional`. Build metrics by name with :func:`create_metric`.

What each ``update`` takes:

- ``DeletionAUC`` / ``InsertionAUC``: ``curves`` (N, steps + 1) from ``perturbation_curves``.
- ``AverageDrop`` / ``IncreaseInConfidence``: ``scores`` Y, ``masked_scores`` O from
  ``masked_scores``; ``AverageDropInDeletion``: ``scores`` Y, ``deleted_scores`` D.
- ``PointingGame`` / ``EnergyPointingGame``: ``maps`` (N, H, W), ``masks`` (N, H, W).
- ``Sparsity`` / ``Complexity``: ``maps``; ``RandomisationSanity``: ``maps``, ``randomised_maps``.
- ``ROADMoRF`` / ``ROADLeRF``: ``curves`` (N, P) from ``road_curves``.
- ``VerificationDeletionAUC`` / ``VerificationInsertionAUC``: pair ``curves`` (M, steps + 1) from
  ``verification_perturbation_curves``, ``issame`` (M,).
- ``PairVerificationMetrics``: pair ``scores`` (M,), ``issame`` (M,).
"""

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
from facexai.metrics.registry import available_metrics, create_metric, metric_class
from facexai.metrics.verification import (
    VERIFICATION_KEYS,
    PairVerificationMetrics,
    verification_metrics,
)

__all__ = [
    "VERIFICATION_KEYS",
    "AverageDrop",
    "AverageDropInDeletion",
    "Complexity",
    "DeletionAUC",
    "EnergyPointingGame",
    "IncreaseInConfidence",
    "InsertionAUC",
    "PairVerificationMetrics",
    "PointingGame",
    "ROADLeRF",
    "ROADMoRF",
    "RandomisationSanity",
    "Sparsity",
    "VerificationDeletionAUC",
    "VerificationInsertionAUC",
    "available_metrics",
    "create_metric",
    "metric_class",
    "verification_metrics",
]
