"""onnxruntime vs PyTorch on inputs the exporter never saw.

An export is only useful if the graph computes what the module computes. The check feeds two
kinds of fresh inputs, at a batch size not used for tracing: Gaussian noise (exercises every
value range) and rendered synthetic faces (what the model is for; noise alone can hide problems
in saturated regions), and compares every output.

The comparison is strict: every output element within the tolerance (1e-4 by default), for
every explainer. A model that is not deterministic in eval mode (dropout left on, noise added in
``forward``) is refused first, since no export can be checked against a reference that changes
from run to run. Where a difference is over the tolerance, the error also says how far PyTorch's
own output moves under float32 rounding of the input (:func:`noise_floor`), which tells an
ill-conditioned computation (e.g. FG-CAM, whose ratio rules divide by near-cancelling
contributions: on iresnet_mini with any BatchNorm affine but the init one, calibrated statistics
or not) from a mis-export; neither is accepted.

Explainer maps are checked on both input kinds, like every output: checking them on faces only
would not make FG-CAM verifiable (on the export tests' iresnet_mini its map moves by 0.03-0.04 under
rounding on faces, vs 0.06 / 4.5e-4 on noise, random / briefly trained; see
tests/export/test_explained.py) and would drop the value-range coverage noise gives.
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
from facexai.export.errors import ExportError

logger = logging.getLogger(__name__)

#: batch size of the parity inputs; differs from the tracing batch sizes (1 and 2)
PARITY_BATCH = 3
#: largest tolerated |onnxruntime - PyTorch| for any output element
DEFAULT_TOLERANCE = 1e-4
#: relative input change used to measure PyTorch's own float sensitivity (2 float32 ulps)
ROUNDING = 2.0**-22
#: two PyTorch runs on the same input may differ by float reordering only (np.allclose terms)
DETERMINISM_RTOL, DETERMINISM_ATOL = 1e-5, 1e-6


@dataclass(frozen=True)
class ParityReport:
    """Largest |onnxruntime - PyTorch| per output over all parity inputs.

    ``noise_floor`` is always empty: differences over the tolerance are refused, never accepted
    as ill-conditioning. The field stays for callers written when they were.
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
    shown: str | Path | None = None,
) -> ParityReport:
    """Run the ONNX file and ``reference`` on fresh inputs; raise if they differ by > ``tolerance``.

    Args:
        path: the exported ONNX file.
        reference: PyTorch computation ``(images, target) -> {output name: tensor}``.
        make_target: target tensor for an explained graph's second input; ``None`` for plain.
        input_size: square input side.
        raw_pixels: the graph takes pixel values instead of normalised images.
        tolerance: the largest allowed absolute difference.
        shown: the path errors name (the final output; ``path`` may be a temporary sibling).

    Raises:
        ExportError: PyTorch is not deterministic on the same input, or an output differs by
            more than ``tolerance`` (naming the output, input set, difference and PyTorch's own
            rounding sensitivity there).
    """
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    worst: dict[str, float] = {}
    for kind, images in parity_images(input_size).items():
        target = make_target(images) if make_target is not None else None
        expected = deterministic_reference(reference, images, target, kind)
        feeds = {sess.get_inputs()[0].name: to_graph_input(images, raw_pixels)}
        if target is not None:
            feeds[sess.get_inputs()[1].name] = target.numpy()
        got = dict(zip(names, sess.run(names, feeds), strict=True))
        for name, value in expected.items():
            diff = np.abs(got[name] - value).reshape(len(images), -1).max(axis=1)
            logger.info("parity %s on %s: max abs diff %.3g", name, kind, diff.max())
            worst[name] = max(worst.get(name, 0.0), float(diff.max()))
            if not (diff <= tolerance).all():  # also catches NaN
                k = int(np.nanargmax(np.where(np.isnan(diff), np.inf, diff)))
                floor = noise_floor(reference, images, target, name)
                raise ExportError(_mismatch(name, kind, float(diff[k]), tolerance, float(floor[k]), shown or path))
    return ParityReport(worst)


def deterministic_reference(
    reference: Callable[[Tensor, Tensor | None], dict[str, Tensor]], images: Tensor, target: Tensor | None, kind: str
) -> dict[str, np.ndarray]:
    """PyTorch's outputs on ``images``, after checking that a second run gives the same.

    A model with randomness left in eval mode (dropout in train mode, ``torch.randn`` in
    ``forward``) has no single output to compare the graph with; before this check such noise
    looked like an ill-conditioned output and was accepted.

    Raises:
        ExportError: the two runs differ beyond float reordering (names the output and by how much).
    """
    first, second = reference(images, target), reference(images, target)
    outputs = {}
    for name, value in first.items():
        a, b = value.detach().numpy(), second[name].detach().numpy()
        if not np.allclose(a, b, rtol=DETERMINISM_RTOL, atol=DETERMINISM_ATOL, equal_nan=True):
            raise ExportError(
                f"model is not deterministic in eval mode: two PyTorch runs on the same {kind} input differ by "
                f"{float(np.nanmax(np.abs(a - b))):.3g} in {name!r} (random ops in forward, or dropout/noise "
                "layers that ignore eval()); its export cannot be checked, so it is refused"
            )
        outputs[name] = a
    return outputs


def noise_floor(
    reference: Callable[[Tensor, Tensor | None], dict[str, Tensor]], images: Tensor, target: Tensor | None, name: str
) -> np.ndarray:
    """Per sample, how far PyTorch's own output ``name`` moves when the input moves by rounding.

    A diagnostic for the parity error only: an output that PyTorch cannot reproduce under a
    2-ulp relative input change is ill-conditioned there (FG-CAM's ratio rules divide by
    near-zero contributions, e.g. behind BatchNorm shifts or mismatched statistics), which the
    error then says; the export is refused either way. Two random nudges; the larger change counts.
    """
    base = reference(images, target)[name]
    moved = []
    for seed in (0, 1):
        sign = torch.randint(0, 2, images.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        moved.append((reference(images * (1 + sign * ROUNDING), target)[name] - base).abs().flatten(1).amax(1))
    return torch.stack(moved).amax(0).numpy()


def _mismatch(name: str, kind: str, diff: float, tolerance: float, floor: float, path: str | Path) -> str:
    """One line: the difference, and whether PyTorch itself is stable there (a diagnostic only)."""
    message = (
        f"ONNX output {name!r} of {path} differs from PyTorch by {diff:.3g} on {kind} inputs "
        f"(tolerance {tolerance:g}); "
    )
    if floor <= tolerance:
        return message + (
            f"PyTorch itself is stable there (it moves by {floor:.3g} under float32 rounding of the input), "
            "so the export is not faithful"
        )
    return message + (
        f"PyTorch's own {name!r} moves by {floor:.3g} when the input moves by float32 rounding (relative "
        f"{ROUNDING:.2g}): the computation is ill-conditioned on this model (for FG-CAM: its ratio rules divide "
        "by near-cancelling contributions, e.g. behind BatchNorm shifts or statistics that do not match the "
        "activations), and such an export cannot be verified; export another explainer (e.g. liftcam, "
        "gradcam) or the plain model and explain it with `facexai explain`/`evaluate`"
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
        if target is None:
            raise ValueError("an explained graph is checked with a target per image")
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
