"""Grad-CAM (Selvaraju et al., ICCV 2017, arXiv 1610.02391)."""

from __future__ import annotations

from torch import Tensor, nn

from facexai.explain._cam import CAMExplainer
from facexai.explain.registry_instance import register_explainer
from facexai.explain.targets import Target


@register_explainer("gradcam")
class GradCAM(CAMExplainer):
    """Channel weights are the spatially averaged gradients of the score: w_k = mean_ij dS/dA_k."""

    not_exportable = None

    def channel_weights(
        self,
        model: nn.Module,
        images: Tensor,
        target: Target,
        activations: Tensor,
        gradients: Tensor | None,
    ) -> Tensor:
        return gradients.mean(dim=(2, 3))
