"""The private family base of CAM methods: L = ReLU(sum_k w_k A_k) with method-specific w_k."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from facexai.explain.base import Explainer
from facexai.explain.layers import as_leaf, capture_output, last_feature_layer
from facexai.explain.targets import Target


@dataclass(frozen=True)
class CAMInputs:
    """What a CAM method may weigh its channels by: one pass's activations (and gradients).

    Attributes:
        model: the explained network (Score-CAM runs it again on masked images).
        images: the input batch (N, 3, H, W).
        target: the explained score per sample.
        activations: A (N, C, h, w) at the CAM layer, detached, float32.
        gradients: dS/dA (N, C, h, w), float32, for methods that need them (else ``None``).
    """

    model: nn.Module
    images: Tensor
    target: Target
    activations: Tensor
    gradients: Tensor | None

    def require_gradients(self) -> Tensor:
        """The gradients dS/dA; an error if the method's ``needs_gradients`` left them out."""
        if self.gradients is None:
            raise ValueError("these channel weights need dS/dA: the method must set needs_gradients = True")
        return self.gradients


class CAMExplainer(Explainer):
    """Class-activation-map family: a subclass only chooses the channel weights.

    Args:
        target_layer: dotted module name whose output A (N, C, h, w) is weighted; ``None`` picks
            the last layer with a 4-D output (see :func:`last_feature_layer`).
    """

    #: whether :meth:`channel_weights` needs dS/dA (Score-CAM does not)
    needs_gradients: bool = True

    def __init__(self, target_layer: str | None = None) -> None:
        if target_layer is not None and not isinstance(target_layer, str):
            raise TypeError(f"target_layer must be a module name (str) or None, got {target_layer!r}")
        self.target_layer = target_layer

    def layer_name(self, model: nn.Module, images: Tensor) -> str:
        """The configured target layer, or the model's last feature layer."""
        return self.target_layer or last_feature_layer(model, images)

    def explain(self, model: nn.Module, images: Tensor, target: Target) -> Tensor:
        """Raw maps sum_k w_k A_k (N, h, w) from one forward pass (and one backward if needed)."""
        output, activations = self.forward_with_activations(model, images)
        scores = target(output)
        gradients = None
        if self.needs_gradients:
            (gradients,) = torch.autograd.grad(scores.sum(), activations)
            gradients = gradients.float()
        # float32 arithmetic also for bf16/fp16 models (Grad-CAM++ cubes the gradients)
        activations = activations.detach().float()
        weights = self.channel_weights(CAMInputs(model, images, target, activations, gradients))
        return torch.einsum("nc,nchw->nhw", weights, activations)

    def forward_with_activations(self, model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
        """One forward pass returning the model output and the target layer's output as a leaf."""
        with capture_output(model, self.layer_name(model, images), replace=as_leaf) as store:
            output = model(images)
        return output, store[-1]

    def channel_weights(self, inputs: CAMInputs) -> Tensor:
        """Weights w (N, C) of the activation channels. Override this one method."""
        raise NotImplementedError
