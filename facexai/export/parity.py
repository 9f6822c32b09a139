"""onnxruntime vs PyTorch on inputs the exporter never saw.

An export is only useful if the graph computes what the module computes. The check feeds two
kinds of fresh inputs, at a batch size not used for tracing: Gaussian noise (exercises every
value range) and rendered synthetic faces (what the model is for; noise alone can hide problems
in saturated regions), and compares every output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facexai.data.synthetic import generate_faces, sample_identities
from facexai.data.transforms import normalise
from facexai.explain import ClassTarget, Explainer, SimilarityTarget

logger = logging.getLogger(__name__)

#: batch size of the parity inputs; differs from the tracing batch sizes (1 and 2)
PARITY_BATCH = 3
#: largest tolerated |onnxruntime - PyTorch| for any output element
DEFAULT_TOLERANCE = 1e-4
#: relative input change used to measure PyTorch's own float sensitivity (2 float32 ulps)
ROUNDING = 2.0**-22
#: differences up to this multiple of PyTorch's own rounding sensitivity are accepted (per sample)
CONDITIONING_FACTOR = 4.0


@dataclass(frozen=True)
class ParityReport:
    """Largest |onnxruntime - PyTorch| per output over all parity inputs.

    ``noise_floor`` holds, for outputs where PyTorch itself is not reproducible at the tolerance,
    how far PyTorch's own output moves under float32 rounding of the input (see
    :func:`noise_floor`); it is empty when every output met the strict tolerance.
    """

    max_abs_diff: dict[str, float]
    noise_floor: dict[str, float] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        """The largest difference over all outputs."""
        return max(self.max_abs_diff.values())


def parity_images(input_size: int, batch: int = PARITY_BATCH, seed: int = 20240611) -> dict[str, Tensor]:
    """Normalised image batches (N, 3, S, S): Gaussian noise and synthetic faces."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, 3, input_size, input_size, generator=generator)
    identities = sample_identities(batch, torch.Generator().manual_seed(seed + 1))
    faces, _ = generate_faces(torch.arange(batch), identities, input_size, seed + 2)
    return {"noise": noise, "faces": torch.stack([normalise(face) for face in faces])}


def to_graph_input(images: Tensor, raw_pixels: bool) -> np.ndarray:
    """What the graph expects: normalised images, or pixel values for a raw-pixel graph."""
    if raw_pixels:
        images = images * 127.5 + 127.5
    return images.numpy().astype(np.float32)


def session(path: str | Path) -> ort.InferenceSession:
    """A CPU onnxruntime session (CPU so that the check is deterministic and everywhere)."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_parity(
    path: str | Path,
    reference: Callable[[Tensor, Tensor | None], dict[str, Tensor]],
    make_target: Callable[[Tensor], Tensor] | None,
    input_size: int,
    raw_pixels: bool,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityReport:
    """Run the ONNX file and ``reference`` on fresh inputs; raise if they differ by > ``tolerance``.

    Args:
        path: the exported ONNX file.
        reference: PyTorch computation ``(images, target) -> {output name: tensor}``.
        make_target: target tensor for an explained graph's second input; ``None`` for plain.
        input_size: square input side.
        raw_pixels: the graph takes pixel values instead of normalised images.
        tolerance: the largest allowed absolute difference.

    Raises:
        ValueError: naming the output, input set and difference when the check fails.
    """
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    worst: dict[str, float] = {}
    floors: dict[str, float] = {}
    for kind, images in parity_images(input_size).items():
        target = make_target(images) if make_target is not None else None
        feeds = {sess.get_inputs()[0].name: to_graph_input(images, raw_pixels)}
        if target is not None:
            feeds[sess.get_inputs()[1].name] = target.numpy()
        got = dict(zip(names, sess.run(names, feeds), strict=True))
        for name, value in reference(images, target).items():
            diff = np.abs(got[name] - value.detach().numpy()).reshape(len(images), -1).max(axis=1)
            logger.info("parity %s on %s: max abs diff %.3g", name, kind, diff.max())
            worst[name] = max(worst.get(name, 0.0), float(diff.max()))
            if not (diff <= tolerance).all():  # also catches NaN
                floor = noise_floor(reference, images, target, name)
                _accept_or_raise(name, kind, diff, floor, tolerance, path)
                floors[name] = max(floors.get(name, 0.0), float(floor.max()))
    return ParityReport(worst, floors)


def noise_floor(
    reference: Callable[[Tensor, Tensor | None], dict[str, Tensor]], images: Tensor, target: Tensor | None, name: str
) -> np.ndarray:
    """Per sample, how far PyTorch's own output ``name`` moves when the input moves by rounding.

    onnxruntime and PyTorch kernels round differently, so an output that PyTorch cannot
    reproduce under a 2-ulp relative input change cannot be matched more closely by any export:
    the method is ill-conditioned there (FG-CAM's ratio rules divide by near-zero
    contributions). Two random nudges; the larger change counts.
    """
    base = reference(images, target)[name]
    moved = []
    for seed in (0, 1):
        sign = torch.randint(0, 2, images.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        moved.append((reference(images * (1 + sign * ROUNDING), target)[name] - base).abs().flatten(1).amax(1))
    return torch.stack(moved).amax(0).numpy()


def _accept_or_raise(
    name: str, kind: str, diff: np.ndarray, floor: np.ndarray, tolerance: float, path: str | Path
) -> None:
    """Accept differences within ``tolerance + CONDITIONING_FACTOR * floor`` per sample, else raise."""
    allowed = tolerance + CONDITIONING_FACTOR * floor
    bad = ~(diff <= allowed)
    if bad.any():
        k = int(np.argmax(np.where(bad, diff, -1.0)))
        raise ValueError(_mismatch(name, kind, float(diff[k]), tolerance, float(floor[k]), path))
    logger.warning(
        "ONNX output %r differs from PyTorch by up to %.3g on %s inputs (tolerance %g), within %g x "
        "PyTorch's own change under float32 rounding of the input (%.3g): the output is "
        "ill-conditioned on this model, not mis-exported",
        name, float(diff.max()), kind, tolerance, CONDITIONING_FACTOR, float(floor.max()),
    )


def _mismatch(name: str, kind: str, diff: float, tolerance: float, floor: float, path: str | Path) -> str:
    message = (
        f"ONNX output {name!r} differs from PyTorch by {diff:.3g} on {kind} inputs (tolerance {tolerance:g}); "
    )
    if floor <= tolerance:
        return message + (
            f"PyTorch itself is stable there (it moves by {floor:.3g} under float32 rounding of the input), "
            f"so the export of {path} is not faithful"
        )
    return message + (
        f"PyTorch's own {name!r} moves by {floor:.3g} when the input moves by float32 rounding (relative "
        f"{ROUNDING:.2g}), which explains at most {CONDITIONING_FACTOR:g} x that; the export of {path} is "
        "not faithful or the computation is too ill-conditioned on this model to check"
    )


def plain_reference(net: nn.Module, output_name: str) -> Callable[[Tensor, Tensor | None], dict[str, Tensor]]:
    """PyTorch reference of a plain graph: the network's output."""

    def run(images: Tensor, target: Tensor | None) -> dict[str, Tensor]:
        with torch.no_grad():
            return {output_name: net(images)}

    return run


def explained_reference(
    net: nn.Module, explainer: Explainer, task: str
) -> Callable[[Tensor, Tensor | None], dict[str, Tensor]]:
    """PyTorch reference of an explained graph, through the public ``explainer(model, ...)``."""

    def run(images: Tensor, target: Tensor | None) -> dict[str, Tensor]:
        with torch.no_grad():
            output = net(images)
        scored = SimilarityTarget(target) if task == "verification" else ClassTarget(target)
        result = {"output": output, "map": explainer(net, images, scored)}
        if task == "verification":
            result["similarity"] = F.cosine_similarity(output, target, dim=1)
        return result

    return run


def target_maker(net: nn.Module, task: str) -> Callable[[Tensor], Tensor]:
    """Realistic targets: the partner image's embedding (the next sample), or the predicted class."""

    def make(images: Tensor) -> Tensor:
        with torch.no_grad():
            output = net(images)
        if task == "verification":
            return output.roll(1, dims=0).contiguous()
        return output.argmax(dim=1)

    return make
