"""Grad-CAM++ (Chattopadhay, Sarkar, Howlader & Balasubramanian, WACV 2018, arXiv 1710.11063)."""

from __future__ import annotations

import torch
from torch import Tensor

from facexai.explain._cam import CAMExplainer, CAMInputs
from facexai.explain.registry_instance import register_explainer


@register_explainer("gradcam++")
class GradCAMPlusPlus(CAMExplainer):
    """Grad-CAM++: pixel-weighted positive gradients, w_k = sum_ij alpha_kij ReLU(dS/dA_kij).

    The closed-form alpha of the paper (its Eq. 19) assumes the explained quantity is
    Y = exp(S), so that every higher derivative of Y is a power of the first derivative g of S:

        alpha_kij = g_kij^2 / (2 g_kij^2 + sum_ab A_kab g_kij^3)     (0 where the denominator is 0)

    The paper's weights carry the factor exp(S) > 0 from dY/dA = exp(S) g; it is one positive
    constant per sample, so after the per-map min-max it does not change the map and is left out
    (as the reference implementations do).

    Args:
        target_layer: dotted module name of the CAM layer; ``None`` picks the last feature layer.
    """

    not_exportable = None

    def channel_weights(self, inputs: CAMInputs) -> Tensor:
        """sum_ij alpha_kij ReLU(dS/dA_kij) (N, C), alpha in closed form (see the class)."""
        gradients = inputs.require_gradients()
        g2 = gradients.pow(2)
        denominator = 2 * g2 + inputs.activations.sum(dim=(2, 3), keepdim=True) * gradients.pow(3)
        nonzero = denominator != 0
        safe = torch.where(nonzero, denominator, torch.ones_like(denominator))
        alpha = torch.where(nonzero, g2 / safe, torch.zeros_like(g2))
        return (alpha * torch.relu(gradients)).sum(dim=(2, 3))
