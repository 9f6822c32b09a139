"""The Explainer base class: one place for input checks, autograd hygiene and post-processing.

Every explainer holds options only (no model reference), so it can be built from YAML before the
model exists. ``__call__`` wraps the method-specific :meth:`Explainer.explain` in the guarantees
docs/design.md ("Core contracts") fixes: eval mode during the call with every module's flag
restored afterwards, gradients enabled even under ``torch.no_grad()``/``torch.inference_mode()``
(Lightning validates under both), float32 even inside an autocast region, float32 inputs and
outputs for bf16/fp16 models (:func:`float32_interface`), and the shared ReLU -> upsample ->
min-max post-processing.
"""

from __future__ import annotations

import itertools
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facexai.explain.targets import ClassTarget, Target


class Explainer(ABC):
    """Base class of all explainers.

    Subclasses implement :meth:`explain`, which returns a raw, signed map per sample at any
    resolution; the base class validates inputs, restores model state and post-processes.
    """

    #: registry name, set by :func:`facexai.explain.register_explainer`
    name: str = ""
    #: why the method cannot be traced into an ONNX graph (:mod:`facexai.export`), ``None`` where
    #: it can; a method sets ``None`` once its :meth:`explain_for_tracing` traces (the export
    #: then checks the graph against PyTorch). Unknown methods are refused.
    not_exportable: ClassVar[str | None] = "it does not declare itself traceable into ONNX"

    def __call__(self, model: nn.Module, images: Tensor, target: Target | None = None) -> Tensor:
        """Explain ``target`` for ``images`` under ``model``.

        Args:
            model: maps a normalised image batch (N, 3, H, W) to logits or embeddings.
            images: normalised image batch (N, 3, H, W), finite floats.
            target: what to explain; ``None`` explains the predicted class of a classifier.

        Returns:
            Maps (N, H, W), float32 in [0, 1], on the images' device.
        """
        check_images(images)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        with explanation_mode(model), float32_interface(model):
            images = images.detach().to(torch.float32).clone()
            target = self._resolve_target(model, images, target)
            raw = self.explain(model, images, target).detach()
            warn_empty_maps(self.name or type(self).__name__, raw)
            return postprocess(raw, images.shape[-2:])

    @abstractmethod
    def explain(self, model: nn.Module, images: Tensor, target: Target) -> Tensor:
        """Method-specific raw maps (N, h, w), signed, before ReLU/upsampling/normalisation."""

    def explain_for_tracing(self, model: nn.Module, images: Tensor, target: Target) -> Tensor:
        """:meth:`explain` as the ONNX export traces it: no Python branch on tensor values.

        A traced graph cannot follow ``if bool((x < 0).any())``. The default is :meth:`explain`
        itself; a method overrides this where its code branches on values only for a diagnostic
        (LIFT-CAM's summation check) or a shortcut that changes no number (FG-CAM's z+ rule).
        """
        return self.explain(model, images, target)

    def export_refusal(self) -> str | None:
        """Why this instance cannot be exported to ONNX, ``None`` where it can.

        The class's :attr:`not_exportable`; a method overrides this when some option values
        have no ONNX form.
        """
        return self.not_exportable

    def _resolve_target(self, model: nn.Module, images: Tensor, target: Target | None) -> Target:
        if target is None:
            with torch.no_grad():
                output = model(images)
            if output.dim() != 2:
                raise ValueError(
                    "target=None explains the predicted class, which needs logits (N, K); "
                    f"the model returned shape {tuple(output.shape)}. Pass a ClassTarget or "
                    "SimilarityTarget"
                )
            target = ClassTarget(output.argmax(dim=1))
        if not isinstance(target, Target):
            raise TypeError(f"target must be a ClassTarget, SimilarityTarget or None, got {type(target).__name__}")
        target.check(len(images))
        # Re-create the target's tensors here: ones made under inference_mode cannot be saved
        # for backward, and the explainer must own copies on the images' device.
        return target.to(images.device).select(torch.arange(len(target), device=images.device))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"


class EmptyMapWarning(UserWarning):
    """A map has no positive evidence at all, so the [0, 1] map shown for it is a blank.

    Maps are ReLU'd before min-max normalisation: a raw map with no positive value becomes all
    zeros, which a heatmap grid would show as "nothing matters here", indistinguishable from a
    failure. It means the method found only evidence *against* the target (or none): e.g.
    Grad-CAM or LIFT-CAM on a score that decreases with every feature. Explaining the opposite
    target (``mode="dissimilar"`` for face pairs, another class) usually shows that evidence.
    """


def empty_map_indices(raw: Tensor) -> list[int]:
    """Indices of raw maps (N, h, w) with no positive value (max <= 0: all zero after ReLU).

    Checked before upsampling and min-max: bilinear upsampling of a ReLU'd map is non-negative
    and zero exactly where all its source pixels are, so the raw maximum decides.
    """
    peaks = raw.flatten(1).amax(dim=1)
    return [int(i) for i in torch.nonzero(~(peaks > 0)).flatten()]  # NaN peaks count as empty


def warn_empty_maps(method: str, raw: Tensor) -> None:
    """One :class:`EmptyMapWarning` per call naming ``method`` and the samples with empty maps."""
    if raw.dim() != 3:
        return  # postprocess reports the shape error
    empty = empty_map_indices(raw)
    if not empty:
        return
    shown = ", ".join(map(str, empty[:20])) + (", ..." if len(empty) > 20 else "")
    warnings.warn(
        f"{method}: {len(empty)} of {len(raw)} maps have no positive evidence (raw maximum <= 0) "
        f"and are returned as all zeros, not as an explanation: samples [{shown}]. Everything "
        "the method weighs there lowers the target's score; explain the opposite target "
        "(e.g. mode='dissimilar' for face pairs) to see that evidence",
        EmptyMapWarning,
        stacklevel=3,
    )


def check_images(images: Any) -> None:
    """Raise a clear error unless ``images`` is a finite float batch (N, 3, H, W)."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise TypeError(f"images must be floating point (normalised), got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or Inf values")


def check_positive(name: str, value: object, integer: bool = False) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``value`` is a positive (integer) number."""
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


@contextmanager
def explanation_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, gradients on, float32, for the duration of one explanation.

    Every module's ``training`` flag is restored afterwards, also after an exception, so an
    explainer called from a training loop never leaves BatchNorm or Dropout switched.
    """
    # Parameters are frozen for the call: explanations need gradients with respect to
    # activations or inputs only, and autograd then records no graph for weight gradients
    # (less memory; a last-layer CAM records nothing below its layer).
    grad_flags = [(param, param.requires_grad) for param in model.parameters()]
    device_type = _device_type(model)
    try:
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            torch.autocast(device_type=device_type, enabled=False),
            eval_mode(model),
        ):
            for param, _ in grad_flags:
                param.requires_grad_(False)
            yield
    finally:
        for param, flag in grad_flags:
            param.requires_grad_(flag)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode for the block; each module's *own* flag restored afterwards.

    ``model.train(was_training)`` would not do: it sets one flag on every sub-module, so a
    BatchNorm frozen inside a training model (fine-tuning) would come back in train mode and
    update its statistics. The one place facexai saves and restores module modes.
    """
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def low_precision_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter (or buffer) unless it is float32.

    ``None`` for float32 models and models without floating tensors: nothing to adapt.
    """
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return None if tensor.dtype == torch.float32 else tensor.dtype
    return None


@contextmanager
def float32_interface(model: nn.Module) -> Iterator[None]:
    """The model takes float32 inputs and returns float32 outputs, whatever its own dtype.

    A bf16/fp16 model (Lightning ``precision="bf16-true"``/``"16-true"``) refuses float32
    images; explainers keep their inputs, iterates and map arithmetic in float32 (FAME's
    1/255 steps vanish when added to a bf16 image near 1, whose spacing is 2**-7). Two hooks
    on the model itself cast floating inputs to the dtype its parameters have *at call time*
    (so a call with float32 parameters swapped in, as FG-CAM's, is fed float32) and floating
    outputs to float32; both casts are differentiable. Float32 models get no hooks at all.
    """
    if low_precision_dtype(model) is None:
        yield
        return

    def cast_inputs(module: nn.Module, args: tuple) -> tuple:
        dtype = low_precision_dtype(module) or torch.float32
        return tuple(arg.to(dtype) if isinstance(arg, Tensor) and arg.is_floating_point() else arg for arg in args)

    def cast_output(module: nn.Module, args: tuple, output: object) -> object:
        if isinstance(output, Tensor) and output.is_floating_point():
            return output.float()
        return output

    handles = [
        model.register_forward_pre_hook(cast_inputs, prepend=True),
        model.register_forward_hook(cast_output),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def float32_forward(model: nn.Module, images: Tensor) -> Tensor:
    """``model(images)`` computed with float32 copies of a bf16/fp16 model's weights.

    For methods whose arithmetic inside the network needs float32 (the model's hooks still run,
    on float32 tensors): FG-CAM's ratio rules divide by contributions that nearly cancel (z+ on
    signed inputs is a difference of two sums; residual splits divide by a + b), and bf16 keeps
    8 significant bits (relative rounding 2**-9 = 0.2 %), so in bf16 those quotients are
    rounding noise (maps of a calibrated bf16 IResNet reached Pearson 0.79-0.93 against the
    float32 model's). LIFT-CAM's summation-to-delta check compares sums of hundreds of terms
    that cancel; with bf16 gradients the gap reached 8 % of s(A) - s(0) on an exact linear head.
    The maps are then those of a float32 model with the bf16-rounded weights. The copies live
    for this one pass (the float32 size of the weights, about 100 MB for IResNet-50); float32
    models run as they are.
    """
    if low_precision_dtype(model) is None:
        return model(images)
    state = {
        name: tensor.float() if tensor.is_floating_point() else tensor
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers())
    }
    return torch.func.functional_call(model, state, (images,))


def _device_type(model: nn.Module) -> str:
    for tensor in model.parameters():
        return tensor.device.type
    return "cpu"


def postprocess(maps: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """ReLU, bilinear upsampling to ``size`` (align_corners=False), per-map min-max to [0, 1].

    A constant map (no evidence at all) becomes all zeros instead of 0/0 = NaN.
    """
    if maps.dim() != 3:
        raise ValueError(f"raw maps must have shape (N, h, w), got {tuple(maps.shape)}")
    maps = torch.relu(maps.float())
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return minmax(maps)


def minmax(maps: Tensor) -> Tensor:
    """Per-map min-max normalisation of (N, H, W) to [0, 1]; constant maps become zeros."""
    flat = maps.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    span = flat.max(dim=1).values[:, None, None] - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - low) / safe, torch.zeros_like(maps))
