"""Grad-CAM (Selvaraju et al., ICCV 2017, arXiv 1610.02391)."""

from __future__ import annotations

from torch import Tensor

from facexai.explain._cam import CAMExplainer, CAMInputs
from facexai.explain.registry_instance import register_explainer


@register_explainer("gradcam")
class GradCAM(CAMExplainer):
    """Channel weights are the spatially averaged gradients of the score: w_k = mean_ij dS/dA_k."""

    not_exportable = None

    def channel_weights(self, inputs: CAMInputs) -> Tensor:
        """The spatial means of dS/dA (N, C)."""
        return inputs.require_gradients().mean(dim=(2, 3))
