"""What a loaded face model expects as input, and the adapter to facexai's canonical input.

Everything in facexai (datasets, explainers, metrics) feeds faces as RGB ``(pixel - 127.5) /
127.5``, the insightface ArcFace convention. Files in the wild differ: mxnet-converted ONNX
models normalise inside the graph and take raw pixels, some take BGR. :class:`CanonicalInput`
converts canonical input into the file's layout before the network, so the rest of facexai never
needs to know the difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

SOURCES = ("state_dict", "lightning", "onnx")
CHANNEL_ORDERS = ("RGB", "BGR")
#: the pixel mean / std of facexai's canonical input, (pixel - 127.5) / 127.5
CANONICAL = 127.5


@dataclass(frozen=True)
class InputLayout:
    """How the *file's* network wants its input: ``(pixel[channel_order] - mean) / std``.

    Attributes:
        size: square input side in pixels.
        mean: per-channel pixel mean (0..255 units) in the network's channel order, i.e. for a
            BGR network ``mean[0]`` is the blue mean.
        std: per-channel pixel std in the same order.
        channel_order: "RGB" or "BGR".
    """

    size: int
    mean: tuple[float, float, float] = (CANONICAL, CANONICAL, CANONICAL)
    std: tuple[float, float, float] = (CANONICAL, CANONICAL, CANONICAL)
    channel_order: str = "RGB"

    @property
    def canonical(self) -> bool:
        """Whether facexai's canonical input can be fed unchanged."""
        flat = set(self.mean) | set(self.std)
        return self.channel_order == "RGB" and flat == {CANONICAL}


@dataclass(frozen=True)
class FaceModelInfo:
    """Where a loaded face model came from and how it was checked (``model.face_model_info``).

    Attributes:
        source: "state_dict", "lightning" or "onnx".
        path: the file it was read from.
        input_size: square input side the returned model takes.
        embedding_size: width D of its (N, D) output.
        layout: the file network's own input layout (the returned model always takes canonical
            input; a non-canonical layout means it is wrapped in :class:`CanonicalInput`).
        parity_cosine: smallest per-sample cosine between the returned model and onnxruntime on
            the probe batch; None when not measured (PyTorch files, or ``check_parity=False``).
    """

    source: str
    path: str
    input_size: int
    embedding_size: int
    layout: InputLayout
    parity_cosine: float | None = None


def attach_info(model: nn.Module, info: FaceModelInfo) -> None:
    """Record ``info`` as ``model.face_model_info``, where callers and tests read it.

    ``nn.Module.__setattr__`` is annotated for tensors and modules only; for any other value it
    just calls ``object.__setattr__``, which is called here directly so the type checker agrees.
    """
    object.__setattr__(model, "face_model_info", info)


def face_model_info(model: nn.Module) -> FaceModelInfo:
    """The :class:`FaceModelInfo` that ``load_face_model`` recorded on ``model``.

    Raises:
        AttributeError: If ``model`` did not come from ``load_face_model``.
    """
    info = getattr(model, "face_model_info", None)
    if isinstance(info, FaceModelInfo):
        return info
    raise AttributeError(f"{type(model).__name__} has no face_model_info: it was not loaded by load_face_model")


class CanonicalInput(nn.Module):
    """Takes canonical RGB ``(pixel - 127.5) / 127.5`` faces, feeds ``network`` its own layout.

    Flips RGB to BGR when needed and applies the per-channel affine map from canonical values to
    ``(pixel - mean) / std``. It exists so that one input convention holds across facexai; the
    wrapped network keeps its module names under ``network.`` (e.g. ``network.layer4``).
    """

    scale: Tensor
    shift: Tensor

    def __init__(self, network: nn.Module, layout: InputLayout) -> None:
        super().__init__()
        self.network = network
        self.layout = layout
        mean, std = torch.tensor(layout.mean), torch.tensor(layout.std)
        # pixel = CANONICAL * x + CANONICAL, file = (pixel - mean) / std
        self.register_buffer("scale", (CANONICAL / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((CANONICAL - mean) / std).view(1, 3, 1, 1), persistent=False)

    def to_network_input(self, faces: Tensor) -> Tensor:
        """Canonical faces -> the tensor the wrapped network takes."""
        if self.layout.channel_order == "BGR":
            faces = faces.flip(1)
        return faces * self.scale + self.shift

    def forward(self, faces: Tensor) -> Tensor:
        """Embeddings of canonical faces, computed by the wrapped network on its own layout."""
        output: Tensor = self.network(self.to_network_input(faces))
        return output


def to_network_input(faces: Tensor, layout: InputLayout) -> Tensor:
    """Canonical faces in ``layout`` (what a runtime like onnxruntime must be fed)."""
    return CanonicalInput(nn.Identity(), layout).to_network_input(faces)


def channel_values(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    """A scalar or three per-channel pixel values as a 3-tuple; std values must be positive."""
    values = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(values) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be a number or 3 numbers (pixel units 0..255), got {value!r}")
    if name == "std" and min(values) <= 0:
        raise ValueError(f"std must be positive, got {value!r}")
    return (float(values[0]), float(values[1]), float(values[2]))


def resolve_layout(
    default: InputLayout,
    mean: float | Sequence[float] | None,
    std: float | Sequence[float] | None,
    channel_order: str | None,
) -> InputLayout:
    """``default`` (read from the file or its convention) with the caller's overrides applied."""
    if channel_order is not None and channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, got {channel_order!r}")
    return InputLayout(
        size=default.size,
        mean=default.mean if mean is None else channel_values(mean, "mean"),
        std=default.std if std is None else channel_values(std, "std"),
        channel_order=default.channel_order if channel_order is None else channel_order,
    )


def probe_faces(n: int, size: int, seed: int = 0) -> Tensor:
    """Smooth, face-like canonical inputs for parity checks (fixed seed, so results repeat).

    Smooth images keep activations in the range real faces produce; pure noise can put
    BatchNorm'd networks into regimes where rounding differences dominate.
    """
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 7, 7, generator=generator) * 2 - 1
    smooth = nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (smooth + 0.05 * torch.randn(n, 3, size, size, generator=generator)).clamp(-1, 1)
