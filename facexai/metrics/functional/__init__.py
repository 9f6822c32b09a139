"""Function twins of the metric classes, plus the model-dependent perturbation steps.

Model-dependent (take a ``score_fn`` or ``embed_fn``, return plain tensors):
:func:`perturbation_curves`, :func:`deletion_insertion_curves`, :func:`masked_scores`,
:func:`verification_perturbation_curves`, :func:`verification_deletion_insertion_curves`,
:func:`road_curves`. Everything else maps tensors to
tensors and shares its private ``_update`` / ``_compute`` helpers with the class of the same name.
"""

from facexai.metrics.functional.confidence import (
    FORMS,
    average_drop,
    average_drop_in_deletion,
    increase_in_confidence,
    masked_scores,
)
from facexai.metrics.functional.localisation import energy_pointing_game, pointing_game
from facexai.metrics.functional.map_complexity import (
    complexity,
    gini_index,
    map_entropy,
    sparsity,
)
from facexai.metrics.functional.pairs import (
    pair_cosine,
    split_pairs,
    verification_accuracy_curve,
    verification_deletion_auc,
    verification_deletion_insertion_curves,
    verification_insertion_auc,
    verification_perturbation_curves,
)
from facexai.metrics.functional.perturbation import (
    BASELINES,
    DEFAULT_BASELINES,
    curve_auc,
    deletion_auc,
    deletion_insertion_curves,
    gaussian_blur,
    insertion_auc,
    make_baseline,
    perturbation_curves,
    pixel_ranks,
)
from facexai.metrics.functional.road import (
    linear_imputation,
    noisy_linear_imputation,
    road_curves,
    road_score,
)
from facexai.metrics.functional.sanity import randomisation_sanity, spearman
from facexai.metrics.functional.scoring import similarity_score_fn, target_score_fn
from facexai.metrics.verification import equal_error_rate, verification_metrics

__all__ = [
    "BASELINES",
    "DEFAULT_BASELINES",
    "FORMS",
    "average_drop",
    "average_drop_in_deletion",
    "complexity",
    "curve_auc",
    "deletion_auc",
    "deletion_insertion_curves",
    "energy_pointing_game",
    "equal_error_rate",
    "gaussian_blur",
    "gini_index",
    "increase_in_confidence",
    "insertion_auc",
    "linear_imputation",
    "make_baseline",
    "map_entropy",
    "masked_scores",
    "noisy_linear_imputation",
    "pair_cosine",
    "perturbation_curves",
    "pixel_ranks",
    "pointing_game",
    "randomisation_sanity",
    "road_curves",
    "road_score",
    "similarity_score_fn",
    "sparsity",
    "spearman",
    "split_pairs",
    "target_score_fn",
    "verification_accuracy_curve",
    "verification_deletion_auc",
    "verification_deletion_insertion_curves",
    "verification_insertion_auc",
    "verification_metrics",
    "verification_perturbation_curves",
]
