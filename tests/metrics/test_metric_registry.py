"""Every registered metric follows the torchmetrics conventions of docs/metrics.md (Conventions)."""

from __future__ import annotations

import pytest
from torchmetrics import Metric

import facexai.metrics as fm
from facexai.metrics import available_metrics, create_metric

EXPECTED = {
    "average_drop": fm.AverageDrop,
    "average_drop_in_deletion": fm.AverageDropInDeletion,
    "complexity": fm.Complexity,
    "deletion_auc": fm.DeletionAUC,
    "energy_pointing_game": fm.EnergyPointingGame,
    "increase_in_confidence": fm.IncreaseInConfidence,
    "insertion_auc": fm.InsertionAUC,
    "pair_verification": fm.PairVerificationMetrics,
    "pointing_game": fm.PointingGame,
    "randomisation_sanity": fm.RandomisationSanity,
    "road_lerf": fm.ROADLeRF,
    "road_morf": fm.ROADMoRF,
    "sparsity": fm.Sparsity,
    "verification_deletion_auc": fm.VerificationDeletionAUC,
    "verification_insertion_auc": fm.VerificationInsertionAUC,
}

LOWER = {
    "average_drop",
    "complexity",
    "deletion_auc",
    "randomisation_sanity",
    "road_morf",
    "verification_deletion_auc",
}
HIGHER_IS_BETTER = {name: name not in LOWER for name in EXPECTED} | {"pair_verification": None}


def test_names_map_to_classes() -> None:
    assert available_metrics() == sorted(EXPECTED)
    for name, cls in EXPECTED.items():
        assert type(create_metric(name)) is cls
    assert create_metric("Deletion_AUC", steps=20).steps == 20


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown metric 'deletion'.*deletion_auc, energy_pointing_game"):
        create_metric("deletion")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_metric_conventions(name: str) -> None:
    metric = create_metric(name)
    cls = type(metric)
    assert isinstance(metric, Metric)
    assert cls.full_state_update is False
    assert cls.is_differentiable is False
    assert cls.higher_is_better is HIGHER_IS_BETTER[name]
    assert cls.reset is Metric.reset  # never overridden
    assert isinstance(metric.settings, dict)
    assert metric.log_name.startswith(name)
    assert "=" not in metric.log_name
    assert metric._reductions  # states registered with add_state
