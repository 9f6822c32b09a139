"""How the audit feeds a graph: input size, normalisation and channel order, from metadata or flags.

A facexai export's metadata is the contract, which flags may restate but not contradict; other
graphs follow the insightface ArcFace convention, which flags override. The result is one
:class:`InputSpec` that turns uint8 RGB pixels into the graph's input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facexai.export.errors import AuditModelError
from facexai.export.input_size import MAX_SIZE, MIN_SIZE
from facexai.export.metadata import ExportMetadata

#: the insightface ArcFace convention for models without facexai metadata
DEFAULT_MEAN = 127.5
DEFAULT_STD = 127.5
DEFAULT_SIZE = 112
CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class InputOverrides:
    """What the command line says about the input; ``None`` keeps the file's (or the convention's) value.

    ``mean`` and ``std`` hold one value or one per graph input channel, in ``channel_order``.
    """

    input_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str | None = None


@dataclass(frozen=True)
class InputSpec:
    """How uint8 RGB pixels become the graph input: reorder, then (pixel - mean) / std per channel.

    Attributes:
        size: square side fed to the graph.
        mean: per graph channel (in ``channel_order``).
        std: per graph channel.
        channel_order: "RGB" or "BGR".
        baseline: graph-input value of a removed pixel (the mean colour; 0 after normalisation).
        source: where the values came from, for the report.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str
    baseline: float
    source: str

    def to_input(self, pixels: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) -> graph input (N, 3, H, W)."""
        x: np.ndarray = pixels.astype(np.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x = (x - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2).astype(dtype))


def resolve_spec(
    meta: ExportMetadata | None,
    overrides: InputOverrides,
    declared: int | None,
    path: Path,
    convention: tuple[float, float] = (DEFAULT_MEAN, DEFAULT_STD),
) -> InputSpec:
    """Combine the metadata (or the insightface convention), the flags and the graph's side.

    ``convention`` is the (mean, std) insightface reads off a third-party graph
    (:func:`facexai.export.insightface.insightface_normalisation`: raw pixels for graphs that
    normalise themselves), so the audit feeds a file exactly as ``load_face_model`` does.

    Raises:
        AuditModelError: a size outside 16..1024 or different from the graph's, a bad mean/std
            or channel order, or a flag contradicting facexai metadata.
    """
    _check_overrides(overrides)
    if meta is not None:
        spec = _facexai_spec(meta, overrides, path)
    else:
        spec = _convention_spec(overrides, declared, convention)
    if declared is not None and spec.size != declared:
        if meta is not None and overrides.input_size is None:  # the metadata lies about the graph
            raise AuditModelError(
                f"{path} has facexai.input_size={spec.size}, but its graph takes {declared}x{declared} images"
            )
        raise AuditModelError(
            f"input size {spec.size} does not match {path}, whose graph takes {declared}x{declared} images"
        )
    return spec


def _check_overrides(overrides: InputOverrides) -> None:
    size = overrides.input_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE):
        raise AuditModelError(f"input size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got {size!r}")
    for name in ("mean", "std"):
        values = getattr(overrides, name)
        if values is None:
            continue
        if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
            raise AuditModelError(f"{name} must be one finite number or three (one per channel), got {list(values)}")
    if overrides.std is not None and any(v == 0 for v in overrides.std):
        raise AuditModelError(f"std must be nonzero (inputs are divided by it), got {list(overrides.std)}")
    if overrides.channel_order is not None and overrides.channel_order not in CHANNEL_ORDERS:
        raise AuditModelError(f"channel order must be RGB or BGR, got {overrides.channel_order!r}")


def _triple(values: tuple[float, ...] | float) -> tuple[float, float, float]:
    """One value per channel: a single value repeated, or the three given."""
    floats = [float(v) for v in ((values,) if isinstance(values, (int, float)) else values)]
    first, second, third = floats * 3 if len(floats) == 1 else floats
    return first, second, third


def _convention_spec(overrides: InputOverrides, declared: int | None, convention: tuple[float, float]) -> InputSpec:
    """Insightface's ArcFace convention, with flags taking precedence."""
    size = overrides.input_size or declared or DEFAULT_SIZE
    if overrides.input_size:
        how = "flag"
    else:
        how = "graph" if declared else f"default {DEFAULT_SIZE} (graph side is dynamic)"
    return InputSpec(
        size=size,
        mean=_triple(overrides.mean if overrides.mean is not None else convention[0]),
        std=_triple(overrides.std if overrides.std is not None else convention[1]),
        channel_order=overrides.channel_order or "RGB",
        baseline=0.0,
        source=f"insightface convention (size from {how})",
    )


def _facexai_spec(meta: ExportMetadata, overrides: InputOverrides, path: Path) -> InputSpec:
    """The metadata's contract; flags that restate it are fine, flags that contradict it are refused.

    Sizes, means and stds were range-checked by :meth:`ExportMetadata.from_props`.
    """
    raw = meta.input_format == "raw_pixels"
    mean, std = (_triple(value) for value in meta.graph_normalisation)
    stated = {
        "input size": (overrides.input_size, meta.input_size),
        "mean": (None if overrides.mean is None else _triple(overrides.mean), mean),
        "std": (None if overrides.std is None else _triple(overrides.std), std),
        "channel order": (overrides.channel_order, "RGB"),
    }
    for name, (flag, contract) in stated.items():
        if flag is not None and flag != contract:
            raw_note = " (its graph normalises raw pixels itself)" if raw and name in ("mean", "std") else ""
            raise AuditModelError(
                f"--{name.replace(' ', '-')} {flag} contradicts the facexai metadata of {path}, "
                f"which says {contract}{raw_note}"
            )
    return InputSpec(meta.input_size, mean, std, "RGB", meta.input_mean if raw else 0.0, "facexai metadata")
