"""The facexai metadata contract of an exported ONNX file, readable without torch.

Every facexai export carries ``metadata_props`` under the ``facexai.`` prefix. They tell a
consumer (``python -m facexai audit``, a deployment script) how to feed the graph and what comes
out, so the file is self-describing: the input normalisation, input size, task, output width or
class names, the explainer inside the graph, and where the weights came from (the checkpoint's
sha256). This module only uses the standard library so that the audit tool can read the contract
through onnxruntime without importing torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "facexai."
#: bumped when the meaning of a key changes, so old readers can refuse new files
FORMAT_VERSION = "1"
TASKS = ("classification", "verification")
#: "normalised": the caller feeds (pixel - 127.5) / 127.5 (the insightface ArcFace convention);
#: "raw_pixels": the caller feeds RGB pixel values in [0, 255] and the graph normalises
INPUT_FORMATS = ("normalised", "raw_pixels")
#: keys every facexai export has; the audit names the missing ones
REQUIRED_KEYS = (
    "format_version",
    "version",
    "task",
    "input_size",
    "input_format",
    "input_mean",
    "input_std",
    "input_names",
    "output_names",
)


@dataclass(frozen=True)
class ExportMetadata:
    """What a facexai ONNX file promises about its inputs and outputs.

    Attributes:
        task: "classification" or "verification".
        input_size: square input side in pixels (the graph's H and W are fixed to it).
        input_format: one of :data:`INPUT_FORMATS`.
        input_mean: per-channel pixel mean of the normalisation (x - mean) / std, RGB order.
        input_std: per-channel pixel std of the normalisation.
        input_names: graph inputs in order: ``images`` and, for explained graphs, ``target``.
        output_names: graph outputs in order.
        version: facexai version that wrote the file.
        embedding_size: output width of a verification model.
        class_names: class names of a classifier (``None`` when the module had none).
        num_classes: output width of a classifier.
        explainer: registry name of the explainer traced into the graph, ``None`` if none.
        explainer_options: the explainer's options (target layer, ...).
        source_sha256: sha256 of the checkpoint the weights came from, ``None`` for in-memory
            models.
        parity_max_abs_diff: largest |onnxruntime - PyTorch| seen by the export's parity check.
        parity_noise_floor: where that exceeded the tolerance, how far PyTorch's own output moved
            under float32 rounding of the input (an ill-conditioned explainer); else ``None``.
        notes: caveats the export found worth telling every consumer (e.g. that insightface's
            ArcFace wrapper expects 112 px faces), also printed by the export command.
        format_version: version of this contract.
    """

    task: str
    input_size: int
    input_format: str = "normalised"
    input_mean: float = 127.5
    input_std: float = 127.5
    input_names: tuple[str, ...] = ("images",)
    output_names: tuple[str, ...] = ("embedding",)
    version: str = "0.0.0+unknown"
    embedding_size: int | None = None
    class_names: tuple[str, ...] | None = None
    num_classes: int | None = None
    explainer: str | None = None
    explainer_options: dict[str, Any] = field(default_factory=dict)
    source_sha256: str | None = None
    parity_max_abs_diff: float | None = None
    parity_noise_floor: float | None = None
    notes: tuple[str, ...] = ()
    format_version: str = FORMAT_VERSION

    @property
    def graph_normalisation(self) -> tuple[float, float]:
        """(mean, std) a caller applies to pixels before the graph: (0, 1) when the graph takes
        raw pixels and normalises itself, else the recorded ``input_mean``/``input_std``."""
        return (0.0, 1.0) if self.input_format == "raw_pixels" else (self.input_mean, self.input_std)

    @property
    def explained(self) -> bool:
        """Whether the graph takes a target and returns an explanation map."""
        return self.explainer is not None

    def to_props(self) -> dict[str, str]:
        """String key/value pairs for ONNX ``metadata_props`` (keys prefixed ``facexai.``)."""
        values = {
            "format_version": self.format_version,
            "version": self.version,
            "task": self.task,
            "input_size": str(self.input_size),
            "input_format": self.input_format,
            "input_mean": repr(float(self.input_mean)),
            "input_std": repr(float(self.input_std)),
            "input_layout": "NCHW RGB float32",
            "input_names": json.dumps(list(self.input_names)),
            "output_names": json.dumps(list(self.output_names)),
            "embedding_size": _optional(self.embedding_size),
            "class_names": _optional(None if self.class_names is None else json.dumps(list(self.class_names))),
            "num_classes": _optional(self.num_classes),
            "explainer": self.explainer or "",
            "explainer_options": json.dumps(self.explainer_options, sort_keys=True, default=str),
            "source_sha256": self.source_sha256 or "",
            "parity_max_abs_diff": _optional(self.parity_max_abs_diff),
            "parity_noise_floor": _optional(self.parity_noise_floor),
            "notes": json.dumps(list(self.notes)),
        }
        return {PREFIX + key: value for key, value in values.items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "the ONNX file") -> "ExportMetadata":
        """Parse ``metadata_props``; raise ``ValueError`` naming missing keys for foreign files."""
        values = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        missing = [PREFIX + k for k in REQUIRED_KEYS if k not in values]
        if missing:
            raise ValueError(
                f"{source} is not a facexai export: its ONNX metadata lacks {', '.join(missing)}. "
                "Expected the metadata_props written by `python -m facexai export` "
                f"({', '.join(PREFIX + k for k in REQUIRED_KEYS)})"
            )
        if values["format_version"] != FORMAT_VERSION:
            raise ValueError(
                f"{source} uses facexai metadata format {values['format_version']!r}; this facexai "
                f"reads format {FORMAT_VERSION!r}. Re-export the model with this version"
            )
        return cls(**_parse_values(values, source))


def _parse_values(values: dict[str, str], source: str) -> dict[str, Any]:
    try:
        class_names = values.get("class_names") or None
        return {
            "task": _choice(values["task"], TASKS, "task", source),
            "input_size": int(values["input_size"]),
            "input_format": _choice(values["input_format"], INPUT_FORMATS, "input_format", source),
            "input_mean": float(values["input_mean"]),
            "input_std": float(values["input_std"]),
            "input_names": tuple(json.loads(values["input_names"])),
            "output_names": tuple(json.loads(values["output_names"])),
            "version": values["version"],
            "embedding_size": _int_or_none(values.get("embedding_size")),
            "class_names": None if class_names is None else tuple(json.loads(class_names)),
            "num_classes": _int_or_none(values.get("num_classes")),
            "explainer": values.get("explainer") or None,
            "explainer_options": json.loads(values.get("explainer_options") or "{}"),
            "source_sha256": values.get("source_sha256") or None,
            "parity_max_abs_diff": _float_or_none(values.get("parity_max_abs_diff")),
            "parity_noise_floor": _float_or_none(values.get("parity_noise_floor")),
            "notes": tuple(str(n) for n in json.loads(values.get("notes") or "[]")),
            "format_version": values["format_version"],
        }
    except (ValueError, TypeError) as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{source} has malformed facexai metadata: {err}") from err


def read_metadata(path: str | Path) -> ExportMetadata:
    """The facexai metadata of an ONNX file, read through onnxruntime (no torch, no onnx).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a facexai export (names the missing keys).
    """
    import onnxruntime as ort  # imported here so that the dataclass works without onnxruntime

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ValueError(f"{path} is not a loadable ONNX model: {err}") from err
    return ExportMetadata.from_props(session.get_modelmeta().custom_metadata_map, str(path))


def _optional(value: object) -> str:
    return "" if value is None else str(value)


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None


def _float_or_none(value: str | None) -> float | None:
    return float(value) if value else None


def _choice(value: str, choices: tuple[str, ...], key: str, source: str) -> str:
    if value not in choices:
        raise ValueError(f"{source} has facexai.{key}={value!r}; expected one of {', '.join(choices)}")
    return value
