"""Audit an exported face-verification model on a pairs file, without torch.

``python -m facexai audit --onnx model.onnx --pairs pairs.txt --images-root DIR --out report/``
runs the ONNX graph with onnxruntime on every pair and writes ``report/index.html`` (heatmap
overlays, similarities, verification metrics, deletion/insertion curves) and
``report/report.json`` (the same numbers). Everything here imports only the standard library,
numpy, onnxruntime, Pillow and tqdm, so audits run on machines without PyTorch; a test checks
that ``torch`` never enters ``sys.modules``.

For an *explained* graph each side of a pair is explained against its partner's embedding
(A against B, B against A), exactly what ``facexai.explain.explain_pairs`` does in PyTorch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image
from tqdm import tqdm

from facexai.export import audit_metrics as am
from facexai.export.audit_report import overlay, write_report
from facexai.export.metadata import ExportMetadata
from facexai.export.pairs import Pair, load_image, read_pairs

logger = logging.getLogger(__name__)

#: deletion/insertion settings of the audit (zero = the mean colour in normalised space)
CURVE_STEPS = 20


@dataclass(frozen=True)
class AuditOptions:
    """Knobs of an audit run.

    Attributes:
        batch_size: pairs per onnxruntime call.
        steps: deletion/insertion steps.
        curve_pairs: pairs (from the top of the file) whose curves are computed; each costs
            2 * 2 * (steps + 1) explained forward/backward passes.
        max_shown: pairs rendered in index.html (all pairs are in report.json).
        progress: show a tqdm progress bar on stderr.
    """

    batch_size: int = 16
    steps: int = CURVE_STEPS
    curve_pairs: int = 32
    max_shown: int = 100
    progress: bool = True


class OnnxFaceModel:
    """An exported facexai verification graph behind numpy in, numpy out.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not loadable, not a facexai export, or not a verification model.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime has its own exception types (Fail, InvalidGraph, ...)
            raise ValueError(f"{self.path} is not a loadable ONNX model: {err}") from err
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = ExportMetadata.from_props(props, str(self.path))
        if self.meta.task != "verification":
            raise ValueError(
                f"{self.path} is a facexai {self.meta.task} model; the audit evaluates face "
                "verification pairs and needs a model exported from a VerificationModule"
            )
        self.outputs = [o.name for o in self.session.get_outputs()]

    def to_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) -> the graph's float32 (N, 3, H, W) input."""
        x = images.astype(np.float32).transpose(0, 3, 1, 2)
        if self.meta.input_format == "normalised":
            x = (x - self.meta.input_mean) / self.meta.input_std
        return np.ascontiguousarray(x)

    @property
    def baseline(self) -> float:
        """Graph-input value of a pixel at the mean colour (0 after normalisation)."""
        return 0.0 if self.meta.input_format == "normalised" else self.meta.input_mean

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        """Embeddings (N, D); explained graphs get a zero target and only the output is kept."""
        feeds = {self.meta.input_names[0]: inputs}
        if self.meta.explained:
            feeds[self.meta.input_names[1]] = np.zeros((len(inputs), self.meta.embedding_size), np.float32)
        return self.session.run([self.outputs[0]], feeds)[0]

    def explain(self, inputs: np.ndarray, partners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Maps (N, H, W) of each image against its partner embedding, and the similarities (N,)."""
        images, target = self.meta.input_names
        outputs = list(self.meta.output_names[1:3])  # (output, map, similarity)
        maps, similarity = self.session.run(outputs, {images: inputs, target: partners})
        return maps, similarity


def run_audit(
    onnx_path: str | Path,
    pairs_file: str | Path,
    images_root: str | Path,
    out: str | Path,
    options: AuditOptions | None = None,
) -> dict[str, Any]:
    """Audit ``onnx_path`` on the pairs and write the report folder ``out``.

    Returns:
        The report dictionary written to ``out/report.json``.
    """
    options = options or AuditOptions()
    _check_options(options)
    model = OnnxFaceModel(onnx_path)
    pairs = read_pairs(pairs_file, images_root)
    out = Path(out)
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    records, curves = _run_pairs(model, pairs, out, options)
    scores = np.array([r["similarity"] for r in records])
    issame = np.array([r["issame"] for r in records])
    metrics = am.verification_metrics(scores, issame)
    for record in records:
        threshold = metrics["best_threshold"]
        record["decision"] = None if threshold is None else bool(record["similarity"] >= threshold)
    report = {
        "model": _model_summary(model),
        "pairs_file": str(pairs_file),
        "images_root": str(images_root),
        "metrics": metrics,
        "curves": _curve_summary(curves, options.steps, model.baseline),
        "pairs": records,
    }
    write_report(out, report)
    return report


def _check_options(options: AuditOptions) -> None:
    for name in ("batch_size", "steps"):
        value = getattr(options, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name in ("curve_pairs", "max_shown"):
        value = getattr(options, name)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _run_pairs(
    model: OnnxFaceModel, pairs: list[Pair], out: Path, options: AuditOptions
) -> tuple[list[dict[str, Any]], dict[str, list[np.ndarray]]]:
    records: list[dict[str, Any]] = []
    curves: dict[str, list[np.ndarray]] = {"deletion": [], "insertion": []}
    starts = range(0, len(pairs), options.batch_size)
    for start in tqdm(starts, desc="audit", unit="batch", disable=not options.progress):
        batch = pairs[start : start + options.batch_size]
        records += _run_batch(model, batch, start, out, options, curves)
    return records, curves


def _run_batch(
    model: OnnxFaceModel,
    batch: list[Pair],
    start: int,
    out: Path,
    options: AuditOptions,
    curves: dict[str, list[np.ndarray]],
) -> list[dict[str, Any]]:
    """Embeddings, similarities, maps, curves and figures of one batch of pairs."""
    size, n = model.meta.input_size, len(batch)
    pixels = np.stack([load_image(p, size) for pair in batch for p in (pair.path_a, pair.path_b)])
    pixels = np.concatenate([pixels[0::2], pixels[1::2]])  # [A; B]
    inputs = model.to_input(pixels)
    embeddings = model.embed(inputs)
    partners = np.concatenate([embeddings[n:], embeddings[:n]])  # A against B, B against A
    similarity = _cosine(embeddings[:n], embeddings[n:])
    maps = model.explain(inputs, partners)[0] if model.meta.explained else None
    records = []
    for i, pair in enumerate(batch):
        index = start + i
        record = {"path_a": str(pair.path_a), "path_b": str(pair.path_b), "issame": pair.issame,
                  "similarity": float(similarity[i]), "shown": index < options.max_shown}
        if record["shown"]:
            record.update(_figures(out, index, pixels[[i, n + i]], None if maps is None else maps[[i, n + i]]))
        records.append(record)
    if maps is not None:
        _add_curves(model, inputs, maps, partners, start, options, records, curves)
    return records


def _figures(out: Path, index: int, pixels: np.ndarray, maps: np.ndarray | None) -> dict[str, str]:
    """Save the two overlays (or plain thumbnails without maps); return their relative paths."""
    paths = {}
    for side, k in (("a", 0), ("b", 1)):
        name = f"pairs/{index:05d}_{side}.png"
        picture = overlay(pixels[k], maps[k]) if maps is not None else _thumbnail(pixels[k])
        picture.save(out / name)
        paths[f"image_{side}"] = name
    return paths


def _thumbnail(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels)


def _add_curves(
    model: OnnxFaceModel,
    inputs: np.ndarray,
    maps: np.ndarray,
    partners: np.ndarray,
    start: int,
    options: AuditOptions,
    records: list[dict[str, Any]],
    curves: dict[str, list[np.ndarray]],
) -> None:
    """Deletion/insertion curves of both sides of the first ``curve_pairs`` pairs."""
    n = len(records)
    keep = [i for i in range(n) if start + i < options.curve_pairs]
    if not keep:
        return
    rows = np.array(keep + [n + i for i in keep])

    def score(images: np.ndarray, sample: np.ndarray) -> np.ndarray:
        # cosine to the partner's *clean* embedding: the graph's similarity output
        return np.concatenate([
            model.explain(images[j : j + options.batch_size], partners[rows][sample[j : j + options.batch_size]])[1]
            for j in range(0, len(images), options.batch_size)
        ])

    deletion, insertion = am.perturbation_curves(score, inputs[rows], maps[rows], options.steps, model.baseline)
    del_auc, ins_auc = am.curve_auc(deletion), am.curve_auc(insertion)
    for k, i in enumerate(keep):
        records[i]["deletion_auc"] = [float(del_auc[k]), float(del_auc[len(keep) + k])]
        records[i]["insertion_auc"] = [float(ins_auc[k]), float(ins_auc[len(keep) + k])]
    curves["deletion"].append(deletion)
    curves["insertion"].append(insertion)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return (a * b).sum(axis=1) / norms


def _model_summary(model: OnnxFaceModel) -> dict[str, Any]:
    meta = model.meta
    return {
        "path": str(model.path), "task": meta.task, "input_size": meta.input_size,
        "input_format": meta.input_format, "embedding_size": meta.embedding_size,
        "explainer": meta.explainer, "explainer_options": meta.explainer_options,
        "version": meta.version, "source_sha256": meta.source_sha256,
        "parity_max_abs_diff": meta.parity_max_abs_diff,
        "parity_noise_floor": meta.parity_noise_floor,
    }


def _curve_summary(curves: dict[str, list[np.ndarray]], steps: int, baseline: float) -> dict[str, Any] | None:
    if not curves["deletion"]:
        return None
    deletion, insertion = np.concatenate(curves["deletion"]), np.concatenate(curves["insertion"])
    return {
        "steps": steps,
        "baseline": "zero" if baseline == 0.0 else f"pixel value {baseline:g}",
        "n_images": len(deletion),
        "fractions": [k / steps for k in range(steps + 1)],
        "deletion_mean": deletion.mean(axis=0).tolist(),
        "insertion_mean": insertion.mean(axis=0).tolist(),
        "deletion_auc": float(am.curve_auc(deletion).mean()),
        "insertion_auc": float(am.curve_auc(insertion).mean()),
    }
