"""The LRP rules of FG-CAM's relevance pass, each written as a module output with a modified gradient.

Relevance is carried as ``R_t = t * g_t`` (see :mod:`facexai.explain._lrp`). A rule
"R_in = x * J^T (R_out / z)", z being the rule's bias-free contributions, is a tensor with the
module output's value whose gradient flows into z scaled by ``output / z`` (:func:`ratio_output`).
The rules here choose z: the signed z+ rule for hidden convolutions and linear layers, the z^B rule
for the layer that reads the image (Montavon et al., "Layer-Wise Relevance Propagation: An
Overview", 2019; signed inputs as in FG-CAM, arXiv 2303.09171).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

#: forwards that compute exactly F.conv*/F.linear(x, weight) + bias (see :func:`_is_plain`)
_PLAIN_FORWARDS = (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward, nn.Linear.forward)
#: z+ of signed inputs below this fraction of layer(|x|, |W|) counts as zero (float resolution)
ZPLUS_RESOLUTION = 1e-5


def safe_divide(numerator: Tensor, denominator: Tensor, max_ratio: float = 1e20) -> Tensor:
    """``numerator / denominator`` with 0 where the denominator is 0 (LRP's 0/0 := 0).

    Also 0 where the ratio exceeds ``max_ratio`` in magnitude: an output made of (nearly)
    nothing but bias has no input contributions to share it, and such ratios would only
    overflow in the backward pass (inf * 0 = NaN). The rules only divide detached tensors.
    """
    ratio = numerator / denominator
    return torch.where(ratio.abs() <= max_ratio, ratio, 0.0)  # False for inf and NaN too


class _Rescaled(torch.autograd.Function):
    """Forward: a copy of ``value``. Backward: gradient times ``scale``, to ``contributions``."""

    @staticmethod
    def forward(ctx: Any, contributions: Tensor, value: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale, None, None


def ratio_output(output: Tensor, contributions: Tensor, denominator: Tensor | None = None) -> Tensor:
    """``output``'s value with the gradient of ``contributions`` scaled by output / contributions.

    With ``R_out = output * g_out`` the relevance reaching an input x is
    ``x * J_z^T (R_out / z)``, the LRP ratio rule for the contributions z (0/0 := 0).
    ``denominator`` replaces z's value in the ratio (a stabilised z); the gradient still
    follows ``contributions``.
    """
    denominator = contributions if denominator is None else denominator
    scale = safe_divide(output.detach(), denominator.detach())
    return _Rescaled.apply(contributions, output.detach(), scale)


def _apply(module: nn.Module, weight: Tensor, inputs: Tensor) -> Tensor:
    """The module's own forward with ``weight`` and a zero bias (biases are excluded)."""
    params = {"weight": weight}
    bias = getattr(module, "bias", None)
    if isinstance(bias, Tensor):
        params["bias"] = torch.zeros_like(bias)
    return torch.func.functional_call(module, params, (inputs,))


def split_weight(module: nn.Module, part: str, parts: WeightParts | None = None) -> Tensor:
    """W+ (``"+"``), W- (``"-"``) or |W| (``"abs"``) of the module's weight, detached.

    ``parts`` remembers them for the duration of one explainer call (the
    :class:`~facexai.explain._lrp.RelevanceTape` owns it): a module that runs its rule more than
    once in a pass derives each part once, and nothing outlives the call. A model-lifetime cache
    held |W| copies of every convolution (about 170 MB for IResNet-50) and went stale whenever
    the weights were written without bumping their version counter (``p.data.copy_()``, as EMA
    callbacks and loaders do).
    While tracing (ONNX export, compile) the part is always derived in the graph.
    """
    weight = detached_weight(module)
    derive = _WEIGHT_PARTS[part]
    if parts is None or not is_concrete(weight):
        return derive(weight)
    key = (module, part)
    if key not in parts:
        parts[key] = derive(weight)
    return parts[key]


_WEIGHT_PARTS: dict[str, Callable[[Tensor], Tensor]] = {
    "+": lambda w: w.clamp(min=0),
    "-": lambda w: w.clamp(max=0),
    "abs": torch.abs,
}
#: (module, part) -> derived weight, for one call only (see :func:`split_weight`)
WeightParts = dict[tuple[nn.Module, str], Tensor]


def detached_weight(module: nn.Module) -> Tensor:
    """The ``weight`` of a convolution or linear layer, detached (the rules never train it)."""
    weight = module.weight
    if not isinstance(weight, Tensor):
        raise TypeError(f"{type(module).__name__}.weight is not a tensor; the z+ rules need one")
    return weight.detach()


def _is_plain(module: nn.Module) -> bool:
    """Whether the module's output is exactly F.conv/F.linear(x, weight) + bias.

    Then the bias-free product of x and W is the output minus the bias, already computed by
    the forward pass (and differentiable through it), instead of a second convolution.
    """
    return type(module).forward in _PLAIN_FORWARDS


def _without_bias(module: nn.Module, output: Tensor) -> Tensor:
    """layer(x, W) with a zero bias, read off the layer's own output."""
    bias = getattr(module, "bias", None)
    if bias is None:
        return output
    if isinstance(module, nn.Linear):
        return output - bias.detach()
    return output - bias.detach().view((-1,) + (1,) * (output.dim() - 2))


def signed_zplus(module: nn.Module, inputs: Tensor, output: Tensor, parts: WeightParts | None = None) -> Tensor:
    """z+ rule generalised to signed inputs (FG-CAM): z = layer(x+, W+) + layer(x-, W-).

    Inputs after a ReLU (all >= 0) need only z = layer(x, W+); others go through
    :func:`signed_zplus_any`.
    """
    if bool(inputs.min() >= 0):  # after a ReLU: x+ = x, x- = 0
        return ratio_output(output, _apply(module, split_weight(module, "+", parts), inputs))
    return signed_zplus_any(module, inputs, output, parts)


def signed_zplus_any(module: nn.Module, inputs: Tensor, output: Tensor, parts: WeightParts | None = None) -> Tensor:
    """The signed z+ rule for inputs of any sign, without branching on their values.

    For a plain convolution or linear layer (a convolution after BatchNorm, as in the IResNets)
    the two products are computed as z = (layer(x, W) + layer(|x|, |W|)) / 2, with layer(x, W)
    taken from the forward pass: one extra convolution instead of two, and the backward pass
    goes through layer(x, W) and layer(|x|, |W|), whose gradients W^T s and sign(x) |W|^T s
    combine to W+^T s on x+ and W-^T s on x-, the rule's. z >= 0 is then a difference of two
    sums, exact only up to float rounding of layer(|x|, |W|), so z below
    ``ZPLUS_RESOLUTION`` times it counts as zero (no positive contribution to share the
    output; the LRP-epsilon idea). Other layers compute both products.

    Also the form the ONNX export traces (value branches cannot be traced symbolically).
    """
    if not _is_plain(module):
        contributions = _apply(module, split_weight(module, "+", parts), inputs.clamp(min=0))
        negative = _apply(module, split_weight(module, "-", parts), inputs.clamp(max=0))
        contributions = contributions + negative
        return ratio_output(output, contributions)
    magnitude = _apply(module, split_weight(module, "abs", parts), inputs.abs())
    contributions = 0.5 * (_without_bias(module, output) + magnitude)
    resolved = contributions.detach() > ZPLUS_RESOLUTION * magnitude.detach()
    return ratio_output(output, contributions, torch.where(resolved, contributions, 0.0))


#: the signature of :func:`signed_zplus` and :func:`signed_zplus_any`: which one a relevance pass
#: uses is the caller's choice (the ONNX export traces the branch-free one)
ZPlusRule = Callable[[nn.Module, Tensor, Tensor, "WeightParts | None"], Tensor]


def zbox(
    module: nn.Module,
    inputs: Tensor,
    output: Tensor,
    bounds: list[tuple[Tensor, Tensor]],
    parts: WeightParts | None = None,
) -> Tensor:
    """z^B rule for the layer that reads the image: z = layer(x, W) - layer(B, W+) - layer(H, W-).

    B and H are the per-sample minimum and maximum of the normalised input (global scalars, as
    in the FG-CAM reference code), held as leaves in ``bounds`` so that the input relevance
    ``x * g_x + B * g_B + H * g_H`` (Euler's theorem for z, linear in x, B and H) can be read off
    their gradients.
    """
    flat = inputs.detach().flatten(1)
    shape = (-1,) + (1,) * (inputs.dim() - 1)
    low = flat.amin(dim=1).view(shape).expand_as(inputs).clone().requires_grad_(True)
    high = flat.amax(dim=1).view(shape).expand_as(inputs).clone().requires_grad_(True)
    weight = detached_weight(module)
    plain = _without_bias(module, output) if _is_plain(module) else _apply(module, weight, inputs)
    contributions = (
        plain
        - _apply(module, split_weight(module, "+", parts), low)
        - _apply(module, split_weight(module, "-", parts), high)
    )
    bounds.append((low, high))
    return ratio_output(output, contributions)


def is_concrete(tensor: Tensor) -> bool:
    """False while tracing (ONNX export, compile): the check below reads values into Python."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    try:
        tensor.data_ptr()
    except RuntimeError:  # a fake tensor
        return False
    return True
