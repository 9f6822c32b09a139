"""facexai CAMs side by side with pytorch-grad-cam (PyPI ``grad-cam``) and captum.

Each pair runs on the same model, layer, images and target. Maps of both libraries go through
the same post-processing (:func:`facexai.explain.postprocess`: ReLU, bilinear upsampling with
``align_corners=False``, per-map min-max); pytorch-grad-cam returns maps it already rectified,
resized (cv2 bilinear, half-pixel centres like ``align_corners=False``) and min-maxed, so for it
the second pass is the identity up to rounding. Agreement is the mean per-sample Pearson
correlation of the flattened maps; samples where either map is constant are left out.

Both libraries are optional benchmark extras: a missing one yields rows with a ``skipped`` note.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facexai.explain import ClassTarget, SimilarityTarget, Target, postprocess
from facexai.explain.layers import get_layer

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's Score-CAM prints a bar per image

#: facexai method -> pytorch-grad-cam class name
GRAD_CAM_CLASSES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "scorecam": "ScoreCAM"}


@dataclass
class Pair:
    """One comparison: which facexai method against which other implementation."""

    method: str
    library: str
    other: str


def available(package: str) -> bool:
    """Whether ``package`` can be imported (without importing it)."""
    return importlib.util.find_spec(package) is not None


def comparison_pairs(methods: list[str]) -> list[Pair]:
    """Every comparison that applies to the selected facexai methods."""
    pairs = [Pair(m, "pytorch-grad-cam", cls) for m, cls in GRAD_CAM_CLASSES.items() if m in methods]
    if "gradcam" in methods:
        pairs.append(Pair("gradcam", "captum", "LayerGradCam"))
    return pairs


def _per_sample_score(target: Target, index: int) -> Callable[[Tensor], Tensor]:
    """pytorch-grad-cam's target protocol: a callable on one sample's output (K,) or (D,)."""
    if isinstance(target, ClassTarget):
        label = int(target.labels[index])
        return lambda output: output[..., label]
    reference = target.reference[index]
    return lambda output: F.cosine_similarity(output.reshape(1, -1), reference.to(output).reshape(1, -1))[0]


def grad_cam_runner(pair: Pair, model: nn.Module, layer: str, images: Tensor, target: Target) -> Callable[[], Tensor]:
    """A no-argument function returning pytorch-grad-cam maps (N, H, W) as a tensor."""
    import pytorch_grad_cam

    cls = getattr(pytorch_grad_cam, pair.other)
    targets = [_per_sample_score(target, i) for i in range(len(images))]

    def run() -> Tensor:
        # Constructed per call: hooks are registered at construction and removed on exit.
        with cls(model=model, target_layers=[get_layer(model, layer)]) as cam:
            maps = cam(input_tensor=images, targets=targets)
        return torch.from_numpy(maps).to(images.device)

    return run


def captum_runner(model: nn.Module, layer: str, images: Tensor, target: Target) -> Callable[[], Tensor]:
    """A no-argument function returning captum ``LayerGradCam`` raw maps (N, h, w)."""
    from captum.attr import LayerGradCam

    if isinstance(target, SimilarityTarget):
        reference = target.reference.to(images.device)

        def forward(x: Tensor) -> Tensor:
            return F.cosine_similarity(model(x), reference, dim=1)

        explainer, label = LayerGradCam(forward, get_layer(model, layer)), None
    else:
        explainer, label = LayerGradCam(model, get_layer(model, layer)), target.labels.to(images.device)

    def run() -> Tensor:
        return explainer.attribute(images, target=label)[:, 0].detach()

    return run


def other_runner(pair: Pair, model: nn.Module, layer: str, images: Tensor, target: Target) -> Callable[[], Tensor]:
    """The runner of the other library's implementation in ``pair``."""
    if pair.library == "captum":
        return captum_runner(model, layer, images, target)
    return grad_cam_runner(pair, model, layer, images, target)


def pearson(a: Tensor, b: Tensor) -> tuple[float, int]:
    """Mean per-sample Pearson correlation of maps (N, H, W) and how many samples it covers.

    A sample whose map is constant in either set (e.g. all zero after the ReLU, common for
    random weights) has no correlation and is left out; NaN if that leaves none.
    """
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denominator = a.norm(dim=1) * b.norm(dim=1)
    valid = denominator > 0
    if not valid.any():
        return float("nan"), 0
    return float(((a * b).sum(1)[valid] / denominator[valid]).mean()), int(valid.sum())


def agreement(ours: Tensor, theirs: Tensor, size: torch.Size) -> tuple[float, int]:
    """Pearson agreement (and samples covered) after the identical post-processing of both sets."""
    return pearson(postprocess(ours.float(), size), postprocess(theirs.float(), size))
