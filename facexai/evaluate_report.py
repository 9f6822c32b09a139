"""The report of ``facexai evaluate``: a markdown table, CSV, JSON and deletion/insertion plots.

Every number comes with its settings (METRICS.md): the markdown report lists each metric's
``log_name`` (steps, baseline, score type) below the table, and the JSON carries them per column.
Plots are drawn on a bare ``matplotlib.figure.Figure`` (Agg canvas, no pyplot global state).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from facexai.evaluate import EvaluationResult, EvaluationSettings

#: short column titles; the settings paragraph says what exactly each one is
TITLES = {
    "deletion_auc": "Del AUC",
    "insertion_auc": "Ins AUC",
    "average_drop": "AD %",
    "increase_in_confidence": "IC %",
    "average_drop_in_deletion": "ADD %",
    "pointing_game": "PG",
    "energy_pointing_game": "EPG",
    "sparsity": "Gini",
    "verification_deletion_auc": "VerAcc Del AUC",
    "verification_insertion_auc": "VerAcc Ins AUC",
}
VIEW_TITLES = {"pos": "e+", "neg": "e-"}
#: one sentence per metric for the settings paragraph
DEFINITIONS = {
    "deletion_auc": "area under the mean score while the top-ranked pixels are replaced by the baseline (RISE)",
    "insertion_auc": "area under the mean score while the top-ranked pixels are restored onto the baseline (RISE)",
    "average_drop": "mean drop of the score when the image is multiplied by its map, x100 (Grad-CAM++)",
    "increase_in_confidence": "share of samples whose score rises when the image is multiplied by its map, x100",
    "average_drop_in_deletion": "mean drop of the score when the image is multiplied by (1 - map), x100 (LIFT-CAM)",
    "pointing_game": "share of maps whose maximum lies in the ground-truth identity mask",
    "energy_pointing_game": "mean share of map mass inside the ground-truth identity mask",
    "sparsity": "mean Gini index of the maps (higher = more concentrated)",
    "verification_deletion_auc": "verification accuracy at the clean EER threshold while the probe's top e+ "
    "pixels are zeroed (CorrRISE/FAME protocol)",
    "verification_insertion_auc": "verification accuracy at the clean EER threshold while only the probe's top "
    "e+ pixels are kept",
}


def columns(results: Sequence[EvaluationResult]) -> list[str]:
    """Metric columns in first-seen order over all rows."""
    seen: dict[str, None] = {}
    for result in results:
        seen.update(dict.fromkeys(result.values))
    return list(seen)


def column_title(column: str, higher_is_better: bool | None) -> str:
    """``Del AUC e+ ↓`` for ``deletion_auc_pos``."""
    base, _, suffix = column.rpartition("_")
    if suffix not in VIEW_TITLES:
        base, suffix = column, ""
    title = " ".join(part for part in (TITLES.get(base, base), VIEW_TITLES.get(suffix, "")) if part)
    arrow = "" if higher_is_better is None else (" ↑" if higher_is_better else " ↓")
    return title + arrow


def _direction(results: Sequence[EvaluationResult], column: str) -> bool | None:
    for result in results:
        if column in result.higher_is_better:
            return result.higher_is_better[column]
    return None


def _best(results: Sequence[EvaluationResult], column: str, higher: bool | None) -> float | None:
    """Best value among explainer rows (reference rows are excluded), for bold face."""
    values = [r.values.get(column, math.nan) for r in results if r.kind == "explainer"]
    values = [v for v in values if math.isfinite(v)]
    if higher is None or len(values) < 2:
        return None
    return max(values) if higher else min(values)


def _cell(value: float | None, best: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return f"**{text}**" if best is not None and value == best else text


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def markdown_table(results: Sequence[EvaluationResult]) -> str:
    """Rows explainers (then reference rows), columns seconds per map and every metric."""
    cols = columns(results)
    directions = {c: _direction(results, c) for c in cols}
    best = {c: _best(results, c, directions[c]) for c in cols}
    header = ["explainer", "s / map", *(column_title(c, directions[c]) for c in cols)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in results:
        cells = [r.name if r.kind == "explainer" else f"*{r.name}*", _seconds(r.seconds_per_map)]
        cells += [_cell(r.values.get(c), best[c] if r.kind == "explainer" else None) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def settings_paragraph(
    results: Sequence[EvaluationResult], settings: EvaluationSettings, context: Mapping[str, Any]
) -> str:
    """What every number depends on: metric settings, data, baselines, timing."""
    names: dict[str, str] = {}
    for result in results:
        names.update(result.settings)
    checkpoint = context.get("checkpoint") or "none (the config's freshly initialised, seeded weights)"
    references = [r.name for r in results if r.kind == "reference"]
    lines = [
        "## Settings",
        "",
        f"- Model {context.get('model', '?')} from `{context.get('config', '?')}`; checkpoint: {checkpoint}; "
        f"device {settings.device}; up to {settings.max_samples} validation samples (face pairs count once, "
        f"both sides are explained), {settings.batch_size} per explainer call.",
        "- Pairs: e+ explains s = cos(embedding, partner's frozen embedding), e- explains 1 - s; each view "
        "is scored on its own target, so lower deletion / higher insertion AUC is better for both. "
        "Classifiers: the true class's softmax probability.",
        _references_line(references, settings.seed),
        "- s / map: wall time of the explainer call per map (e+ and e- maps each count), after one untimed "
        "warm-up call on one sample; metric scoring is not included. Bold: best explainer per column.",
        "",
        "Metric settings (column: name with settings — definition):",
        "",
    ]
    for column, log_name in names.items():
        base = column.rsplit("_", 1)[0] if column.rsplit("_", 1)[-1] in VIEW_TITLES else column
        lines.append(f"- `{column}`: `{log_name}` — {DEFINITIONS.get(base, '')}")
    return "\n".join(lines)


def _references_line(references: Sequence[str], seed: int) -> str:
    if len(references) < 2:
        return "- Reference rows: none."
    return (
        f"- Reference rows (italic): *{references[0]}* = i.i.d. uniform per-pixel maps (seed {seed}); "
        f"*{references[1]}* = 1 - map of the explainer with the largest insertion minus deletion AUC "
        "(e+ for pairs). They show what maps that rank pixels randomly or badly score."
    )


def write_markdown(
    results: Sequence[EvaluationResult], settings: EvaluationSettings, path: Path, context: Mapping[str, Any]
) -> Path:
    """``results.md``: the table and the settings paragraph."""
    parts = ["# Explainer evaluation", markdown_table(results), settings_paragraph(results, settings, context)]
    text = "\n\n".join(parts) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def write_csv(results: Sequence[EvaluationResult], path: Path) -> Path:
    """``results.csv``: one row per method, columns ``explainer, kind, seconds_per_map, maps, <metric>...``."""
    cols = columns(results)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["explainer", "kind", "seconds_per_map", "maps", *cols])
        for r in results:
            seconds = "" if r.seconds_per_map is None else f"{r.seconds_per_map:.6g}"
            writer.writerow([r.name, r.kind, seconds, r.maps, *(f"{r.values.get(c, math.nan):.6g}" for c in cols)])
    return path


def write_json(
    results: Sequence[EvaluationResult], settings: EvaluationSettings, path: Path, context: Mapping[str, Any]
) -> Path:
    """``results.json``: rows with values, per-column settings and mean curves, for scripts."""
    rows = []
    for r in results:
        curves = {mode: {view or "score": c.tolist() for view, c in lines.items()} for mode, lines in r.curves.items()}
        rows.append({
            "name": r.name, "kind": r.kind, "seconds_per_map": r.seconds_per_map, "maps": r.maps,
            "values": r.values, "settings": r.settings, "higher_is_better": r.higher_is_better, "curves": curves,
        })  # fmt: skip
    payload = {"settings": asdict(settings), "context": dict(context), "results": rows}
    path.write_text(json.dumps(payload, indent=2, allow_nan=True, default=str), encoding="utf-8")
    return path


def safe_name(name: str) -> str:
    """A file-name-safe version of a row label (``inverted gradcam++`` -> ``inverted_gradcam++``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "method"


def curves_figure(panels: Mapping[str, Mapping[str, torch.Tensor]], title: str, dashed: Sequence[str] = ()) -> Figure:
    """One panel per ``panels`` key (e.g. "deletion e+"), one line per inner key."""
    fig = Figure(figsize=(3.4 * max(len(panels), 1), 3.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (panel, lines) in zip(axes, panels.items()):
        for label, curve in lines.items():
            curve = curve.detach().float().cpu()
            style = "--" if label in dashed else "-"
            ax.plot(torch.linspace(0, 1, len(curve)).numpy(), curve.numpy(), style, label=label or "score")
        verb = "deleted" if panel.startswith("deletion") else "inserted"
        ax.set_xlabel(f"fraction of pixels {verb}")
        ax.set_ylabel("mean score")
        ax.set_title(panel, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_method(result: EvaluationResult, path: Path) -> Path:
    """Mean deletion and insertion curves of one method, one line per view."""
    fig = curves_figure(result.curves, result.name)
    fig.savefig(path, format="png")
    return path


def plot_overlay(results: Sequence[EvaluationResult], path: Path) -> Path:
    """All methods on shared axes: one panel per (mode, view), reference rows dashed."""
    panels: dict[str, dict[str, torch.Tensor]] = {}
    for r in results:
        for mode, lines in r.curves.items():
            for view, curve in lines.items():
                panels.setdefault(f"{mode} {view}".strip(), {})[r.name] = curve
    dashed = [r.name for r in results if r.kind == "reference"]
    fig = curves_figure(dict(sorted(panels.items(), key=lambda kv: kv[0].split()[-1])), "all methods", dashed)
    fig.savefig(path, format="png")
    return path


def write_report(
    results: Sequence[EvaluationResult], settings: EvaluationSettings, out: str | Path, context: Mapping[str, Any]
) -> dict[str, Path]:
    """Write every output into ``out``; returns label -> path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": write_markdown(results, settings, out / "results.md", context),
        "csv": write_csv(results, out / "results.csv"),
        "json": write_json(results, settings, out / "results.json", context),
        "overlay": plot_overlay(results, out / "curves_overlay.png"),
    }
    for r in results:
        paths[f"curves {r.name}"] = plot_method(r, out / f"curves_{safe_name(r.name)}.png")
    return paths
