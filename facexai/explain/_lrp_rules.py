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

    Written with in-place passes and without boolean masks (``torch.where``, ``masked_fill``
    ran 10-20x slower per element on the CPU, benchmarks/README.md): ``nan_to_num_`` zeroes
    the non-finite quotients, and one ``aminmax`` shows whether any finite one is out of range;
    only then does a float 0/1 mask drop them (three passes instead of five in the usual case,
    the same values). While tracing, where values cannot be branched on, always the mask.
    Dropped entries may come out as -0.0.
    """
    ratio = numerator / denominator
    if ratio.numel() and is_concrete(ratio):
        ratio.nan_to_num_(0.0, 0.0, 0.0)  # 0/0, x/0 and overflow
        low, high = torch.aminmax(ratio)
        if bool((high <= max_ratio) & (low >= -max_ratio)):
            return ratio
        return ratio.mul_(ratio.abs().le_(max_ratio))
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
    """A plain layer whose backward :class:`FoldableRule` can call itself.

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


def signed_zplus(
    module: nn.Module,
    inputs: Tensor,
    output: Tensor,
    parts: WeightParts | None = None,
    pending: PendingRules | None = None,
) -> Tensor:
    """z+ rule generalised to signed inputs (FG-CAM): z = layer(x+, W+) + layer(x-, W-).

    Inputs after a ReLU (all >= 0) need only z = layer(x, W+); others go through
    :func:`signed_zplus_any`. ``pending``: see :class:`FoldableRule`.
    """
    if not _non_negative(inputs):
        return signed_zplus_any(module, inputs, output, parts, pending)
    if _is_plain(module) and _is_fusable(module):  # after a ReLU: x+ = x, x- = 0
        positive = split_weight(module, "+", parts)
        denominator = _plain_forward(module, inputs.detach(), positive)  # z
        rule = FoldableRule("zplus", module, inputs, output, denominator, (positive,))
        return rule.apply(pending)
    return ratio_output(output, _apply(module, split_weight(module, "+", parts), inputs))


#: autograd nodes whose output is >= 0 wherever it is a number (see :func:`_non_negative`)
_NON_NEGATIVE_NODES = frozenset({"ReluBackward0", "ReluBackward1"})


def _non_negative(inputs: Tensor, head: int = 4096) -> bool:
    """Whether every input is >= 0, reading the whole tensor only when its start has no negative.

    A tensor whose last writer is a ReLU (its ``grad_fn``; an in-place op after the ReLU would
    have replaced it) is >= 0 without reading it: the full reduction this spares was 1% of
    FG-CAM on ResNet-50. (A NaN there is NaN on either path.) Inputs after BatchNorm (IResNets)
    show a negative within their first few thousand values, which spares a full reduction per
    layer (2% of the floor on IResNet-50 at batch 16).
    """
    if type(inputs.grad_fn).__name__ in _NON_NEGATIVE_NODES:
        return True
    flat = inputs.detach().reshape(-1) if inputs.is_contiguous() else inputs.detach()[:1].reshape(-1)
    return bool(flat[:head].min() >= 0) and bool(inputs.min() >= 0)


def signed_zplus_any(
    module: nn.Module,
    inputs: Tensor,
    output: Tensor,
    parts: WeightParts | None = None,
    pending: PendingRules | None = None,
) -> Tensor:
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
    ``pending``: see :class:`FoldableRule`.
    """
    if not _is_plain(module):
        contributions = _apply(module, split_weight(module, "+", parts), inputs.clamp(min=0))
        negative = _apply(module, split_weight(module, "-", parts), inputs.clamp(max=0))
        contributions = contributions + negative
        return ratio_output(output, contributions)
    magnitude_weight = split_weight(module, "abs", parts)
    if _is_fusable(module):
        denominator = _signed_denominator(module, inputs, output.detach(), magnitude_weight)
        weights = (detached_weight(module), magnitude_weight)
        return FoldableRule("signed", module, inputs, output, denominator, weights).apply(pending)
    magnitude = _apply(module, magnitude_weight, inputs.abs())
    contributions = 0.5 * (_without_bias(module, output) + magnitude)
    resolved = (ZPLUS_RESOLUTION * magnitude.detach()).lt_(contributions.detach())  # 1.0 / 0.0
    return ratio_output(output, contributions, contributions.detach() * resolved)


def _signed_denominator(module: nn.Module, inputs: Tensor, output: Tensor, magnitude_weight: Tensor) -> Tensor:
    """2 z = layer(x, W) + layer(|x|, |W|) where z is resolved, 0 elsewhere (:func:`signed_zplus_any`).

    The factor 1/2 of z moves into the scale (output / 2 z), exactly, being a power of two.
    """
    magnitude = _plain_forward(module, inputs.detach().abs(), magnitude_weight)  # layer(|x|, |W|)
    threshold = magnitude * (2 * ZPLUS_RESOLUTION)
    doubled = magnitude.add_(_without_bias(module, output))  # 2 z
    resolved = threshold.lt_(doubled)  # 1.0 where z > ZPLUS_RESOLUTION * layer(|x|, |W|)
    return doubled.mul_(resolved)


#: the rules of one relevance pass whose scale is not computed yet, with the tensor each returned
#: (see :class:`FoldableRule`)
PendingRules = list[tuple[Tensor, "FoldableRule"]]


class FoldableRule:
    """The rule of one plain convolution or linear layer, run as a single autograd node.

    Three kinds, each with its denominator d and transposed products (s = gradient * scale):

    - ``"zplus"`` (inputs >= 0, after a ReLU): d = z = layer(x, W+); W+^T s back.
    - ``"signed"`` (:func:`signed_zplus_any`): d = 2 z where z is resolved, else 0;
      W^T s + sign(x) |W|^T s back, which is W+^T s on x+ and W-^T s on x-.
    - ``"zbox"`` (:func:`zbox`): d = z = layer(x, W) - layer(B, W+) - layer(H, W-); back
      g_x = W^T s, g_B = -W+^T s, g_H = -W-^T s = W+^T s - W^T s: two products, not three,
      computed as one with the weights stacked (:func:`_stacked_weight`).

    One node instead of autograd's abs, add, multiply and convolution nodes (which made six more
    full-size passes), calling ``aten.convolution_backward`` itself.

    **Folding the next element-wise rule.** The layer's own scale is ``output / d``. An
    element-wise rule right after it (BatchNorm in eval mode, an activation) has the scale
    ``y / output``, y its output, so the chain gives g_z = g_y * (y / output) * (output / d).
    :meth:`fold` builds a second node of this rule with the scale ``y / d`` in one division and
    one backward product instead of two each (53 BatchNorms on ResNet-50), returning y's value;
    the layer's own node stays in the graph for any other reader of its output, and autograd
    sums both at x. After a fold the rule drops d: kept, it held one output-sized tensor per
    convolution until the backward pass ended (358 MB on IResNet-50, 678 MB on ResNet-50 at batch
    16), for an own node that only runs when another layer read the output; that rare node
    recomputes d from its saved input and weights. The fold is exact except where the layer's
    output is exactly 0 while y and d are not (the chain gives 0 there, 0/0 := 0), or where
    ``y / output`` exceeds :func:`safe_divide`'s cap (the chain drops it) while ``y / d`` does
    not; both need exact cancellation or bias-only outputs. (LRP rules: Montavon et al.,
    "Layer-Wise Relevance Propagation: An Overview", 2019; FG-CAM, arXiv 2303.09171.)

    Because the fold is decided only when the element-wise layer runs, the own scale is deferred
    (:meth:`apply` with ``pending``): :meth:`resolve` computes it when the next module starts
    without folding (the relevance pass's pre-hooks), and after a fold only if the backward pass
    reaches the own node. The output's ``_version`` guards both: if the layer's output was
    modified in place in between (``out += identity`` written right after a convolution), the
    fold is refused and the own scale comes from the layer recomputed on its (saved,
    version-checked) input, never from the modified values. Tracing (ONNX export) never
    defers.
    """

    def __init__(
        self,
        kind: str,
        module: nn.Module,
        inputs: Tensor,
        output: Tensor,
        denominator: Tensor,
        weights: tuple[Tensor, ...],
        bounds: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        self.kind = kind
        self.module = module
        self.inputs = inputs
        self.bounds = bounds
        self.weights = weights
        #: the layer's output while its own scale may still need it; None once it does not
        self.output: Tensor | None = output.detach()
        self.denominator: Tensor | None = denominator
        self.version: int | None = None  # the output's _version when deferred
        self.scale: Tensor | None = None  # the own scale, once computed

    def apply(self, pending: PendingRules | None = None) -> Tensor:
        """The node with the layer's own scale: now, or deferred into ``pending`` (see class)."""
        assert self.output is not None
        result = _RuleNode.apply((self, self.output, None), self.inputs, *(self.bounds or (None, None)))
        if pending is None or not is_concrete(self.inputs):
            self.resolve()
        else:
            self.version = self.output._version
            pending.append((result, self))
        return result

    def fold(self, value: Tensor) -> Tensor | None:
        """A node of this rule with the scale ``value / d`` and ``value``'s value (see class).

        None if the layer's output was modified in place since the forward pass made it, or the
        rule no longer keeps its denominator (resolved before the element-wise layer ran).
        """
        if self.denominator is None or self.output is None or self.output._version != self.version:
            return None
        scale = self._divide(value.detach())
        self.output = self.denominator = None  # the own scale, if ever needed, recomputes both (rare)
        return _RuleNode.apply((self, value, scale), self.inputs, *(self.bounds or (None, None)))

    def resolve(self) -> None:
        """Compute the own scale now (which drops d); keep nothing the fold would need."""
        if self.scale is None:
            self.own_scale()
        self.output = None

    def own_scale(self) -> Tensor:
        """``output / d`` (0/0 := 0), from the output as the layer made it."""
        if self.scale is not None:
            return self.scale
        output = self.output
        if output is None or (self.version is not None and output._version != self.version):
            with torch.no_grad():  # modified in place since, or dropped: the layer's own forward again
                output = type(self.module).forward(self.module, self.inputs.detach())
        if self.denominator is None:  # dropped by a fold
            with torch.no_grad():
                self.denominator = self._denominator(output.detach())
        if self.kind == "signed":
            # |output| <= layer(|x|, |W|) < z / ZPLUS_RESOLUTION where z is resolved, so only the
            # division by 0 of unresolved entries needs zeroing, not safe_divide's range test
            self.scale = (output / self.denominator).nan_to_num_(0.0, 0.0, 0.0)
        else:
            self.scale = self._divide(output)
        self.denominator = None
        return self.scale

    def _denominator(self, output: Tensor) -> Tensor:
        """The denominator d as the rule function computed it, from the saved input, weights and ``output``."""
        module, inputs = self.module, self.inputs.detach()
        if self.kind == "zplus":
            return _plain_forward(module, inputs, self.weights[0])
        if self.kind == "signed":
            return _signed_denominator(module, inputs, output, self.weights[1])
        assert self.bounds is not None
        weight, positive = self.weights[0].chunk(2, dim=1) if len(self.weights) == 1 else self.weights
        return _zbox_denominator(module, output, self.bounds, positive, weight - positive)

    def _divide(self, numerator: Tensor) -> Tensor:
        """``numerator / d``, 0 where d is 0 or the ratio out of range (see :func:`safe_divide`)."""
        assert self.denominator is not None
        return safe_divide(numerator, self.denominator)

    def input_grads(self, signal: Tensor, inputs: Tensor, weights: list[Tensor]) -> tuple[Tensor | None, ...]:
        """The gradients of x (and of B and H for z^B) for ``signal`` = gradient * scale."""
        module = self.module
        if self.kind != "zbox":  # a hidden layer: x's gradient only
            placeholder = _channels_last_placeholder(module, inputs)
            layout = inputs if placeholder is None else placeholder
            through_w = _plain_input_grad(module, signal, layout, weights[0])
            if self.kind == "signed":
                through_second = _plain_input_grad(module, signal, layout, weights[1])
                through_w.addcmul_(inputs.sgn(), through_second)
            return _contiguous(through_w), None, None
        if len(weights) == 1:  # z^B with [W, W+] stacked (see _stacked_weight)
            shape = (inputs.shape[0], 2 * inputs.shape[1], *inputs.shape[2:])
            both = _plain_input_grad(module, signal, inputs.new_empty(()).expand(shape), weights[0])
            through_w, through_second = both.chunk(2, dim=1)
        else:
            through_w = _plain_input_grad(module, signal, inputs, weights[0])
            through_second = _plain_input_grad(module, signal, inputs, weights[1])
        return through_w, through_second.neg(), through_second - through_w


class _RuleNode(torch.autograd.Function):
    """The autograd node of a :class:`FoldableRule`: a value forward, transposed products back.

    Forward: the layer's output, or the folded element-wise layer's. Backward: the rule's
    transposed products of gradient * scale, the rule's own scale (computed on demand) or a
    folded one. The value arrives wrapped in a tuple, as in :class:`_Rescaled`, so the result is
    a detached alias, not a view.
    """

    @staticmethod
    def forward(
        ctx: Any,
        held: tuple[FoldableRule, Tensor, Tensor | None],
        inputs: Tensor,
        low: Tensor | None,
        high: Tensor | None,
    ) -> Tensor:
        rule, value, scale = held
        ctx.rule, ctx.own = rule, scale is None
        ctx.save_for_backward(inputs, *rule.weights, *(() if scale is None else (scale,)))
        return value.detach()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        inputs, *saved = ctx.saved_tensors
        rule: FoldableRule = ctx.rule
        weights = saved[: len(rule.weights)]
        scale = rule.own_scale() if ctx.own else saved[-1]
        return (None, *rule.input_grads(grad * scale, inputs, weights))


def _plain_forward(module: nn.Module, inputs: Tensor, weight: Tensor) -> Tensor:
    """F.conv*/F.linear(inputs, weight) without bias, as the plain module computes it."""
    if isinstance(module, nn.Linear):
        return nn.functional.linear(inputs, weight)
    conv = _CONV_FUNCTIONS[type(module).forward]
    assert isinstance(module, nn.modules.conv._ConvNd)  # a plain Conv1d/2d/3d (see _is_fusable)
    return conv(inputs, weight, None, module.stride, module.padding, module.dilation, module.groups)


def _stacked_weight(module: nn.Module, weight: Tensor, positive: Tensor) -> Tensor | None:
    """[W, W+] along the input channels, so one transposed product gives W^T s and W+^T s.

    For the image layer (:func:`zbox`): a transposed convolution back to 3 channels runs far
    below the CPU's peak, and one back to 6 channels costs about as much as one to 3 (ResNet-50's
    7x7 stem at 224 px: 10 ms against 2 x 9.5 ms at batch 1, 250 ms against 2 x 200 ms at batch
    16). Wider layers gain nothing from it. None for grouped convolutions, whose weight does not
    stack this way.
    """
    if getattr(module, "groups", 1) != 1:
        return None
    return torch.cat([weight, positive], dim=1)


def _channels_last_placeholder(module: nn.Module, inputs: Tensor) -> Tensor | None:
    """An uninitialised channels-last stand-in for x where W^T s is faster in that layout, else None.

    oneDNN computes a strided convolution's input gradient in channels-last layout on the CPU
    and, for contiguous inputs, converts it with ``Tensor.contiguous()``, an element-wise
    transpose that ran 3-6x slower than the product itself at the wide early layers (IResNet-50's
    64 x 112 x 112 stride-2 layers: 11 ms of which 6 ms the conversion at batch 1, 600 ms of
    FG-CAM's 11.8 s at batch 16; benchmarks/README.md). Given a channels-last x the product
    stays channels-last, and :func:`_contiguous` converts it once, after the rule combined its
    products, at a third of the cost. Only x's shape and layout are read, never its values.
    A kernel wider than 1x1 is then converted to channels-last on every call, which costs more
    than it saves where the weight is larger than x (measured for 3x3 stride-2 layers: 512
    channels at 14 x 14, batch 1: 3.9 ms plain, 12.7 ms channels-last; 128 channels at 56 x 56:
    2.6 against 2.5 ms); those keep the plain call, as does tracing (ONNX export).
    """
    if not (isinstance(module, nn.Conv2d) and max(module.stride) > 1 and inputs.device.type == "cpu"):
        return None
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled and is_concrete(inputs)):
        return None
    if module.kernel_size != (1, 1) and inputs.numel() < module.weight.numel():
        return None
    n, c, h, w = inputs.shape
    return inputs.new_empty((n, h, w, c)).permute(0, 3, 1, 2)


def _contiguous(tensor: Tensor) -> Tensor:
    """``tensor.contiguous()``, as one 2-D transpose per sample for a channels-last (N, C, H, W).

    torch copies a 2-D transposed matrix in cache-sized tiles, while the 4-D permuted copy of
    ``contiguous()`` writes each element at a stride of H * W: 1.8 against 5.9 ms for
    64 x 112 x 112 at batch 1, 52 against 107 ms at batch 16 (one thread).
    """
    if tensor.is_contiguous() or tensor.dim() != 4 or not tensor.is_contiguous(memory_format=torch.channels_last):
        return tensor.contiguous()
    n, c, h, w = tensor.shape
    out = torch.empty((n, c, h, w), dtype=tensor.dtype, device=tensor.device)
    rows = tensor.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view: the channels-last memory
    columns = out.view(n, c, h * w)
    for sample in range(n):
        columns[sample].copy_(rows[sample].t())
    return out


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
ZPlusRule = Callable[[nn.Module, Tensor, Tensor, "WeightParts | None", "PendingRules | None"], Tensor]


def zbox(
    module: nn.Module,
    inputs: Tensor,
    output: Tensor,
    bounds: list[tuple[Tensor, Tensor]],
    parts: WeightParts | None = None,
    pending: PendingRules | None = None,
) -> Tensor:
    """z^B rule for the layer that reads the image: z = layer(x, W) - layer(B, W+) - layer(H, W-).

    B and H are the per-sample minimum and maximum of the normalised input (global scalars, as
    in the FG-CAM reference code), held as leaves in ``bounds`` so that the input relevance
    ``x * g_x + B * g_B + H * g_H`` (Euler's theorem for z, linear in x, B and H) can be read off
    their gradients (Montavon et al. 2019). ``pending``: see :class:`FoldableRule`.
    """
    flat = inputs.detach().flatten(1)
    shape = (-1,) + (1,) * (inputs.dim() - 1)
    low = flat.amin(dim=1).view(shape).expand_as(inputs).clone().requires_grad_(True)
    high = flat.amax(dim=1).view(shape).expand_as(inputs).clone().requires_grad_(True)
    bounds.append((low, high))
    positive, negative = split_weight(module, "+", parts), split_weight(module, "-", parts)
    weight = detached_weight(module)
    if _is_plain(module) and _is_fusable(module):
        denominator = _zbox_denominator(module, output.detach(), (low, high), positive, negative)
        stacked = _stacked_weight(module, weight, positive)
        weights = (weight, positive) if stacked is None else (stacked,)
        return FoldableRule("zbox", module, inputs, output, denominator, weights, (low, high)).apply(pending)
    plain = _without_bias(module, output) if _is_plain(module) else _apply(module, weight, inputs)
    contributions = plain - _apply(module, positive, low) - _apply(module, negative, high)
    return ratio_output(output, contributions)


def _zbox_denominator(
    module: nn.Module, output: Tensor, bounds: tuple[Tensor, Tensor], positive: Tensor, negative: Tensor
) -> Tensor:
    """The z^B denominator layer(x, W) - layer(B, W+) - layer(H, W-), layer(x, W) read off the output."""
    low, high = bounds
    denominator = _without_bias(module, output) - _plain_forward(module, low.detach(), positive)
    return denominator.sub_(_plain_forward(module, high.detach(), negative))


def is_concrete(tensor: Tensor) -> bool:
    """False while tracing (ONNX export, compile): the check below reads values into Python."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    try:
        tensor.data_ptr()
    except RuntimeError:  # a fake tensor
        return False
    return True
