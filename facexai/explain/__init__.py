"""Explainers: FAME, FG-CAM, LIFT-CAM and the Grad-CAM-family and CorrRISE baselines.

Each method is described in docs/methods.md and its caveats in docs/explainers.md.

>>> import torch
>>> from torchvision.models import resnet18
>>> from facexai.explain import ClassTarget, create_explainer
>>> model, images = resnet18(num_classes=10), torch.randn(2, 3, 64, 64)
>>> explainer = create_explainer("gradcam", target_layer="layer4")
>>> maps = explainer(model, images, ClassTarget([3, 7]))  # (N, H, W) in [0, 1]
>>> tuple(maps.shape), bool(maps.min() >= 0 and maps.max() <= 1)
((2, 64, 64), True)
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
