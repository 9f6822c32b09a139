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
_CONV_FUNCTIONS = {
    nn.Conv1d.forward: nn.functional.conv1d,
    nn.Conv2d.forward: nn.functional.conv2d,
    nn.Conv3d.forward: nn.functional.conv3d,
}
#: z+ of signed inputs below this fraction of layer(|x|, |W|) counts as zero (float resolution)
ZPLUS_RESOLUTION = 1e-5


def safe_divide(numerator: Tensor, denominator: Tensor, max_ratio: float = 1e20) -> Tensor:
    """``numerator / denominator`` with 0 where the denominator is 0 (LRP's 0/0 := 0).

    Also 0 where the ratio exceeds ``max_ratio`` in magnitude: an output made of (nearly)
    nothing but bias has no input contributions to share it, and such ratios would only
    overflow in the backward pass (inf * 0 = NaN). The rules only divide detached tensors.

    Written with a float 0/1 mask and in-place passes: boolean masks (``torch.where``,
    ``masked_fill``) ran 10-20x slower per element on the CPU and were the largest part of
    FG-CAM's element-wise cost (benchmarks/README.md). Dropped entries may come out as -0.0.
    """
    ratio = numerator / denominator
    keep = ratio.abs().le_(max_ratio)  # 1.0 where |ratio| <= max_ratio; 0.0 for inf and NaN too
    return ratio.mul_(keep).nan_to_num_(0.0, 0.0, 0.0)  # inf * 0 and NaN * 0 are NaN: zero them


class _Rescaled(torch.autograd.Function):
    """Forward: ``value``. Backward: gradient times ``scale``, to ``contributions``.

    ``value`` arrives wrapped in a tuple, so autograd does not see it as an input: a tensor
    input returned as-is becomes a view that later in-place ops (``out += identity``) may not
    modify, which cost a full copy of every rule's output. Returned this way it is a detached
    alias of the module's output, whose own graph no rule uses.
    """

    @staticmethod
    def forward(ctx: Any, contributions: Tensor, scale: Tensor, value: tuple[Tensor]) -> Tensor:
        ctx.save_for_backward(scale)
        return value[0].detach()

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
    return _Rescaled.apply(contributions, scale, (output,))


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


def _is_fusable(module: nn.Module) -> bool:
    """A plain layer whose backward :class:`_SignedPlainZPlus` can call itself.

    A convolution's backward takes numeric zero padding only, not other padding modes or
    ``padding="same"``; those keep the composition of autograd nodes.
    """
    if isinstance(module, nn.Linear):
        return True
    return getattr(module, "padding_mode", None) == "zeros" and not isinstance(module.padding, str)


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
    if _non_negative(inputs):  # after a ReLU: x+ = x, x- = 0
        return ratio_output(output, _apply(module, split_weight(module, "+", parts), inputs))
    return signed_zplus_any(module, inputs, output, parts)


def _non_negative(inputs: Tensor, head: int = 4096) -> bool:
    """Whether every input is >= 0, reading the whole tensor only when its start has no negative.

    Inputs after BatchNorm (IResNets) show a negative within their first few thousand values,
    which spares a full reduction per layer (2% of the floor on IResNet-50 at batch 16).
    """
    flat = inputs.detach().reshape(-1) if inputs.is_contiguous() else inputs.detach()[:1].reshape(-1)
    return bool(flat[:head].min() >= 0) and bool(inputs.min() >= 0)


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
    magnitude_weight = split_weight(module, "abs", parts)
    if _is_fusable(module):
        return _SignedPlainZPlus.apply(inputs, magnitude_weight, (module, output))
    magnitude = _apply(module, magnitude_weight, inputs.abs())
    contributions = 0.5 * (_without_bias(module, output) + magnitude)
    resolved = (ZPLUS_RESOLUTION * magnitude.detach()).lt_(contributions.detach())  # 1.0 / 0.0
    return ratio_output(output, contributions, contributions.detach() * resolved)


class _SignedPlainZPlus(torch.autograd.Function):
    """:func:`signed_zplus_any` of a plain convolution or linear layer as one autograd node.

    Forward: ``output``'s value; the scale ``output / (2 z)`` with 2 z = layer(x, W) +
    layer(|x|, |W|), 0 where z is unresolved (module docstring of :func:`signed_zplus_any`).
    Backward: with s = grad * scale, ``W^T s + sign(x) |W|^T s`` to x.

    The same numbers as the composition of ``ratio_output`` with autograd's abs, add and
    convolution nodes (the factor 1/2 of z moves from z into the scale, exactly, being a power
    of two), in about a third of the element-wise passes and without their temporaries: on
    IResNet-50 these passes, not the convolutions, made FG-CAM's excess over the rule's floor.
    """

    @staticmethod
    def forward(ctx: Any, inputs: Tensor, magnitude_weight: Tensor, layer: tuple[nn.Module, Tensor]) -> Tensor:
        module, output = layer
        output = output.detach()
        magnitude = _plain_forward(module, inputs.abs(), magnitude_weight)  # layer(|x|, |W|)
        threshold = magnitude * (2 * ZPLUS_RESOLUTION)
        doubled = magnitude.add_(_without_bias(module, output))  # 2 z
        resolved = threshold.lt_(doubled)  # 1.0 where z > ZPLUS_RESOLUTION * layer(|x|, |W|)
        # Unresolved entries divide by 0 (inf or NaN, zeroed below); resolved ones are bounded,
        # |output| <= layer(|x|, |W|) < z / ZPLUS_RESOLUTION, so safe_divide's range test has
        # nothing left to drop.
        scale = (output / doubled.mul_(resolved)).nan_to_num_(0.0, 0.0, 0.0)
        ctx.module = module
        ctx.save_for_backward(inputs, detached_weight(module), magnitude_weight, scale)
        return output

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        inputs, weight, magnitude_weight, scale = ctx.saved_tensors
        signal = grad * scale
        through_w = _plain_input_grad(ctx.module, signal, inputs, weight)
        through_abs = _plain_input_grad(ctx.module, signal, inputs, magnitude_weight)
        return through_w.addcmul_(inputs.sgn(), through_abs), None, None


def _plain_forward(module: nn.Module, inputs: Tensor, weight: Tensor) -> Tensor:
    """F.conv*/F.linear(inputs, weight) without bias, as the plain module computes it."""
    if isinstance(module, nn.Linear):
        return nn.functional.linear(inputs, weight)
    conv = _CONV_FUNCTIONS[type(module).forward]
    assert isinstance(module, nn.modules.conv._ConvNd)  # a plain Conv1d/2d/3d (see _is_fusable)
    return conv(inputs, weight, None, module.stride, module.padding, module.dilation, module.groups)


def _plain_input_grad(module: nn.Module, signal: Tensor, inputs: Tensor, weight: Tensor) -> Tensor:
    """The gradient of ``sum(signal * layer(x, weight))`` to x: W^T s (the call autograd makes)."""
    if isinstance(module, nn.Linear):
        return signal.matmul(weight)
    assert isinstance(module, nn.modules.conv._ConvNd)  # a plain Conv1d/2d/3d (see _is_fusable)
    stride, padding, dilation = module.stride, module.padding, module.dilation
    zeros = [0] * len(stride)
    return torch.ops.aten.convolution_backward(
        signal, inputs, weight, None, stride, padding, dilation, False, zeros, module.groups, [True, False, False]
    )[0]


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
    bounds.append((low, high))
    positive, negative = split_weight(module, "+", parts), split_weight(module, "-", parts)
    if _is_plain(module) and _is_fusable(module):
        return _PlainZBox.apply(inputs, low, high, positive, negative, (module, output))
    weight = detached_weight(module)
    plain = _without_bias(module, output) if _is_plain(module) else _apply(module, weight, inputs)
    contributions = plain - _apply(module, positive, low) - _apply(module, negative, high)
    return ratio_output(output, contributions)


class _PlainZBox(torch.autograd.Function):
    """:func:`zbox` of a plain convolution or linear layer as one autograd node.

    Forward: ``output``'s value; the scale ``output / z``. Backward, with s = grad * scale:
    g_x = W^T s, g_B = -W+^T s and g_H = -W-^T s = W+^T s - W^T s, so two transposed products
    instead of three (the third convolution of the 3-channel image layer cost about 2.5% of
    the floor on IResNet-50), and no full-size negations of the subtractions' gradients.
    """

    @staticmethod
    def forward(
        ctx: Any,
        inputs: Tensor,
        low: Tensor,
        high: Tensor,
        positive: Tensor,
        negative: Tensor,
        layer: tuple[nn.Module, Tensor],
    ) -> Tensor:
        module, output = layer
        output = output.detach()
        contributions = _without_bias(module, output) - _plain_forward(module, low, positive)
        contributions.sub_(_plain_forward(module, high, negative))
        ctx.module = module
        ctx.save_for_backward(inputs, detached_weight(module), positive, safe_divide(output, contributions))
        return output

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None, None]:
        inputs, weight, positive, scale = ctx.saved_tensors
        signal = grad * scale
        through_w = _plain_input_grad(ctx.module, signal, inputs, weight)
        through_positive = _plain_input_grad(ctx.module, signal, inputs, positive)
        return through_w, through_positive.neg(), through_positive - through_w, None, None, None


def is_concrete(tensor: Tensor) -> bool:
    """False while tracing (ONNX export, compile): the check below reads values into Python."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    try:
        tensor.data_ptr()
    except RuntimeError:  # a fake tensor
        return False
    return True
