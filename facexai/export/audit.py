"""Audit an ONNX face-verification model on a pairs file, without torch.

``python -m facexai audit --onnx model.onnx --pairs pairs.txt --images-root DIR --out report/``
runs the ONNX graph with onnxruntime on every pair and writes ``report/index.html`` (heatmap
overlays, similarities, verification metrics, deletion/insertion curves) and
``report/report.json`` (the same numbers). Everything here imports only the standard library,
numpy, onnxruntime, Pillow and tqdm, so audits run on machines without PyTorch; a test checks
that ``torch`` never enters ``sys.modules``.

The model may be a facexai export or any third-party face model (see
:mod:`facexai.export.audit_model` for how its input is resolved). Maps come from the graph for
facexai *explained* exports (each side of a pair explained against its partner's embedding, as
``facexai.explain.explain_pairs`` does in PyTorch); for every other graph they come from
CorrRISE run as a black box on onnxruntime (:mod:`facexai.export.corrrise_np`), on the first
``map_pairs`` pairs, with the same "A against B, B against A" similarity score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from facexai.export import audit_metrics as am
from facexai.export.audit_input import InputOverrides
from facexai.export.audit_model import OnnxFaceModel, cosine
from facexai.export.audit_report import overlay, write_report
from facexai.export.corrrise_np import CorrRiseOptions, corrrise_maps, fitted_patch
from facexai.export.pairs import Pair, load_image, read_pairs
from facexai.writing import atomic_path, refuse_inputs

__all__ = ["AuditOptions", "CorrRiseOptions", "InputOverrides", "OnnxFaceModel", "run_audit"]

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
        corrrise: black-box map settings for graphs without an explainer; ``None`` draws no maps
            (and so no curves) for them.
        map_pairs: pairs (from the top of the file) that get CorrRISE maps; each costs
            2 * ``n_masks`` forward passes.
    """

    batch_size: int = 16
    steps: int = CURVE_STEPS
    curve_pairs: int = 32
    max_shown: int = 100
    progress: bool = True
    corrrise: CorrRiseOptions | None = field(default_factory=CorrRiseOptions)
    map_pairs: int = 16


def run_audit(
    onnx_path: str | Path,
    pairs_file: str | Path,
    images_root: str | Path,
    out: str | Path,
    options: AuditOptions | None = None,
    overrides: InputOverrides | None = None,
) -> dict[str, Any]:
    """Audit ``onnx_path`` on the pairs and write the report folder ``out``.

    The options, the model (loaded and probed with onnxruntime), the flags and the pairs file
    are all validated before ``out`` is created, so a refused audit leaves nothing behind; an
    ``out`` that is, or lies inside, one of the inputs is refused.

    Args:
        onnx_path: the face-embedding graph (a facexai export or any third-party one).
        pairs_file: LFW-style pairs or ``path_a path_b 0|1`` lines (see docs/audit.md).
        images_root: the folder the pairs' image paths are relative to.
        out: the report folder to create.
        options: batch size, curves, shown pairs and CorrRISE maps (defaults: :class:`AuditOptions`).
        overrides: input size / mean / std / channel order from the command line.

    Returns:
        The report dictionary written to ``out/report.json``.
    """
    options = options or AuditOptions()
    _check_options(options)
    refuse_inputs(out, [onnx_path, pairs_file, images_root], what="audit --out")
    model = OnnxFaceModel(onnx_path, overrides)
    pairs = read_pairs(pairs_file, images_root)
    if model.explained or options.corrrise is None:
        options = replace(options, corrrise=None)
    else:
        fitted_patch(options.corrrise, model.spec.size, model.spec.size)  # refused before out is created
    out = Path(out)
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    records, curves = _run_pairs(model, pairs, out, options)
    undefined = _undefined_pairs(records)
    metrics = _metrics(records)
    for record in records:
        threshold, similarity = metrics["best_threshold"], record["similarity"]
        record["decision"] = None if threshold is None or similarity is None else bool(similarity >= threshold)
    report = {
        "model": _model_summary(model, options),
        "pairs_file": str(pairs_file),
        "images_root": str(images_root),
        "metrics": metrics,
        "curves": _curve_summary(curves, options.steps, model.baseline),
        "undefined_pairs": undefined,
        "pairs": records,
    }
    write_report(out, report)
    return report


def _undefined_pairs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs whose similarity is NaN or infinite (the model returned NaN/inf embeddings for them).

    Their similarity becomes ``None`` (JSON ``null``): one bad pair must not cost the report of
    all the others, nor poison the metrics, which are computed over the defined pairs only.
    """
    undefined = []
    for index, record in enumerate(records):
        if not np.isfinite(record["similarity"]):
            record["similarity"] = None
            undefined.append({"index": index, "path_a": record["path_a"], "path_b": record["path_b"]})
    if undefined:
        shown = "; ".join(f"#{u['index']} {u['path_a']} / {u['path_b']}" for u in undefined[:5])
        more = f" and {len(undefined) - 5} more" if len(undefined) > 5 else ""
        logger.warning(
            "%d of %d pairs have no defined similarity (the model returned NaN or infinite "
            "embeddings); left out of the metrics: %s%s",
            len(undefined),
            len(records),
            shown,
            more,
        )
    return undefined


def _metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Verification metrics over the pairs with a defined similarity, and how many were left out."""
    defined = [r for r in records if r["similarity"] is not None]
    scores = np.array([r["similarity"] for r in defined], np.float64)
    issame = np.array([r["issame"] for r in defined], bool)
    return {**am.verification_metrics(scores, issame), "n_undefined": len(records) - len(defined)}


def _check_options(options: AuditOptions) -> None:
    for name in ("batch_size", "steps"):
        value = getattr(options, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if options.corrrise is not None:
        options.corrrise.check()
    for name in ("curve_pairs", "max_shown", "map_pairs"):
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
    size, n = model.spec.size, len(batch)
    pixels = np.stack([load_image(p, size) for pair in batch for p in (pair.path_a, pair.path_b)])
    pixels = np.concatenate([pixels[0::2], pixels[1::2]])  # [A; B]
    inputs = model.to_input(pixels)
    embeddings = model.embed(inputs)
    partners = np.concatenate([embeddings[n:], embeddings[:n]])  # A against B, B against A
    similarity = cosine(embeddings[:n], embeddings[n:])
    mapped, maps = _batch_maps(model, inputs, partners, start, options)
    records = []
    for i, pair in enumerate(batch):
        index = start + i
        record = {
            "path_a": str(pair.path_a),
            "path_b": str(pair.path_b),
            "issame": pair.issame,
            "similarity": float(similarity[i]),
            "shown": index < options.max_shown,
            "has_maps": bool(mapped[i]),
        }
        if record["shown"]:
            record.update(_figures(out, index, pixels[[i, n + i]], maps[[i, n + i]] if mapped[i] else None))
        records.append(record)
    if mapped.any():
        _add_curves(model, inputs, maps, partners, start, mapped, options, records, curves)
    return records


def _batch_maps(
    model: OnnxFaceModel, inputs: np.ndarray, partners: np.ndarray, start: int, options: AuditOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Which pairs of the batch have maps (n,) and the maps (2n, H, W) of [A; B] (zeros elsewhere)."""
    n = len(inputs) // 2
    if model.explained:
        return np.ones(n, bool), model.explain(inputs, partners)[0]
    maps = np.zeros((2 * n, *inputs.shape[-2:]), np.float32)
    corrrise = options.corrrise
    if corrrise is None:  # --no-maps
        return np.zeros(n, bool), maps
    mapped = np.array([start + i < options.map_pairs for i in range(n)])
    if not mapped.any():
        return mapped, maps
    keep = np.flatnonzero(mapped)
    rows = np.concatenate([keep, n + keep])
    targets = partners[rows]

    def score(masked: np.ndarray, sample: np.ndarray) -> np.ndarray:
        # the similar-mode score of explain_pairs: cosine to the partner's clean embedding
        return cosine(model.embed(masked), targets[sample])

    maps[rows] = corrrise_maps(score, inputs[rows], corrrise, fill=model.baseline)
    return mapped, maps


def _figures(out: Path, index: int, pixels: np.ndarray, maps: np.ndarray | None) -> dict[str, str]:
    """Save the two overlays (or plain thumbnails without maps); return their relative paths."""
    paths = {}
    for side, k in (("a", 0), ("b", 1)):
        name = f"pairs/{index:05d}_{side}.png"
        picture = overlay(pixels[k], maps[k]) if maps is not None else _thumbnail(pixels[k])
        with atomic_path(out / name) as partial:
            picture.save(partial)
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
    mapped: np.ndarray,
    options: AuditOptions,
    records: list[dict[str, Any]],
    curves: dict[str, list[np.ndarray]],
) -> None:
    """Deletion/insertion curves of both sides of the mapped pairs among the first ``curve_pairs``."""
    n = len(records)
    keep = [i for i in range(n) if mapped[i] and start + i < options.curve_pairs]
    if not keep:
        return
    rows = np.array(keep + [n + i for i in keep])
    targets = partners[rows]

    def score(images: np.ndarray, sample: np.ndarray) -> np.ndarray:
        # cosine to the partner's *clean* embedding (the explained graph's similarity output)
        return np.concatenate(
            [
                model.similarity(images[j : j + options.batch_size], targets[sample[j : j + options.batch_size]])
                for j in range(0, len(images), options.batch_size)
            ]
        )

    deletion, insertion = am.perturbation_curves(score, inputs[rows], maps[rows], options.steps, model.baseline)
    del_auc, ins_auc = am.curve_auc(deletion), am.curve_auc(insertion)
    for k, i in enumerate(keep):
        records[i]["deletion_auc"] = [_finite(del_auc[k]), _finite(del_auc[len(keep) + k])]
        records[i]["insertion_auc"] = [_finite(ins_auc[k]), _finite(ins_auc[len(keep) + k])]
    curves["deletion"].append(deletion)
    curves["insertion"].append(insertion)


def _model_summary(model: OnnxFaceModel, options: AuditOptions) -> dict[str, Any]:
    """The model's summary plus where the maps come from."""
    summary = model.summary()
    if model.explained:
        summary["maps"] = f"{summary['explainer']} (in the graph)"
    elif options.corrrise is not None:
        c = options.corrrise
        summary["explainer"] = "corrrise"
        summary["explainer_options"] = {
            "n_masks": c.n_masks,
            "patch_size": c.patch_for(model.spec.size),
            "n_patches": c.n_patches,
            "seed": c.seed,
            "fill": model.baseline,
            "map_pairs": options.map_pairs,
        }
        summary["maps"] = "corrrise (black box, onnxruntime)"
    else:
        summary["maps"] = None
    return summary


def _finite(value: float) -> float | None:
    """A float for the report, ``None`` for NaN/inf (JSON has neither)."""
    return float(value) if np.isfinite(value) else None


def _curve_summary(curves: dict[str, list[np.ndarray]], steps: int, baseline: float) -> dict[str, Any] | None:
    """Mean curves and AUCs over the images whose curves are finite everywhere (``None`` if none)."""
    if not curves["deletion"]:
        return None
    deletion, insertion = np.concatenate(curves["deletion"]), np.concatenate(curves["insertion"])
    finite = np.isfinite(deletion).all(axis=1) & np.isfinite(insertion).all(axis=1)
    if not finite.any():
        logger.warning("no deletion/insertion curve is finite (the model returned NaN or infinite scores)")
        return None
    deletion, insertion = deletion[finite], insertion[finite]
    return {
        "steps": steps,
        "baseline": "zero" if baseline == 0.0 else f"pixel value {baseline:g}",
        "n_images": len(deletion),
        "n_undefined": int((~finite).sum()),
        "fractions": [k / steps for k in range(steps + 1)],
        "deletion_mean": deletion.mean(axis=0).tolist(),
        "insertion_mean": insertion.mean(axis=0).tolist(),
        "deletion_auc": float(am.curve_auc(deletion).mean()),
        "insertion_auc": float(am.curve_auc(insertion).mean()),
    }
