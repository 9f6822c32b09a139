"""What an evaluation depends on, and what one row of its report holds.

The metrics default to the paper tables' per-view metrics plus the verification-accuracy AUCs;
``steps`` sets the deletion/insertion steps and ``verification_steps`` those of the
dataset-level verification protocol. A Python caller may give any metric the pipeline can feed
(``metrics``, as the callback takes them), e.g. to compare with a training run's logs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from facexai.metrics import metric_class
from facexai.pipeline import parse_metric_specs

#: who the pipeline names in its messages
OWNER = "evaluate"
#: rows that are not explainers; explainer labels may not take these names
RANDOM_ROW = "random"
INVERTED_PREFIX = "inverted"
#: the metrics of a report unless ``metrics`` names others
DEFAULT_METRICS = (
    "deletion_auc",
    "insertion_auc",
    "average_drop",
    "increase_in_confidence",
    "average_drop_in_deletion",
    "pointing_game",
    "energy_pointing_game",
    "sparsity",
    "verification_deletion_auc",
    "verification_insertion_auc",
)


@dataclass
class EvaluationSettings:
    """What every number depends on; written into the report.

    Attributes:
        steps: deletion/insertion steps (``steps + 1`` points per curve) of the default metrics.
        verification_steps: steps of the verification-accuracy protocol (10: P = 0, 10, .., 100 %).
        batch_size: samples (images, or pairs) per explainer call.
        max_samples: samples taken from the first validation loader.
        seed: seed of the random-map baseline.
        device: where the model, explainers and metrics run.
        chunk_size: images per forward pass when scoring perturbed images.
        metrics: metric name -> options; ``None`` fills in :data:`DEFAULT_METRICS` with the
            steps above. Checked when the settings are made.
        mean: per-channel normalisation mean of the images (ROAD imputes in pixel space).
        std: per-channel normalisation std.
    """

    steps: int = 50
    verification_steps: int = 10
    batch_size: int = 16
    max_samples: int = 64
    seed: int = 0
    device: str = "cpu"
    chunk_size: int = 128
    metrics: dict[str, dict[str, Any]] | None = None
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = default_metric_specs(self.steps, self.verification_steps)
        self.metrics = parse_metric_specs(self.metrics, OWNER, dataset_level=True)

    def metric_specs(self) -> dict[str, dict[str, Any]]:
        """Metric name -> options, as checked by :func:`~facexai.pipeline.parse_metric_specs`."""
        return dict(self.metrics or {})


def default_metric_specs(steps: int, verification_steps: int) -> dict[str, dict[str, Any]]:
    """:data:`DEFAULT_METRICS` with their steps: ``verification_steps`` for dataset-level ones.

    >>> default_metric_specs(4, 2)["verification_deletion_auc"]
    {'steps': 2}
    """
    specs: dict[str, dict[str, Any]] = {}
    for name in DEFAULT_METRICS:
        cls = metric_class(name)
        takes_steps = "steps" in inspect.signature(cls.__init__).parameters
        specs[name] = {"steps": verification_steps if cls.dataset_level else steps} if takes_steps else {}
    return specs


@dataclass
class EvaluationResult:
    """One row of the report: a method (or a reference map) and its metric values.

    Attributes:
        name: row label ("gradcam", "random", "inverted gradcam").
        kind: "explainer" or "reference".
        values: column key (``<metric>[_pos|_neg]``) -> value.
        settings: column key -> the metric's ``log_name`` (carries steps, baseline, score).
        higher_is_better: column key -> direction of the metric.
        curves: ``{"deletion"|"insertion": {view label: mean curve (steps + 1,)}}``.
        seconds_per_map: mean wall time of the explainer per map; None for reference rows.
        maps: number of maps scored.
        examples: ``{view suffix: maps}`` of the first chunk, on the CPU, for the report's gallery.
    """

    name: str
    kind: str
    values: dict[str, float] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    curves: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    seconds_per_map: float | None = None
    maps: int = 0
    examples: dict[str, Tensor] = field(default_factory=dict)
