"""Finding and hooking layers by their dotted names, with hooks that never outlive a call."""

from __future__ import annotations

import difflib
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` in ``model.named_modules()``.

    Raises:
        ValueError: naming the layer and listing the closest valid names.
    """
    if not isinstance(name, str):
        raise TypeError(f"target_layer must be a dotted module name (str), got {type(name).__name__}")
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f" Closest matches: {', '.join(close)}." if close else ""
    raise ValueError(f"Layer {name!r} is not in {type(model).__name__}.{hint}")


def last_feature_layer(model: nn.Module, images: Tensor) -> str:
    """Name of the last module (in completion order) whose output is a 4-D feature map.

    This is the default CAM layer: for a ResNet it is ``layer4``, for a VGG the final pooling of
    ``features``, i.e. the last spatial representation before the head flattens it. Adaptive
    pooling layers and 1x1 outputs belong to the head (a global pool, VGG's resampling
    ``avgpool``) and are skipped.

    The search costs a forward pass, so its answer is remembered per model and input size
    (weakly: a deleted model frees its entry) instead of being repeated on every explainer call.
    """
    size = tuple(images.shape[-2:])
    known = _DEFAULT_LAYERS.setdefault(model, {})
    if size not in known:
        known[size] = _search_last_feature_layer(model, images)
    return known[size]


#: model -> {input (H, W): default CAM layer name}
_DEFAULT_LAYERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = weakref.WeakKeyDictionary()


def _search_last_feature_layer(model: nn.Module, images: Tensor) -> str:
    finished: list[str] = []
    later = _LaterFeatureMaps()

    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            later.depth -= 1
            if _is_feature_map(module, output):
                finished.append(name)
                later.functions.clear()

        return hook

    modules = [(n, m) for n, m in model.named_modules() if n]
    handles = [m.register_forward_pre_hook(later.enter) for _, m in modules]
    handles += [m.register_forward_hook(make_hook(n)) for n, m in modules]
    try:
        with torch.no_grad(), later:
            model(images[:1])
    finally:
        for handle in handles:
            handle.remove()
    if not finished:
        raise ValueError(
            f"{type(model).__name__} has no layer with a 4-D (N, C, h, w) output; "
            "CAM methods need a convolutional feature map"
        )
    _warn_functional_tail(model, finished[-1], later.functions)
    return finished[-1]


class _LaterFeatureMaps(TorchFunctionMode):
    """Records the functions that produce a spatial 4-D map outside every sub-module.

    Functions of the model's own ``forward`` that run after the last module with such an output
    finished are what this catches. A converted ONNX graph (``torch.fx.GraphModule``) computes
    residual additions as ``operator.add`` calls in its own ``forward``, not in modules; if its
    last feature map is such a call, no module holds it and the last module with a 4-D output
    lies *before* it (the native network's block module would have included the addition). This
    is detected by structure (what runs outside every sub-module), not by layer names, so it
    holds for any model; functions inside sub-modules (a block's ``out + identity``) are covered
    by them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0  # sub-modules currently running (the search's forward hooks decrement it)
        self.functions: list[str] = []

    def enter(self, module: nn.Module, args: tuple) -> None:
        """Forward pre-hook: one more sub-module running."""
        self.depth += 1

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: tuple[type, ...],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        output = func(*args, **(kwargs or {}))
        if self.depth == 0 and isinstance(output, Tensor) and output.dim() == 4:
            if output.shape[-2:].numel() > 1:
                self.functions.append(getattr(func, "__name__", repr(func)))
        return output


def _warn_functional_tail(model: nn.Module, layer: str, functions: list[str]) -> None:
    """Warn when the default layer is not the model's last feature map (see above)."""
    if not functions:
        return
    warnings.warn(
        f"The last feature map of {type(model).__name__} is computed by a function outside any "
        f"module ({', '.join(dict.fromkeys(functions))}) after the default CAM layer {layer!r}, "
        "so hooks cannot reach it and CAM maps use the layer before it (e.g. a residual "
        "addition of a converted ONNX graph that no module follows). Pass target_layer to "
        "choose the layer explicitly",
        UserWarning,
        stacklevel=5,
    )


def _is_feature_map(module: nn.Module, output: object) -> bool:
    if not isinstance(output, Tensor) or output.dim() != 4 or output.shape[-2:].numel() <= 1:
        return False
    return not isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))


@contextmanager
def capture_output(
    model: nn.Module,
    name: str,
    replace: Callable[[Tensor], Tensor] | None = None,
) -> Iterator[list[Tensor]]:
    """Record (and optionally replace) the output of layer ``name`` during forward passes.

    Yields a list that receives the (replaced) output of every call; a module called several
    times (torchvision's shared ReLU) appends once per call, the last being the block output.
    The hook is removed when the context exits, also after an exception.
    """
    module = get_layer(model, name)
    store: list[Tensor] = []

    def hook(mod: nn.Module, args: tuple, output: object) -> Tensor:
        if not isinstance(output, Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(f"Layer {name!r} must output a 4-D feature map (N, C, h, w), got {shape}")
        new = replace(output) if replace is not None else output
        store.append(new)
        # Downstream gets a differentiable copy: an in-place op after the layer (VGG's
        # ReLU(inplace=True)) must neither corrupt the recorded activation nor hit a leaf.
        return new.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def as_leaf(output: Tensor) -> Tensor:
    """Detach a layer output into a leaf that requires grad.

    Gradients then stop at the layer: a last-layer CAM pays one forward plus the backward from
    the score to the layer, never a backward into the layers below or into parameters.
    """
    return output.detach().requires_grad_(True)
