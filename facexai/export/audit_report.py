"""Rendering of the audit report: heatmap overlays (PNG), curve plots (SVG) and index.html.

Only numpy and Pillow: the report is a static folder that opens in any browser, with the
numbers also in ``report.json`` for scripts.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facexai.writing import write_text_atomic

#: opacity of the heatmap over the face
OVERLAY_ALPHA = 0.5

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>facexai audit: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: middle; }}
.pair img {{ width: 112px; height: 112px; image-rendering: pixelated; margin-right: 4px; }}
.wrong {{ background: #fde8e8; }}
.metrics td:first-child {{ font-weight: 600; }}
figure {{ display: inline-block; margin: 0 2em 1em 0; }}
</style></head><body>
<h1>facexai audit</h1>
<p>Model <code>{title}</code> ({model_info}); pairs <code>{pairs_file}</code>.</p>
<h2>Verification</h2>
<table class="metrics">{metric_rows}</table>
{curves}
<h2>Pairs</h2>
<p>{pairs_note}</p>
<table><tr><th>#</th><th>images{map_header}</th><th>same</th><th>similarity</th><th>decision</th>{auc_header}</tr>
{pair_rows}
</table>
</body></html>
"""


def colormap(values: np.ndarray) -> np.ndarray:
    """Jet-like RGB (H, W, 3) floats in [0, 1] for values in [0, 1] (blue = low, red = high)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # red, green, blue peaks
    return np.clip(1.5 - np.abs(4.0 * (v - centres)), 0.0, 1.0)


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """The RGB uint8 image (H, W, 3) blended with the colour-mapped map (H, W) in [0, 1]."""
    saliency = np.nan_to_num(saliency, nan=0.0, posinf=1.0, neginf=0.0)  # a NaN map draws as "low"
    blended = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * colormap(saliency)
    return Image.fromarray((blended * 255).round().clip(0, 255).astype(np.uint8))


def curve_svg(curves: dict[str, np.ndarray], title: str, width: int = 360, height: int = 220) -> str:
    """A minimal SVG line chart of mean curves (fraction perturbed on x, score on y)."""
    colours = {"deletion": "#d62728", "insertion": "#1f77b4"}
    values = np.concatenate([c for c in curves.values()])
    low, high = float(min(values.min(), 0.0)), float(max(values.max(), 1e-6))
    pad = 30

    def point(i: int, n: int, value: float) -> str:
        x = pad + (width - 2 * pad) * i / (n - 1)
        y = height - pad - (height - 2 * pad) * (value - low) / (high - low)
        return f"{x:.1f},{y:.1f}"

    lines = [
        f'<polyline fill="none" stroke="{colours.get(name, "#333")}" stroke-width="2" '
        f'points="{" ".join(point(i, len(c), float(v)) for i, v in enumerate(c))}"><title>{name}</title></polyline>'
        for name, c in curves.items()
    ]
    legend = [
        f'<text x="{width - pad - 70}" y="{pad + 14 * k}" fill="{colours.get(name, "#333")}" '
        f'font-size="11">{name}</text>'
        for k, name in enumerate(curves)
    ]
    axes = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="{width / 2}" y="{height - 8}" font-size="11" text-anchor="middle">'
        "fraction of pixels perturbed</text>"
        f'<text x="4" y="{pad - 8}" font-size="11">{high:.2f}</text>'
        f'<text x="4" y="{height - pad}" font-size="11">{low:.2f}</text>'
        f'<text x="{width / 2}" y="16" font-size="12" text-anchor="middle">{html.escape(title)}</text>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{axes}{"".join(lines)}{"".join(legend)}</svg>'
    )


def write_report(out: Path, report: dict[str, Any]) -> Path:
    """Write ``report.json`` and ``index.html`` into ``out``; return the HTML path.

    Each file is written beside its target and renamed over it when complete, so a failure
    half-way keeps the previous report. ``allow_nan=False``: the audit replaced NaN by ``None``.
    """
    write_text_atomic(out / "report.json", json.dumps(report, indent=2, allow_nan=False))
    page = PAGE.format(
        title=html.escape(report["model"]["path"]),
        model_info=html.escape(_model_info(report["model"])),
        pairs_file=html.escape(report["pairs_file"]),
        metric_rows=_metric_rows(report["metrics"]),
        curves=_curves_section(out, report.get("curves")),
        pairs_note=html.escape(_pairs_note(report)),
        map_header=" (heatmap: explanation against the partner)" if report["model"].get("maps") else "",
        auc_header="<th>deletion AUC (A, B)</th><th>insertion AUC (A, B)</th>" if report.get("curves") else "",
        pair_rows="\n".join(_pair_row(k, pair) for k, pair in enumerate(report["pairs"]) if pair.get("shown")),
    )
    path = out / "index.html"
    write_text_atomic(path, page)
    return path


def _model_info(model: dict[str, Any]) -> str:
    """One line: size, normalisation, where the maps come from, and who wrote the file."""
    maps = model.get("maps") or "no maps"
    mean = _channels(model.get("input_mean"))
    std = _channels(model.get("input_std"))
    fed = f"{model.get('channel_order', 'RGB')} (pixel - {mean}) / {std}"
    origin = f"facexai {model['version']}" if model.get("facexai_export", True) else "third-party model"
    notes = "".join(f"; note: {n}" for n in model.get("notes") or [])
    return f"{model['task']}, {model['input_size']} px, fed {fed}, maps: {maps}, {origin}{notes}"


def _channels(values: list[float] | None) -> str:
    if not values:
        return "?"
    return f"{values[0]:g}" if len(set(values)) == 1 else "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _metric_rows(metrics: dict[str, Any]) -> str:
    labels = {
        "n_pairs": "pairs",
        "n_genuine": "genuine pairs",
        "roc_auc": "ROC AUC",
        "eer": "EER",
        "eer_threshold": "EER threshold",
        "accuracy": "accuracy (best threshold)",
        "best_threshold": "best threshold",
    }
    rows = [f"<tr><td>{label}</td><td>{_fmt(metrics.get(key))}</td></tr>" for key, label in labels.items()]
    if metrics.get("undefined_reason"):
        rows.append(f"<tr><td>note</td><td>{html.escape(metrics['undefined_reason'])}</td></tr>")
    return "".join(rows)


def _curves_section(out: Path, curves: dict[str, Any] | None) -> str:
    if not curves:
        return (
            "<p>No deletion/insertion curves: no maps were drawn (a graph without an explainer "
            "audited without CorrRISE maps, or no curve pairs requested).</p>"
        )
    mean = {name: np.asarray(curves[f"{name}_mean"]) for name in ("deletion", "insertion")}
    svg = curve_svg(mean, f"mean curves over {curves['n_images']} images ({curves['steps']} steps)")
    write_text_atomic(out / "curves.svg", svg)
    return (
        "<h2>Deletion / insertion</h2><figure>" + svg + "<figcaption>Score: cosine similarity to the "
        f"partner's clean embedding; baseline {curves['baseline']} (normalised space). "
        f"Mean AUC: deletion {_fmt(curves['deletion_auc'])} (lower is better), insertion "
        f"{_fmt(curves['insertion_auc'])} (higher is better).</figcaption></figure>"
    )


def _pairs_note(report: dict[str, Any]) -> str:
    shown = sum(1 for p in report["pairs"] if p.get("shown"))
    note = f"Showing {shown} of {len(report['pairs'])} pairs (all are in report.json)."
    undefined = report.get("undefined_pairs") or []
    if undefined:
        note += (
            f" {len(undefined)} pairs have an undefined similarity (the model returned NaN or infinite "
            f"embeddings; pairs {', '.join(str(u['index']) for u in undefined[:20])}"
            f"{', ...' if len(undefined) > 20 else ''}) and are left out of the metrics."
        )
    return note


def _pair_row(index: int, pair: dict[str, Any]) -> str:
    images = "".join(
        f'<img src="{html.escape(pair[f"image_{side}"])}" alt="{html.escape(pair[f"path_{side}"])}" '
        f'title="{html.escape(pair[f"path_{side}"])}">'
        for side in ("a", "b")
    )
    decision = pair.get("decision")
    wrong = decision is not None and decision != pair["issame"]
    verdict = "n/a" if decision is None else ("same" if decision else "different") + (" (wrong)" if wrong else "")
    aucs = ""
    if "deletion_auc" in pair:
        aucs = (
            f"<td>{_fmt(pair['deletion_auc'][0])}, {_fmt(pair['deletion_auc'][1])}</td>"
            f"<td>{_fmt(pair['insertion_auc'][0])}, {_fmt(pair['insertion_auc'][1])}</td>"
        )
    css = ' class="wrong"' if wrong else ""
    return (
        f'<tr{css}><td>{index}</td><td class="pair">{images}</td><td>{"yes" if pair["issame"] else "no"}</td>'
        f"<td>{_fmt(pair['similarity']) if pair['similarity'] is not None else 'undefined'}</td>"
        f"<td>{verdict}</td>{aucs}</tr>"
    )


def _fmt(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))
