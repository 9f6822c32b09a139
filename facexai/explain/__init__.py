"""Explainers: FAME, FG-CAM, LIFT-CAM and the Grad-CAM-family and CorrRISE baselines.

>>> from facexai.explain import create_explainer, ClassTarget
>>> explainer = create_explainer("gradcam", target_layer="layer4")
>>> maps = explainer(model, images, ClassTarget(labels))  # (N, H, W) in [0, 1]
"""

from facexai.explain.base import EmptyMapWarning, Explainer, postprocess
from facexai.explain.pairs import explain_pairs, pair_targets
from facexai.explain.registry_instance import (
    EXPLAINERS,
    available_explainers,
    create_explainer,
    exportable_explainers,
    register_explainer,
)
from facexai.explain.targets import ClassTarget, SimilarityTarget, Target

# Method modules register themselves on import; one file per method.
from facexai.explain import gradcam  # noqa: E402,F401  isort: skip
from facexai.explain import gradcam_pp  # noqa: E402,F401  isort: skip
from facexai.explain import scorecam  # noqa: E402,F401  isort: skip
from facexai.explain import liftcam  # noqa: E402,F401  isort: skip
from facexai.explain import corrrise  # noqa: E402,F401  isort: skip
from facexai.explain import fame  # noqa: E402,F401  isort: skip
from facexai.explain import fgcam  # noqa: E402,F401  isort: skip
from facexai.explain.fgcam import BatchNormMismatchWarning  # noqa: E402  isort: skip

__all__ = [
    "EXPLAINERS",
    "BatchNormMismatchWarning",
    "ClassTarget",
    "EmptyMapWarning",
    "Explainer",
    "SimilarityTarget",
    "Target",
    "available_explainers",
    "create_explainer",
    "explain_pairs",
    "exportable_explainers",
    "pair_targets",
    "postprocess",
    "register_explainer",
]
