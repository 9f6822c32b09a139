"""Which propagation rule a layer gets: one classification shared by LIFT-CAM and FG-CAM.

Both methods replace the ordinary gradient of some layers by a rule, attached as temporary
hooks: LIFT-CAM by a DeepLIFT rule (:mod:`facexai.explain.liftcam`), FG-CAM by an LRP ratio rule
(:mod:`facexai.explain._lrp`). Layers are recognised by class family, never by architecture, so
the rules hold for torchvision, timm and converted ONNX graphs alike. A layer's kind is the first
row of :data:`LAYER_RULES` that matches its class:

=====================  ==========================================  ========  ===========
kind                   matched by                                  LIFT-CAM  FG-CAM
=====================  ==========================================  ========  ===========
max_pool               a class named ``*MaxPool*`` (not            max       --
                       fractional)
linear                 convolutions, ``nn.Linear``                 --        linear
relu_like              ``nn.ReLU``, ``nn.PReLU``, ``nn.LeakyReLU``  rescale   --
pass_through           ``nn.Identity``, dropout                    --        --
not_elementwise        a class named Softmax, Softmin,             --        --
                       LogSoftmax, Softmax2d, GLU or
                       MultiheadAttention
norm                   BatchNorm, InstanceNorm, GroupNorm,         --        elementwise
                       LayerNorm
activation             classes of ``torch.nn.modules.activation``  rescale   elementwise
                       or ``timm.layers.activations*``
gate                   channel-attention gates (SE, ECA,           --        elementwise
                       gather-excite class names)
activation_lookalike   any other class from a module whose path    rescale   --
                       contains "activation" (onnx2torch's)
other                  everything else                             --        --
=====================  ==========================================  ========  ===========

"--" is the ordinary gradient. Why the columns differ:

- LIFT-CAM needs rules only where the head is *nonlinear*: linear layers (convolutions, eval-mode
  norms, average pools) have exact multipliers in their gradient. Max-pooling gets DeepLIFT's
  max rule, element-wise nonlinearities the Rescale rule (ReLU included: Rescale is not its
  gradient). It casts a wide net (``activation_lookalike``): Rescale is exact on any element-wise
  map, a module that is not one is caught by the shape check in the hook or by the
  summation-to-delta check after every call.
- FG-CAM's relevance is ``x * gradient``, which already is the LRP ratio rule for positively
  homogeneous, bias-free ops (``relu_like``, max-pooling, dropout, reshapes). Convolutions and
  linear layers get the z+ / z^B rules, norms, smooth activations and gates pass relevance
  through unchanged. It has no check that would catch a wrong guess, so it trusts only torch's
  and timm's activation modules and leaves look-alikes their ordinary gradient.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal, NamedTuple

from torch import nn

LiftRule = Literal["max", "rescale"]
FGRule = Literal["linear", "elementwise"]

#: class names that live among the activations but are not element-wise
NOT_ELEMENTWISE = frozenset({"Softmax", "Softmin", "LogSoftmax", "Softmax2d", "GLU", "MultiheadAttention"})
#: channel-attention gates y = x * gate(x) (timm's SE/ECA family, common SE class names): the gate
#: is treated as a constant, so relevance passes through to x (the usual LRP treatment)
GATE_NAMES = re.compile(r"SqueezeExcit|SEModule|SELayer|SEBlock|EcaModule|GatherExcite")
_LINEAR = (nn.modules.conv._ConvNd, nn.Linear)
_RELU_LIKE = (nn.ReLU, nn.PReLU, nn.LeakyReLU)
_PASS_THROUGH = (nn.Identity, nn.modules.dropout._DropoutNd)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class LayerRule(NamedTuple):
    """One row of :data:`LAYER_RULES`: a layer kind and each method's rule for it (None: gradient)."""

    kind: str
    matches: Callable[[nn.Module], bool]
    liftcam: LiftRule | None
    fgcam: FGRule | None


def _class_names(module: nn.Module) -> list[str]:
    return [cls.__name__ for cls in type(module).__mro__]


def _source_modules(module: nn.Module) -> list[str]:
    """Where the module's class and its bases are defined (``nn.Module`` itself excluded)."""
    return [cls.__module__ for cls in type(module).__mro__ if cls is not nn.Module]


def _is_max_pool(module: nn.Module) -> bool:
    return any("MaxPool" in name and "Fractional" not in name for name in _class_names(module))


def _is_not_elementwise(module: nn.Module) -> bool:
    return any(name in NOT_ELEMENTWISE for name in _class_names(module))


def _is_activation(module: nn.Module) -> bool:
    return any(
        source == "torch.nn.modules.activation" or source.startswith("timm.layers.activations")
        for source in _source_modules(module)
    )


def _is_gate(module: nn.Module) -> bool:
    return GATE_NAMES.search(type(module).__name__) is not None


def _is_activation_lookalike(module: nn.Module) -> bool:
    return any("activation" in source for source in _source_modules(module))


def _of_type(types: tuple[type, ...]) -> Callable[[nn.Module], bool]:
    return lambda module: isinstance(module, types)


#: the classification, first match wins (see the module docstring for the why of each column)
LAYER_RULES: tuple[LayerRule, ...] = (
    LayerRule("max_pool", _is_max_pool, "max", None),
    LayerRule("linear", _of_type(_LINEAR), None, "linear"),
    LayerRule("relu_like", _of_type(_RELU_LIKE), "rescale", None),
    LayerRule("pass_through", _of_type(_PASS_THROUGH), None, None),
    LayerRule("not_elementwise", _is_not_elementwise, None, None),
    LayerRule("norm", _of_type(_NORMS), None, "elementwise"),
    LayerRule("activation", _is_activation, "rescale", "elementwise"),
    LayerRule("gate", _is_gate, None, "elementwise"),
    LayerRule("activation_lookalike", _is_activation_lookalike, "rescale", None),
    LayerRule("other", lambda module: True, None, None),
)


def layer_rule(module: nn.Module) -> LayerRule:
    """The first row of :data:`LAYER_RULES` matching the module's class.

    >>> from torch import nn
    >>> layer_rule(nn.GELU()).kind, layer_rule(nn.GELU()).liftcam, layer_rule(nn.GELU()).fgcam
    ('activation', 'rescale', 'elementwise')
    >>> layer_rule(nn.Conv2d(1, 1, 1)).fgcam
    'linear'
    """
    return next(rule for rule in LAYER_RULES if rule.matches(module))
