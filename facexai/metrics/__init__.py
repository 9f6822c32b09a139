"""Metrics: verification quality, faithfulness, localisation and sanity (torchmetrics style).

Every metric is a ``torchmetrics.Metric`` whose ``update`` takes tensors (curves, scores, maps),
never a model; the model-dependent steps and the function twins live in
:mod:`facexai.metrics.functional`. Build metrics by name with :func:`create_metric`.

Each class declares what its ``update`` takes in ``inputs`` (one of the kinds in
:mod:`facexai.metrics.inputs`: deletion or insertion curves, clean and kept or deleted scores,
maps, maps and masks, ROAD curves, pair curves and labels, ...), so the explanation pipeline
(:mod:`facexai.pipeline`) feeds any registered metric without a table. A new metric is one class
registered with :func:`register_metric` plus its functional twin; see ``docs/metrics.md``.

>>> from facexai.metrics import create_metric
>>> create_metric("insertion_auc", steps=10).settings
{'steps': 10, 'baseline': 'blur', 'score': 'probability'}
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
from facexai.metrics.inputs import DeclaredMetric
from facexai.metrics.localisation import (
    Complexity,
    EnergyPointingGame,
    PointingGame,
    RandomisationSanity,
    Sparsity,
)
from facexai.metrics.pairs import VerificationDeletionAUC, VerificationInsertionAUC
from facexai.metrics.registry import available_metrics, create_metric, metric_class, register_metric
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
    "DeclaredMetric",
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
    "register_metric",
    "verification_metrics",
]
