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
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facexai.export.input_size import MAX_SIZE, MIN_SIZE

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
#: widest output a file may declare (embeddings are 128..2048 wide; ImageNet-21k has 21,843 classes)
MAX_WIDTH = 1_000_000
#: longest JSON value read (class names of a large classifier fit; a hostile megabyte does not)
MAX_JSON_CHARS = 4_000_000


class MetadataError(ValueError):
    """An ONNX file whose facexai metadata is missing, malformed or out of range (names the key)."""


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
        """(mean, std) a caller applies to pixels before the graph.

        (0, 1) when the graph takes raw pixels and normalises itself, else the recorded
        ``input_mean``/``input_std``.
        """
        return (0.0, 1.0) if self.input_format == "raw_pixels" else (self.input_mean, self.input_std)

    @property
    def explained(self) -> bool:
        """Whether the graph takes a target and returns an explanation map."""
        return self.explainer is not None

    def output_width(self) -> int:
        """The width of the (first) output: D of a verification model, K of a classifier.

        Raises:
            MetadataError: the width is not recorded (only classifiers without explainer may omit it).
        """
        width = self.embedding_size if self.task == "verification" else self.num_classes
        if width is None:
            key = "embedding_size" if self.task == "verification" else "num_classes"
            raise MetadataError(f"the export's metadata records no {PREFIX}{key}")
        return width

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
    def from_props(cls, props: Mapping[str, str], source: str = "the ONNX file") -> ExportMetadata:
        """Parse and check ``metadata_props``.

        Every value is checked for type and range here, once, so that no consumer (the audit,
        ``load_face_model``) feeds a graph from a value nobody validated.

        Raises:
            MetadataError: missing keys (named), another format version, or a malformed or
                out-of-range value (the key and value are named).
        """
        values = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
        missing = [PREFIX + k for k in REQUIRED_KEYS if k not in values]
        if missing:
            raise MetadataError(
                f"{source} is not a facexai export: its ONNX metadata lacks {', '.join(missing)}. "
                "Expected the metadata_props written by `python -m facexai export` "
                f"({', '.join(PREFIX + k for k in REQUIRED_KEYS)})"
            )
        if values["format_version"] != FORMAT_VERSION:
            raise MetadataError(
                f"{source} uses facexai metadata format {values['format_version']!r}; this facexai "
                f"reads format {FORMAT_VERSION!r}. Re-export the model with this version"
            )
        return cls(**_parse_values(values, source))


def _parse_values(values: dict[str, str], source: str) -> dict[str, Any]:
    """Each value parsed and checked for its type and range; the first bad one is named."""
    task = _choice(values["task"], TASKS, "task", source)
    explainer = values.get("explainer") or None
    width_key = "embedding_size" if task == "verification" else "num_classes"
    if (task == "verification" or explainer is not None) and not values.get(width_key):
        raise MetadataError(
            f"{source} is not a complete facexai export: its ONNX metadata lacks {PREFIX}{width_key} "
            f"(the output width every facexai {task} export records)"
        )
    read = _Reader(values, source)
    class_names = read.names("class_names", 0, None, optional=True)
    return {
        "task": task,
        "input_size": read.integer("input_size", MIN_SIZE, MAX_SIZE),
        "input_format": _choice(values["input_format"], INPUT_FORMATS, "input_format", source),
        "input_mean": read.number("input_mean", 0.0, 255.0, "a pixel value from 0 to 255"),
        "input_std": read.number("input_std", 0.0, math.inf, "a positive finite number", open_low=True),
        # (images, target) -> (output, map[, similarity]) for explained graphs, images -> output else
        "input_names": read.names("input_names", *((2, 2) if explainer else (1, 1))),
        "output_names": read.names("output_names", *((2, 3) if explainer else (1, 1))),
        "version": values["version"],
        "embedding_size": read.integer("embedding_size", 1, MAX_WIDTH, optional=True),
        "class_names": class_names,
        "num_classes": read.integer("num_classes", 1, MAX_WIDTH, optional=True),
        "explainer": explainer,
        "explainer_options": read.json_object("explainer_options"),
        "source_sha256": values.get("source_sha256") or None,
        "parity_max_abs_diff": read.number("parity_max_abs_diff", 0.0, math.inf, "a finite number >= 0", optional=True),
        "parity_noise_floor": read.number("parity_noise_floor", 0.0, math.inf, "a finite number >= 0", optional=True),
        "notes": read.names("notes", 0, None, optional=True) or (),
        "format_version": values["format_version"],
    }


class _Reader:
    """Parses one ``facexai.<key>`` value at a time; every failure is a :class:`MetadataError` naming it.

    Written for files from anywhere: long or deeply nested JSON (``json`` recurses per level and
    raises ``RecursionError``), NaN, infinities, huge integers and values of the wrong JSON type
    are all refused, never passed on to the code that feeds the graph.
    """

    def __init__(self, values: dict[str, str], source: str) -> None:
        self.values, self.source = values, source

    def refuse(self, key: str, expected: str) -> MetadataError:
        """The error for ``key``: its (shortened) value and what was expected."""
        shown = self.values.get(key, "")
        shown = shown if len(shown) <= 40 else shown[:40] + "..."
        return MetadataError(f"{self.source} has {PREFIX}{key}={shown!r}; expected {expected}")

    def integer(self, key: str, low: int, high: int, optional: bool = False) -> int | None:
        """An integer from ``low`` to ``high`` (``None`` when optional and empty)."""
        text = self.values.get(key) or ""
        if optional and not text:
            return None
        expected = f"an integer from {low} to {high}"
        if len(text) > 20 or not text.strip().lstrip("+-").isdigit():
            raise self.refuse(key, expected)
        value = int(text)
        if not low <= value <= high:
            raise MetadataError(f"{self.source} has {PREFIX}{key}={value}; expected {expected}")
        return value

    def number(
        self, key: str, low: float, high: float, expected: str, optional: bool = False, open_low: bool = False
    ) -> float | None:
        """A finite float in [low, high] (or (low, high] with ``open_low``)."""
        text = self.values.get(key) or ""
        if optional and not text:
            return None
        try:
            value = float(text) if len(text) <= 64 else math.nan
        except ValueError:
            raise self.refuse(key, expected) from None
        if not (math.isfinite(value) and (low < value if open_low else low <= value) and value <= high):
            raise MetadataError(f"{self.source} has {PREFIX}{key}={value!r}; expected {expected}")
        return value

    def json(self, key: str, default: str) -> Any:
        """The parsed JSON value (``default`` when empty); too long or too deep is refused."""
        text = self.values.get(key) or default
        if len(text) > MAX_JSON_CHARS:
            raise self.refuse(key, f"at most {MAX_JSON_CHARS} characters of JSON")
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as err:  # json.JSONDecodeError is a ValueError
            raise self.refuse(key, f"JSON ({type(err).__name__}: {str(err)[:80]})") from None

    def names(self, key: str, low: int, high: int | None, optional: bool = False) -> tuple[str, ...] | None:
        """A JSON list of ``low``..``high`` strings (``None`` when optional and empty)."""
        if optional and not self.values.get(key):
            return None
        value = self.json(key, "[]")
        count = (f"exactly {low}" if high == low else f"{low} or {high}" if high == low + 1
                 else f"{low} to {high}" if high else f"{low} or more")  # fmt: skip
        expected = f"a JSON list of {count} names (strings)"
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.refuse(key, expected)
        if not low <= len(value) <= (high if high is not None else len(value)):
            raise self.refuse(key, expected)
        return tuple(value)

    def json_object(self, key: str) -> dict[str, Any]:
        """A JSON object (``{}`` when empty)."""
        value = self.json(key, "{}")
        if not isinstance(value, dict):
            raise self.refuse(key, "a JSON object")
        return value


def read_metadata(path: str | Path) -> ExportMetadata:
    """The facexai metadata of an ONNX file, read through onnxruntime (no torch, no onnx).

    Raises:
        FileNotFoundError: the file does not exist.
        MetadataError: the file is not loadable by onnxruntime, or not a facexai export (names the
            missing keys), or has a malformed or out-of-range value (names the key).
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
        raise MetadataError(f"{path} is not a loadable ONNX model: {first_line(err)}") from err
    return ExportMetadata.from_props(session_props(session, path), str(path))


def session_props(session: Any, path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an onnxruntime session as text.

    onnxruntime hands them over as raw bytes converted on access: a file whose keys or values
    are not valid UTF-8 (found by fuzzing: one flipped bit) raised ``UnicodeDecodeError``.

    Raises:
        MetadataError: the metadata is not valid UTF-8.
    """
    try:
        return dict(session.get_modelmeta().custom_metadata_map)
    except UnicodeDecodeError as err:
        raise MetadataError(
            f"{path} has ONNX metadata that is not valid UTF-8 ({err.reason} at byte {err.start})"
        ) from err


def first_line(err: BaseException) -> str:
    """The first non-empty line of an error message (onnxruntime appends stack traces)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _optional(value: object) -> str:
    return "" if value is None else str(value)


def _choice(value: str, choices: tuple[str, ...], key: str, source: str) -> str:
    if value not in choices:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise MetadataError(f"{source} has facexai.{key}={shown!r}; expected one of {', '.join(choices)}")
    return value
