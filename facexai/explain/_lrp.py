"""LRP ratio rules as a modified gradient, for FG-CAM's walk from a CAM layer down.

FG-CAM (Qiu, Jin, Zhang, "Empowering CAM-Based Methods with Capability to Generate Fine-Grained
and High-Faithfulness Explanations", AAAI 2024, arXiv 2303.09171) redistributes the CAM
components alpha_k * A_k layer by layer with rules of layer-wise relevance propagation (LRP:
Bach et al., PLoS ONE 2015; z+ and z^B rules: Montavon et al., "Layer-Wise Relevance
Propagation: An Overview", 2019).

Instead of a hand-written walk over a fixed list of architectures, one forward pass builds a
graph whose *gradient* is the walk. Relevance is carried as ``R_t = t * g_t`` for every tensor t
of that pass, g_t being the gradient in the modified graph:

- a module whose rule is "R_in = x * J^T (R_out / z)" (z the rule's bias-free contributions)
  keeps its output's value but gets the gradient of z scaled by ``output / z`` (0/0 := 0), see
  :mod:`facexai.explain._lrp_rules`; with z = the module's own input (BatchNorm and its shift, SiLU, GELU
  and other element-wise activations, channel-attention gates) this passes R through unchanged;
  an element-wise rule that reads a convolution's output is folded into the convolution's rule
  (one scale y / z instead of y / output and output / z, see
  :class:`~facexai.explain._lrp_rules.FoldableRule`; ``FOLD_ELEMENTWISE`` switches it off);
- ops left untouched keep their ordinary gradient, and ordinary gradient x input already *is* the
  ratio rule for positively homogeneous, bias-free ops: a residual add y = a + b splits
  R_y into a * g_y and b * g_y (the a / (a + b) split, never dividing by a small a + b), max-pool
  routes R to its arg-max, average pools share R in proportion to their inputs, ReLU/PReLU/
  LeakyReLU, dropout (eval), reshapes and concatenations pass R through.

Residual additions written in a block's ``forward`` (``out += identity``) therefore need no
canonizer, and the rules work on torchvision and timm ResNets, VGGs and IResNets alike. Hooks
exist only inside :func:`relevance_pass`; the backward pass runs without any hook. Which layers
get which rule is the FG-CAM column of :data:`facexai.explain.layer_rules.LAYER_RULES`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from facexai.explain._lrp_rules import (
    FoldableRule,
    PendingRules,
    WeightParts,
    ZPlusRule,
    is_concrete,
    ratio_output,
    safe_divide,
    signed_zplus,
    zbox,
)
from facexai.explain.layer_rules import FGRule, layer_rule
from facexai.explain.layers import get_layer

#: a BatchNorm channel's statistics "do not match" its input when the input's batch mean is more
#: than BN_OFFSET running standard deviations from the running mean, or its batch variance is
#: more than BN_VARIANCE_RATIO times larger or smaller than the running variance
BN_OFFSET = 1.0
BN_VARIANCE_RATIO = 4.0
#: share of mismatched channels (over all BatchNorms the walk crosses) above which FG-CAM warns:
#: calibrated IResNets on faces measure 0.000, random running statistics 0.70-0.98 (see
#: :func:`batchnorm_mismatch` and docs/explainers.md)
BN_MISMATCH_SHARE = 0.25
#: fold an element-wise rule (BatchNorm) into the rule of the convolution whose output it reads
#: (:class:`~facexai.explain._lrp_rules.FoldableRule`); False keeps every rule its own node
FOLD_ELEMENTWISE = True


def rule_kind(module: nn.Module) -> FGRule | None:
    """Which rule a module gets: "linear", "elementwise", or None (ordinary gradient).

    The FG-CAM column of :data:`facexai.explain.layer_rules.LAYER_RULES`. Only modules of the
    region between ``explain_at`` and the CAM layer use their rule.
    """
    return layer_rule(module).fgcam


class RelevanceTape:
    """What one :func:`relevance_pass` records: the CAM activations and where relevance lands.

    Attributes:
        activations: the CAM layer's output, carrying the rule graph below it.
        cam_leaf: a detached copy of it that the rest of the network ran on (for dS/dA).
        zplus: the z+ rule of hidden convolutions and linear layers (see :func:`relevance_pass`).
    """

    def __init__(self, image: Tensor, cam_layer: str, explain_at: str | None, zplus: ZPlusRule) -> None:
        self.image = image
        self.zplus = zplus
        self.cam_layer = cam_layer
        self.explain_at = explain_at
        self.active = explain_at is None  # rules apply between explain_at and the CAM layer
        self.finished = False
        self.busy = False  # the rules' own module calls must not trigger the hooks again
        self.bounds: list[tuple[Tensor, Tensor]] = []
        self.outputs: list[Tensor] = []
        #: per BatchNorm crossed: a bool tensor (C,), True where the channel's statistics
        #: do not match its input (see :func:`batchnorm_mismatch`)
        self.mismatched: list[Tensor] = []
        self.stash: dict[int, list[Tensor | None]] = defaultdict(list)
        #: W+, W-, |W| of the layers crossed, for this pass only (see
        #: :func:`~facexai.explain._lrp_rules.split_weight`)
        self.weight_parts: WeightParts = {}
        #: rules of the last layers whose own scale is deferred until the next module starts
        #: (see :class:`~facexai.explain._lrp_rules.FoldableRule`)
        self.pending: PendingRules = []
        self.activations: Tensor | None = None
        self.cam_leaf: Tensor | None = None

    def recorded(self) -> tuple[Tensor, Tensor]:
        """(activations, cam_leaf) once the forward pass has run the CAM layer."""
        if self.activations is None or self.cam_leaf is None:
            raise ValueError(f"target_layer {self.cam_layer!r} was not called during the forward pass")
        return self.activations, self.cam_leaf

    def settle(self, keep: object = None) -> None:
        """Compute the deferred own scales, except that of the rule whose result is ``keep``.

        Called as each module starts (``keep``: the input of an element-wise rule, which may fold
        the rule that made it) and when the CAM layer has run, so that an in-place module
        (``ReLU(inplace=True)`` after a VGG convolution) never finds a deferred output.
        """
        remaining = []
        for result, rule in self.pending:
            if result is keep:
                remaining.append((result, rule))
            else:
                rule.resolve()
        self.pending = remaining

    def claim(self, inputs: Tensor) -> FoldableRule | None:
        """The deferred rule whose result is ``inputs``, removed from the pending ones."""
        for index, (result, rule) in enumerate(self.pending):
            if result is inputs:
                del self.pending[index]
                return rule
        return None

    def mismatch_share(self) -> tuple[float, int]:
        """(share of mismatched channels, channels checked) over the BatchNorms the walk crossed."""
        if not self.mismatched:
            return 0.0, 0
        flags = torch.cat(self.mismatched)
        return flags.float().mean().item(), flags.numel()

    def relevance(self, components: Tensor) -> Tensor:
        """Walk ``components`` (N, C, h, w) at the CAM layer down to ``explain_at``.

        Relevance is seeded as R_A = A * (components / A): components where A is 0 have no
        contribution to pass down and are dropped, as in the reference's first ratio rule.

        Returns:
            Relevance at the input (N, 3, H, W) or at the output of ``explain_at``.
        """
        if self.explain_at is None:
            inputs = [self.image] + [t for pair in self.bounds for t in pair]
        else:
            inputs = self.outputs[-1:]
        if self.activations is None or not inputs or not self.activations.requires_grad:
            raise self._disconnected()
        seed = safe_divide(components, self.activations.detach())
        grads = torch.autograd.grad(self.activations, inputs, seed, allow_unused=True)
        if grads[0] is None:
            raise self._disconnected()
        relevance = inputs[0].detach() * grads[0]
        for index, (low, high) in enumerate(self.bounds):
            for bound, grad in ((low, grads[1 + 2 * index]), (high, grads[2 + 2 * index])):
                if grad is not None:  # g_B = -W+^T s, g_H = -W-^T s: the z^B bound terms
                    relevance = relevance + bound.detach() * grad
        return relevance

    def _disconnected(self) -> ValueError:
        where = "the input" if self.explain_at is None else f"explain_at={self.explain_at!r}"
        return ValueError(
            f"FG-CAM cannot walk from target_layer={self.cam_layer!r} down to {where}: its output "
            "does not feed the target layer in the forward pass. explain_at must name 'input' or "
            "a layer that runs before the target layer and lies on its path"
        )


def _rule_hooks(module: nn.Module, kind: str, tape: RelevanceTape) -> list[RemovableHandle]:
    """Hooks replacing the module's output by its rule's; the pre-hook keeps in-place inputs."""

    def pre_hook(mod: nn.Module, args: tuple) -> tuple | None:
        usable = tape.active and not tape.busy and bool(args) and isinstance(args[0], Tensor)
        tape.stash[id(mod)].append(args[0] if usable else None)
        if usable and getattr(mod, "inplace", False):
            return (args[0].clone(), *args[1:])  # keep the input intact for the rule
        return None

    def hook(mod: nn.Module, args: tuple, output: object) -> Tensor | None:
        inputs = tape.stash[id(mod)].pop() if tape.stash[id(mod)] else None
        if inputs is None or not tape.active or not isinstance(output, Tensor):
            return None
        tape.busy = True
        try:
            return _apply_rule(mod, kind, inputs, output, tape)
        finally:
            tape.busy = False

    return [module.register_forward_pre_hook(pre_hook), module.register_forward_hook(hook)]


def _settle_hook(module: nn.Module, tape: RelevanceTape) -> RemovableHandle:
    """A pre-hook computing the deferred scales that this module's call will not fold."""
    foldable = rule_kind(module) == "elementwise"

    def pre_hook(mod: nn.Module, args: tuple) -> None:
        if tape.pending and not tape.busy:
            tape.settle(args[0] if foldable and args else None)

    return module.register_forward_pre_hook(pre_hook)


def _apply_rule(module: nn.Module, kind: str, inputs: Tensor, output: Tensor, tape: RelevanceTape) -> Tensor | None:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and is_concrete(inputs):
        if module.running_mean is not None and module.running_var is not None:
            tape.mismatched.append(batchnorm_mismatch(module, inputs))
    if kind == "linear":
        if inputs is tape.image:
            return zbox(module, inputs, output, tape.bounds, tape.weight_parts, tape.pending)
        return tape.zplus(module, inputs, output, tape.weight_parts, tape.pending)
    if output.shape != inputs.shape:
        return None  # not element-wise after all: keep the ordinary gradient
    rule = tape.claim(inputs) if FOLD_ELEMENTWISE else None
    if rule is not None:
        folded = rule.fold(output)
        if folded is not None:
            return folded
        rule.resolve()  # its output was modified in place: no fold, the rule recomputes it
    return ratio_output(output, inputs)


def batchnorm_mismatch(module: nn.modules.batchnorm._BatchNorm, inputs: Tensor) -> Tensor:
    """Per channel (C,): whether the BN's running statistics do not describe this batch's input.

    Why FG-CAM cares: BatchNorm passes relevance through with the ratio y / x of its output to
    its input, and the shortcut additions below it split relevance by a * g and b * g. Running
    statistics that do not match the activations (a seeded network, or inputs normalised
    differently from training) shift y far from x, so wherever an addition nearly cancels
    (x close to 0, y not) the ratio amplifies the near-cancelling parts, and 1e-6 changes of the
    input change which ones dominate the map. Offsets are measured in running standard
    deviations, variances as a ratio: a calibrated network sees offsets well below one and
    ratios near one on in-domain data, whatever its BN affine parameters.
    """
    if module.running_mean is None or module.running_var is None:
        raise ValueError(f"{type(module).__name__} keeps no running statistics to compare with")
    mean, var = _channel_moments(inputs.detach().float())
    running_var = module.running_var.float() + module.eps
    offset = (mean - module.running_mean.float()).abs() / running_var.sqrt()
    ratio = (var + module.eps) / running_var
    limit = BN_VARIANCE_RATIO
    return (offset > BN_OFFSET) | (ratio > limit) | (ratio < 1.0 / limit)


#: E[x^2] - E[x]^2 loses the variance to float32 rounding where the mean is this many standard
#: deviations from 0; such channels are recomputed exactly
_CANCELLATION = 100.0


def _channel_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and (biased) variance of ``x`` (N, C, ...) over all other dimensions.

    From sums and sums of squares along each (sample, channel) row, the two reductions the CPU
    runs fastest: ``torch.var_mean`` over the batch and spatial dimensions took 8-9% of FG-CAM's
    time on IResNet-50. Channels whose mean is over ``_CANCELLATION`` standard deviations from 0,
    where that difference of sums would be rounding noise, get ``torch.var_mean``.
    """
    rows = x.reshape(x.shape[0], x.shape[1], -1)
    count = rows.shape[0] * rows.shape[2]
    mean = rows.sum(dim=2).sum(dim=0) / count
    var = (torch.linalg.vector_norm(rows, dim=2).square().sum(dim=0) / count - mean.square()).clamp(min=0.0)
    unsure = (mean.square() > _CANCELLATION**2 * var).nonzero().squeeze(1)
    if unsure.numel():
        exact_var, exact_mean = torch.var_mean(rows.index_select(1, unsure), dim=[0, 2], unbiased=False)
        mean, var = mean.index_copy(0, unsure, exact_mean), var.index_copy(0, unsure, exact_var)
    return mean, var


def _check_map(name: str, role: str, output: object) -> Tensor:
    if not isinstance(output, Tensor) or output.dim() != 4:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"{role} {name!r} must output a 4-D feature map (N, C, h, w), got {shape}")
    return output


def _explain_at_hook(tape: RelevanceTape, explain_at: str) -> Callable:
    def hook(module: nn.Module, args: tuple, output: object) -> Tensor | None:
        if tape.busy:
            return None  # a rule re-running this module with modified weights
        if tape.finished:
            return None  # runs after the CAM layer: reported when the relevance is asked for
        leaf = _check_map(explain_at, "explain_at", output).detach().requires_grad_(True)
        tape.outputs.append(leaf)
        tape.active = True
        return leaf.clone()  # later in-place ops must not touch the recorded leaf

    return hook


def _cam_hook(tape: RelevanceTape) -> Callable:
    def hook(module: nn.Module, args: tuple, output: object) -> Tensor | None:
        if tape.busy:
            return None  # a rule re-running this module with modified weights
        output = _check_map(tape.cam_layer, "target_layer", output)
        if tape.finished:
            raise ValueError(
                f"target_layer {tape.cam_layer!r} runs more than once per forward pass (a shared "
                "module); FG-CAM needs a layer called once, e.g. the enclosing block"
            )
        tape.settle()  # the region ends here: nothing later folds
        tape.activations, tape.finished, tape.active = output, True, False
        tape.cam_leaf = output.detach().requires_grad_(True)
        return tape.cam_leaf.clone()  # the head may work in place; the leaf must stay a leaf

    return hook


@contextmanager
def relevance_pass(
    model: nn.Module,
    image: Tensor,
    cam_layer: str,
    explain_at: str | None = None,
    zplus: ZPlusRule = signed_zplus,
) -> Iterator[RelevanceTape]:
    """Hooks for one forward pass that records FG-CAM's relevance graph; removed on exit.

    Args:
        model: the network, in eval mode.
        image: the input batch the forward pass will receive (requires grad for
            ``explain_at=None``, so the z^B rule can recognise the layer reading it).
        cam_layer: dotted name of the CAM layer; the rest of the network runs on a detached leaf.
        explain_at: dotted name of the layer whose output receives the relevance, None for the
            input.
        zplus: the z+ rule of hidden convolutions and linear layers. The default
            :func:`~facexai.explain._lrp_rules.signed_zplus` skips a term that is zero after a
            ReLU by looking at the input's values; tracing (ONNX export) needs
            :func:`~facexai.explain._lrp_rules.signed_zplus_any`, which gives the same maps
            without branching on values.
    """
    tape = RelevanceTape(image, cam_layer, explain_at, zplus)
    cam_module = get_layer(model, cam_layer)
    handles: list[RemovableHandle] = []
    try:
        for module in model.modules():
            handles.append(_settle_hook(module, tape))
        for module in model.modules():
            kind = rule_kind(module)
            if kind is not None:
                handles += _rule_hooks(module, kind, tape)
        if explain_at is not None:
            at_module = get_layer(model, explain_at)
            handles.append(at_module.register_forward_hook(_explain_at_hook(tape, explain_at)))
        handles.append(cam_module.register_forward_hook(_cam_hook(tape)))
        yield tape
    finally:
        for handle in handles:
            handle.remove()
        tape.settle()
        tape.weight_parts.clear()  # the recorded graph keeps what the backward needs
