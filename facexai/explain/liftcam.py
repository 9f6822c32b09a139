"""LIFT-CAM (Jung & Oh, ICCV 2021, arXiv 2102.05228): DeepLIFT weights of activation maps.

Paper: "Towards Better Explanations of Class Activation Mapping", ICCV 2021.

DeepLIFT: Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating
Activation Differences", ICML 2017, arXiv 1704.02685.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facexai.explain._cam import CAMExplainer
from facexai.explain.base import float32_forward
from facexai.explain.layer_rules import LiftRule, layer_rule
from facexai.explain.layers import as_leaf, capture_output
from facexai.explain.registry_instance import register_explainer
from facexai.explain.targets import SimilarityTarget, Target

#: |x - x0| below which a unit counts as unchanged and keeps its gradient (captum's DeepLift eps)
EPS = 1e-10
#: integration points for targets other than the built-in ones (exact for linear targets)
IG_STEPS = 32


class Contributions(NamedTuple):
    """LIFT-CAM's intermediate results for one batch."""

    weights: Tensor  #: phi (N, C): DeepLIFT contribution of each whole activation map
    activations: Tensor  #: A (N, C, h, w) at the CAM layer
    delta: Tensor  #: s(A) - s(0) (N,), what the weights sum to (summation-to-delta)


@register_explainer("liftcam")
class LiftCAM(CAMExplainer):
    """LIFT-CAM: w_k = phi_k, the DeepLIFT contribution of map k against an all-zero map.

    The network is split at ``target_layer`` into A = features(x) and the head s = F(A).
    DeepLIFT with the zero reference gives contributions C = A * m, with m the multipliers of F;
    phi_k = sum_ij C_kij and the map is ReLU(sum_k phi_k A_k) (then upsampled and min-maxed).
    Summation-to-delta holds: sum_k phi_k = s(A) - s(0).

    How the multipliers are computed (one backbone forward, one head forward, one backward):

    - A forward hook at the CAM layer replaces A (N, C, h, w) by [A; 0], so the head runs once
      on 2N rows. If the head is not a function of A alone (a skip connection bypasses the CAM
      layer, or the model's forward fixes the batch size), that forward fails or returns the
      wrong number of rows; the batch [x; x] is then run instead, with the second half of A
      zeroed, so other inputs of the head are held at their actual values.
    - Element-wise nonlinearity *modules* (any class of ``torch.nn.modules.activation`` except
      softmax-like ones, and look-alikes such as timm's activation layers: ReLU, PReLU, GELU,
      SiLU, ...) use the Rescale rule m = dy/dx = (f(x) - f(x0)) / (x - x0); max-pooling modules
      use DeepLIFT's max rule (each window's change goes to the arg-max of the input and of the
      reference, as captum does). Both fall back to the gradient where |x - x0| < 1e-10. The
      rules are attached as temporary hooks that only act after the CAM layer has run.
    - Everything else (convolutions, linear layers, BatchNorm in eval mode, average pooling,
      flatten, additions) is linear and uses ordinary gradients, which are exact multipliers.
    - Functional nonlinearities in the head (``F.relu`` or ``F.normalize`` inside a ``forward``)
      cannot be hooked and get plain gradients. This breaks summation-to-delta, and that is
      checked after every call: a ``RuntimeWarning`` names the gap. Use activation modules in
      the head (or a CAM layer after the functional op) to get exact DeepLIFT.

    The target's own nonlinearity: a class logit is linear (multiplier = its one-hot gradient).
    For verification the score g(e) = cos(e, r) is nonlinear in the embedding e, and summation to
    delta stays exact with an exact two-player Shapley split: g = u / v with u = e . r/|r|
    (linear) and v = |e|; u gets (1/v + 1/v0) / 2 per unit change and v gets
    -(u + u0) / (2 v v0); v's change is split over the coordinates exactly by
    v - v0 = sum_i (e_i + e0_i)(e_i - e0_i) / (v + v0). Hence
    m_e = (1/v + 1/v0)/2 * r/|r| - (u + u0) / (2 v v0 (v + v0)) * (e + e0) and
    sum_i m_e,i (e_i - e0_i) = g(e) - g(e0) to float precision, with m_e -> grad g(e) as
    e0 -> e (so it agrees with DeepLIFT's gradient limit). "dissimilar" targets negate it.
    Other targets get integrated gradients along e0 -> e (32 midpoints; exact if linear).

    bf16/fp16 models: the paired forward runs with float32 copies of the weights
    (:func:`~facexai.explain.base.float32_forward`), so summation-to-delta holds to float32
    precision; with bf16 gradients the gap of an exact linear head reached 8 % and the check
    could not tell rounding from a missed nonlinearity.

    LIFT-CAM overrides :meth:`explain` rather than ``channel_weights``: the paired forward
    replaces the family's plain forward, so the backbone still runs only once.

    Beyond the reference code (batch size 1, ``.cuda()``, torchvision VGG16/ResNet50 only): any
    batch size, any device, any architecture given a layer name; maps agree with the reference
    (captum's DeepLift) at Pearson > 0.999 on seeded VGG16 and ResNet50 (see
    ``tests/explain/test_liftcam.py``).

    Args:
        target_layer: dotted module name of the CAM layer (called once per forward); ``None``
            picks the last feature layer.
    """

    not_exportable = None
    #: relative gap |sum phi - delta| / scale above which a call warns (see class docstring)
    tolerance: float = 1e-3

    def explain(self, model: nn.Module, images: Tensor, target: Target) -> Tensor:
        """Raw maps sum_k phi_k A_k (N, h, w); warns when summation-to-delta fails."""
        result = self.contributions(model, images, target)
        _check_summation(result.weights.sum(dim=1), result.delta, self.tolerance)
        return torch.einsum("nc,nchw->nhw", result.weights, result.activations)

    def explain_for_tracing(self, model: nn.Module, images: Tensor, target: Target) -> Tensor:
        """:meth:`explain` without the summation-to-delta check, which branches on values."""
        result = self.contributions(model, images, target)
        return torch.einsum("nc,nchw->nhw", result.weights, result.activations)

    def contributions(self, model: nn.Module, images: Tensor, target: Target) -> Contributions:
        """Phi (N, C), A and s(A) - s(0); call inside ``explanation_mode``, as ``__call__`` does."""
        name = self.layer_name(model, images)
        try:
            leaf, output = _paired_forward(model, images, name, duplicate=False)
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError:
            leaf, output = _paired_forward(model, images, name, duplicate=True)
        n = len(images)
        scores, scores_ref = target(output[:n].detach()), target(output[n:].detach())
        multipliers = output_multipliers(target, output[:n].detach(), output[n:].detach())
        (grad,) = torch.autograd.grad(output[:n], leaf, multipliers, allow_unused=True)
        grad = torch.zeros_like(leaf) if grad is None else grad
        weights = (leaf.detach() * grad).sum(dim=(2, 3))
        return Contributions(weights, leaf.detach(), scores - scores_ref)


def _paired_forward(model: nn.Module, images: Tensor, name: str, duplicate: bool) -> tuple[Tensor, Tensor]:
    """Run the model with the CAM layer's output replaced by [A; 0] and DeepLIFT rules attached.

    Returns the leaf A (N, C, h, w) and the model output (2N, D): rows N.. score the zero map.
    """
    n = len(images)
    leaves: list[Tensor] = []

    def split(output: Tensor) -> Tensor:
        if leaves:
            raise ValueError(
                f"Layer {name!r} runs more than once per forward pass (a shared module); "
                "LIFT-CAM needs a layer called once, e.g. a block or stage output"
            )
        leaves.append(as_leaf(output[:n]))
        return torch.cat([leaves[0], torch.zeros_like(leaves[0])])

    with (
        capture_output(model, name, replace=split),
        deeplift_rules(model, 2 * n, lambda: bool(leaves)),
    ):
        # float32 weights for bf16/fp16 models: summation-to-delta must hold to float precision
        output = float32_forward(model, torch.cat([images, images]) if duplicate else images)
    if not leaves:
        raise ValueError(f"Layer {name!r} was not called during the forward pass")
    if not isinstance(output, Tensor) or output.dim() != 2 or len(output) != 2 * n:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise RuntimeError(f"expected a model output of {2 * n} rows, got {shape}")
    return leaves[0], output


@contextmanager
def deeplift_rules(model: nn.Module, rows: int, active: Callable[[], bool]) -> Iterator[None]:
    """Attach DeepLIFT rules to the model's nonlinear modules for the duration of the context.

    A rule acts on a call whose single input has ``rows`` rows (first half: input, second half:
    reference) while ``active()`` is true; other calls run untouched.
    """
    handles = []
    for module in model.modules():
        kind = rule_kind(module)
        if kind is not None:
            handles.extend(_attach_rule(module, kind == "max", rows, active))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def rule_kind(module: nn.Module) -> LiftRule | None:
    """The DeepLIFT rule of a module: "max", "rescale" or ``None`` (ordinary gradients).

    "max" for max-pooling modules, "rescale" for element-wise nonlinearities (found by class
    family, not by architecture), ``None`` for linear or unknown modules: the LIFT-CAM column of
    :data:`facexai.explain.layer_rules.LAYER_RULES`.
    """
    return layer_rule(module).liftcam


def _attach_rule(module: nn.Module, max_rule: bool, rows: int, active: Callable[[], bool]) -> list:
    saved: list[Tensor | None] = []

    def pre_hook(mod: nn.Module, args: tuple) -> tuple | None:
        x = args[0] if len(args) == 1 and isinstance(args[0], Tensor) else None
        if x is None or x.dim() == 0 or x.shape[0] != rows or not active():
            saved.append(None)
            return None
        saved.append(x)
        # the module works on a copy: an in-place activation must not overwrite the saved input
        return (x.clone(),)

    def hook(mod: nn.Module, args: tuple, output: object) -> Tensor | None:
        x = saved.pop()
        if x is None or not isinstance(output, Tensor) or len(output) != rows:
            return None
        if not max_rule and output.shape != x.shape:  # not element-wise after all: gradients
            return None
        return _Rule.apply(x, output.detach(), mod, max_rule)

    return [module.register_forward_pre_hook(pre_hook), module.register_forward_hook(hook)]


class _Rule(torch.autograd.Function):
    """Identity on the module's output whose backward applies a DeepLIFT rule to the input."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, module: nn.Module, max_rule: bool) -> Tensor:
        ctx.save_for_backward(x.detach(), y)
        ctx.module, ctx.max_rule = module, max_rule
        return y.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        x, y = ctx.saved_tensors
        return _rule_multipliers(ctx.module, x, y, grad, ctx.max_rule), None, None, None


def _rule_multipliers(module: nn.Module, x: Tensor, y: Tensor, grad: Tensor, max_rule: bool) -> Tensor:
    """Input multipliers of the first half (the second half, the reference, gets zeros)."""
    n = len(x) // 2
    x1, x0, y1, y0, g = x[:n], x[n:], y[:n], y[n:], grad[:n]
    if max_rule:
        # Cross-max rule: each window's change max(x) - max(x0) is split between the arg-max
        # of the input and of the reference; the last block is the plain gradient.
        top = torch.maximum(y1, y0)
        cotangent = torch.cat([g * (top - y0), g * (y1 - top), g])
        pulled = _vjp(module, torch.cat([x1, x0, x1]), cotangent)
        moved, local = pulled[:n] + pulled[n : 2 * n], pulled[2 * n :]
    else:
        moved, local = g * (y1 - y0), _vjp(module, x1, g)
    dx = x1 - x0
    unchanged = dx.abs() < EPS
    multipliers = torch.where(unchanged, local, moved / torch.where(unchanged, torch.ones_like(dx), dx))
    return torch.cat([multipliers, torch.zeros_like(multipliers)])


def _vjp(module: nn.Module, x: Tensor, cotangent: Tensor) -> Tensor:
    """Gradient of the module (its ``forward``, so no hooks run) at ``x`` times ``cotangent``."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(module.forward(leaf.clone()), leaf, cotangent)
    return grad


def output_multipliers(target: Target, output: Tensor, reference: Tensor) -> Tensor:
    """Multipliers m (N, D) at the model output with sum_d m_d (e_d - e0_d) = t(e) - t(e0)."""
    if isinstance(target, SimilarityTarget):
        m = cosine_multipliers(output, reference, target.reference.to(output.device))
        return m if target.mode == "similar" else -m
    t = (torch.arange(IG_STEPS, device=output.device, dtype=output.dtype) + 0.5) / IG_STEPS
    path = (reference + t[:, None, None] * (output - reference)).flatten(0, 1).requires_grad_(True)
    index = torch.arange(len(output), device=output.device).repeat(IG_STEPS)
    (grad,) = torch.autograd.grad(target.select(index)(path).sum(), path)
    return grad.view(IG_STEPS, *output.shape).mean(dim=0)


def cosine_multipliers(e: Tensor, e0: Tensor, partner: Tensor) -> Tensor:
    """Exact multipliers of g(e) = cos(e, partner) from e0 to e (see :class:`LiftCAM`)."""
    direction = F.normalize(partner, dim=1)
    u, u0 = (e * direction).sum(dim=1), (e0 * direction).sum(dim=1)
    v, v0 = e.norm(dim=1).clamp_min(1e-12), e0.norm(dim=1).clamp_min(1e-12)
    m_u = 0.5 * (1.0 / v + 1.0 / v0)
    m_v = -0.5 * (u + u0) / (v * v0)
    return m_u[:, None] * direction + (m_v / (v + v0))[:, None] * (e + e0)


def _check_summation(total: Tensor, delta: Tensor, tolerance: float) -> None:
    """Warn when sum_k phi_k misses s(A) - s(0): the head has a nonlinearity no rule covers."""
    gap = (total - delta).abs()
    scale = delta.abs() + total.abs() + 1e-6
    if bool((gap > tolerance * scale + 1e-5).any()):
        warnings.warn(
            f"LIFT-CAM weights miss summation-to-delta by up to {gap.max().item():.3g} "
            f"(s(A) - s(0) up to {delta.abs().max().item():.3g}): the head after the CAM layer "
            "has a nonlinearity that is not an activation or max-pool module (e.g. F.relu in a "
            "forward), which got plain gradients",
            RuntimeWarning,
            stacklevel=4,
        )
