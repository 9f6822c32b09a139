"""Any ONNX face-embedding model behind numpy in, numpy out, for the torch-free audit.

Two kinds of files are accepted:

- facexai exports: their ``facexai.*`` metadata is the contract (input size, normalisation,
  explainer in the graph); flags may restate it but not contradict it;
- any other face model, read with the insightface model-zoo convention: one input
  (N, 3, S, S) whose side S comes from the graph, RGB, (pixel - 127.5) / 127.5, and one (N, D)
  output. ``--input-size``, ``--mean``, ``--std`` and ``--channel-order`` override it.

Everything that would silently produce wrong numbers is refused before anything is written: an
input that is not an image batch, an output that is not (N, D), a size that disagrees with the
graph, a zero std, and graphs onnxruntime cannot load or run (checked with a probe batch). How
pixels are fed (size, normalisation, channel order) is resolved in :mod:`facexai.export.audit_input`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from facexai.export.audit_input import DEFAULT_MEAN, DEFAULT_STD, InputOverrides, resolve_spec
from facexai.export.errors import AuditModelError
from facexai.export.insightface import file_normalisation
from facexai.export.metadata import PREFIX, ExportMetadata, MetadataError, first_line, session_props

__all__ = ["AuditModelError", "InputOverrides", "OnnxFaceModel", "cosine"]

FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
#: onnxruntime log level "error": hides the warning that arcface_torch's exports trigger on every
#: batch (their output is declared with batch 1 while the input batch is dynamic)
ORT_LOG_ERROR = 3


class OnnxFaceModel:
    """An ONNX face-embedding graph (facexai export or third-party) for the audit.

    Raises:
        FileNotFoundError: no such file.
        AuditModelError: not loadable or runnable, not a face-embedding graph, or flags/metadata
            that would feed it wrongly (one line naming the problem).
    """

    def __init__(self, path: str | Path, overrides: InputOverrides | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        self.session = _open_session(self.path)
        self.meta = _facexai_metadata(self.session, self.path)
        image, output = _check_signature(self.session, self.meta, self.path)
        self.input_name, self.output_name = image.name, output.name
        self.dtype = FLOAT_TYPES[image.type]
        self.fixed_batch = _fixed(image.shape[0])
        convention = _convention(self.path) if self.meta is None else (DEFAULT_MEAN, DEFAULT_STD)
        self.spec = resolve_spec(
            self.meta, overrides or InputOverrides(), _fixed(image.shape[2]), self.path, convention
        )
        self.embedding_size = self._probe()
        if self.meta is not None and self.meta.embedding_size != self.embedding_size:
            raise AuditModelError(
                f"{self.path} has facexai.embedding_size={self.meta.embedding_size} but its graph returns "
                f"{self.embedding_size}-wide embeddings"
            )

    @property
    def explained(self) -> bool:
        """Whether the graph itself returns explanation maps (a facexai explained export)."""
        return self._explained_meta() is not None

    def _explained_meta(self) -> ExportMetadata | None:
        """The metadata of a facexai explained export; ``None`` for graphs without an explainer."""
        return self.meta if self.meta is not None and self.meta.explained else None

    @property
    def baseline(self) -> float:
        """Graph-input value of a pixel at the mean colour (0 after normalisation)."""
        return self.spec.baseline

    def to_input(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) -> the graph's (N, 3, H, W) input."""
        return self.spec.to_input(pixels, self.dtype)

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        """Embeddings (N, D) float32; explained graphs get a zero target and only the output is kept."""
        feeds = {self.input_name: inputs}
        meta = self._explained_meta()
        if meta is not None:
            feeds[meta.input_names[1]] = np.zeros((len(inputs), self.embedding_size), np.float32)
        return self._run([self.output_name], feeds)[0].astype(np.float32)

    def explain(self, inputs: np.ndarray, partners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Maps (N, H, W) of each image against its partner embedding, and the similarities (N,)."""
        meta = self._explained_meta()
        if meta is None:
            raise AuditModelError(f"{self.path} has no explainer inside; its maps come from CorrRISE")
        images, target = meta.input_names
        outputs = list(meta.output_names[1:3])  # (output, map, similarity)
        maps, similarity = self._run(outputs, {images: inputs, target: partners.astype(np.float32)})
        return maps, similarity

    def similarity(self, inputs: np.ndarray, partners: np.ndarray) -> np.ndarray:
        """Cosine similarity (N,) of each input's embedding to its partner embedding."""
        if self.explained:
            return self.explain(inputs, partners)[1]
        return cosine(self.embed(inputs), partners)

    def summary(self) -> dict[str, Any]:
        """What the report says about the model and how it was fed."""
        spec, meta = self.spec, self.meta
        info: dict[str, Any] = {
            "path": str(self.path),
            "task": "verification",
            "facexai_export": meta is not None,
            "input_size": spec.size,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "channel_order": spec.channel_order,
            "input_mean": list(spec.mean),
            "input_std": list(spec.std),
            "input_source": spec.source,
            "embedding_size": self.embedding_size,
            "explainer": meta.explainer if meta is not None else None,
        }
        if meta is not None:
            info.update(
                {
                    "input_format": meta.input_format,
                    "explainer_options": meta.explainer_options,
                    "version": meta.version,
                    "source_sha256": meta.source_sha256,
                    "notes": list(meta.notes),
                    "parity_max_abs_diff": meta.parity_max_abs_diff,
                    "parity_noise_floor": meta.parity_noise_floor,
                }
            )
        return info

    def _probe(self) -> int:
        """Run a zero batch of two: catches graphs that load but cannot run; returns D."""
        inputs = np.zeros((2, 3, self.spec.size, self.spec.size), self.dtype)
        feeds = {self.input_name: inputs}
        meta = self._explained_meta()
        if meta is not None:  # embedding_size: required by the metadata reader, checked against the graph
            feeds[meta.input_names[1]] = np.zeros((2, meta.output_width()), np.float32)
        output = self._run([self.output_name], feeds)[0]
        if output.ndim != 2 or output.shape[0] != 2:
            raise AuditModelError(
                f"{self.path}: output {self.output_name!r} has shape {output.shape} for a batch of 2 images; "
                "a face-embedding model returns (N, D)"
            )
        return int(output.shape[1])

    def _run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """``session.run`` in chunks of the graph's fixed batch (if any); errors become one line."""
        n = len(next(iter(feeds.values())))
        step = self.fixed_batch or max(n, 1)
        parts = []
        for start in range(0, n, step):
            chunk = {k: _pad(v[start : start + step], step if self.fixed_batch else None) for k, v in feeds.items()}
            try:
                result = self.session.run(outputs, chunk)
            except Exception as err:  # onnxruntime raises its own Fail/InvalidArgument/RuntimeException
                raise AuditModelError(f"onnxruntime could not run {self.path}: {first_line(err)}") from err
            parts.append([r[: min(step, n - start)] for r in result])
        return [np.concatenate([p[k] for p in parts]) for k in range(len(outputs))]


def _pad(values: np.ndarray, size: int | None) -> np.ndarray:
    """Repeat the last row up to ``size`` rows (graphs with a fixed batch)."""
    if size is None or len(values) == size:
        return values
    return np.concatenate([values, np.repeat(values[-1:], size - len(values), axis=0)])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) arrays, in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return (a * b).sum(axis=1) / norms


def _fixed(dim: object) -> int | None:
    """A graph dimension that is a positive integer, else ``None`` (symbolic or unknown)."""
    return dim if isinstance(dim, int) and dim > 0 else None


def _convention(path: Path) -> tuple[float, float]:
    """Insightface's normalisation of a third-party file; a file onnx cannot parse is refused."""
    try:
        return file_normalisation(path)
    except Exception as err:  # protobuf's DecodeError and onnx's own errors share no base but Exception
        raise AuditModelError(f"{path} is not a readable ONNX model: {first_line(err)}") from err


def _open_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = ORT_LOG_ERROR
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime has its own exception types (Fail, InvalidGraph, ...)
        raise AuditModelError(f"{path} is not a loadable ONNX model: {first_line(err)}") from err


def _facexai_metadata(session: ort.InferenceSession, path: Path) -> ExportMetadata | None:
    """The facexai contract when the file has any ``facexai.`` key (then it must be complete)."""
    try:
        props = session_props(session, path)
        if not any(key.startswith(PREFIX) for key in props):
            return None
        meta = ExportMetadata.from_props(props, str(path))
    except MetadataError as err:
        raise AuditModelError(str(err)) from err
    if meta.task != "verification":
        raise AuditModelError(
            f"{path} is a facexai {meta.task} model; the audit evaluates face verification pairs and "
            "needs a model exported from a VerificationModule"
        )
    return meta


def _check_signature(session: ort.InferenceSession, meta: ExportMetadata | None, path: Path) -> tuple[Any, Any]:
    """The image input and the embedding output, after checking their ranks and types."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    expected = (len(meta.input_names), len(meta.output_names)) if meta is not None else (1, 1)
    if (len(inputs), len(outputs)) != expected:
        raise AuditModelError(
            f"{path} has {len(inputs)} input(s) and {len(outputs)} output(s); "
            f"a face-embedding model has {expected[0]} and {expected[1]} "
            "(one image batch (N, 3, S, S) in, one embedding (N, D) out)"
        )
    if meta is not None:
        _check_names(meta, [i.name for i in inputs], [o.name for o in outputs], path)
        _check_widths(meta, inputs[1:] + outputs[:1], path)
    image, output = inputs[0], outputs[0]
    shape = list(image.shape or [])
    fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if len(shape) != 4 or fixed[1] not in (None, 3) or (fixed[2] and fixed[3] and fixed[2] != fixed[3]):
        raise AuditModelError(
            f"{path}: input {image.name!r} has shape {shape}; the audit needs a batch of square RGB images (N, 3, S, S)"
        )
    if image.type not in FLOAT_TYPES:
        raise AuditModelError(f"{path}: input {image.name!r} is {image.type}; the audit feeds float images")
    if output.shape is not None and len(output.shape) != 2:
        raise AuditModelError(
            f"{path}: output {output.name!r} has shape {list(output.shape)}; a face-embedding model "
            "returns (N, D) embeddings"
        )
    return image, output


def _check_names(meta: ExportMetadata, inputs: list[str], outputs: list[str], path: Path) -> None:
    """The metadata's input and output names must be the graph's (the audit feeds by name)."""
    for key, declared, actual in (
        ("input_names", meta.input_names, inputs),
        ("output_names", meta.output_names, outputs),
    ):
        if list(declared) != actual:
            raise AuditModelError(f"{path} has facexai.{key} {list(declared)} but its graph has {actual}")


def _check_widths(meta: ExportMetadata, values: list[Any], path: Path) -> None:
    """facexai.embedding_size against the fixed width of the target input and the embedding output.

    Checked before the probe batch, which feeds an explained graph a target of that width.
    """
    for value in values:
        shape = list(value.shape or [])
        width = _fixed(shape[1]) if len(shape) == 2 else None
        if width is not None and width != meta.embedding_size:
            raise AuditModelError(
                f"{path} has facexai.embedding_size={meta.embedding_size} but its graph's {value.name!r} is "
                f"{width} wide"
            )
