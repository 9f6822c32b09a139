"""The report of ``facexai evaluate``: markdown, CSV, JSON, curve plots, galleries and index.html.

Every number comes with its settings (``docs/metrics.md``): the markdown report lists each
metric's ``log_name`` (steps, baseline, score type) below the table with a one-line definition,
and the JSON carries them per column. ``index.html`` shows the table, the curves and the
galleries in one self-contained page with relative links; every text in it is escaped. The
pictures are drawn by :mod:`facexai.evaluate.figures`.
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from facexai.evaluate.figures import GALLERY_VIEWS, plot_method, plot_overlay, safe_name, write_galleries
from facexai.evaluate.settings import EvaluationResult, EvaluationSettings
from facexai.pipeline import ExplanationInputs
from facexai.writing import atomic_path, write_text_atomic

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
    "complexity": "Entropy",
    "road_morf": "ROAD MoRF",
    "road_lerf": "ROAD LeRF",
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
    "complexity": "mean entropy of the maps normalised to sum 1 (lower = less complex)",
    "road_morf": "mean score while the top-ranked pixels are removed and imputed (ROAD, most relevant first)",
    "road_lerf": "mean score while the lowest-ranked pixels are removed and imputed (ROAD, least relevant first)",
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


def direction(results: Sequence[EvaluationResult], column: str) -> bool | None:
    """Whether higher is better in ``column`` (None when no row says)."""
    for result in results:
        if column in result.higher_is_better:
            return result.higher_is_better[column]
    return None


def best_value(results: Sequence[EvaluationResult], column: str, higher: bool | None) -> float | None:
    """Best value among explainer rows (reference rows are excluded), for bold face."""
    values = [r.values.get(column, math.nan) for r in results if r.kind == "explainer"]
    values = [v for v in values if math.isfinite(v)]
    if higher is None or len(values) < 2:
        return None
    return max(values) if higher else min(values)


def cell(value: float | None, best: float | None) -> str:
    """A table cell: three decimals, ``n/a`` for undefined values, bold (markdown) for the best."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return f"**{text}**" if best is not None and value == best else text


def seconds_cell(value: float | None) -> str:
    """The seconds-per-map cell; a dash for reference rows."""
    return "–" if value is None else f"{value:.4f}"


def markdown_table(results: Sequence[EvaluationResult]) -> str:
    """Rows explainers (then reference rows), columns seconds per map and every metric."""
    cols = columns(results)
    directions = {c: direction(results, c) for c in cols}
    best = {c: best_value(results, c, directions[c]) for c in cols}
    header = ["explainer", "s / map", *(column_title(c, directions[c]) for c in cols)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in results:
        cells = [r.name if r.kind == "explainer" else f"*{r.name}*", seconds_cell(r.seconds_per_map)]
        cells += [cell(r.values.get(c), best[c] if r.kind == "explainer" else None) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def settings_paragraph(
    results: Sequence[EvaluationResult], settings: EvaluationSettings, context: Mapping[str, Any]
) -> str:
    """What every number depends on: metric settings, data, baselines, timing."""
    names: dict[str, str] = {}
    for result in results:
        names.update(result.settings)
    references = [r.name for r in results if r.kind == "reference"]
    lines = [
        "## Settings",
        "",
        f"- {model_sentence(context)}; device {settings.device}; up to {settings.max_samples} validation "
        f"samples (face pairs count once, both sides are explained), {settings.batch_size} per explainer call.",
        "- Pairs: e+ explains s = cos(embedding, partner's frozen embedding), e- explains 1 - s; each view "
        "is scored on its own target, so lower deletion / higher insertion AUC is better for both. "
        "Classifiers: the true class's softmax probability.",
        references_line(references, settings.seed),
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


def model_sentence(context: Mapping[str, Any]) -> str:
    """Where the model and data came from: a fit config (+ checkpoint) or a model file + data files."""
    if context.get("model_file"):
        return (
            f"Model {context.get('model', '?')} loaded from `{context['model_file']}`; data: {context.get('data', '?')}"
        )
    checkpoint = context.get("checkpoint") or "none (the config's freshly initialised, seeded weights)"
    return f"Model {context.get('model', '?')} from `{context.get('config', '?')}`; checkpoint: {checkpoint}"


def references_line(references: Sequence[str], seed: int) -> str:
    """The settings line that says what the reference rows are."""
    if len(references) < 2:
        return "- Reference rows: none."
    return (
        f"- Reference rows (italic): *{references[0]}* = i.i.d. uniform per-pixel maps (seed {seed}); "
        f"*{references[1]}* = 1 - map of the explainer with the largest insertion minus deletion AUC "
        "(e+ for pairs). They show what maps that rank pixels randomly or badly score."
    )


def html_table(results: Sequence[EvaluationResult]) -> str:
    """The markdown table's rows and columns as escaped HTML (best explainer value per column bold)."""
    cols = columns(results)
    directions = {c: direction(results, c) for c in cols}
    best = {c: best_value(results, c, directions[c]) for c in cols}
    header = ["explainer", "s / map", *(column_title(c, directions[c]) for c in cols)]
    rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in results:
        name = html.escape(r.name) if r.kind == "explainer" else f"<em>{html.escape(r.name)}</em>"
        cells = [name, html.escape(seconds_cell(r.seconds_per_map))]
        for c in cols:
            text = cell(r.values.get(c), best[c] if r.kind == "explainer" else None)
            bold = text.startswith("**")
            text = html.escape(text.strip("*"))
            cells.append(f"<strong>{text}</strong>" if bold else text)
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float (nested in dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def _figure(path: Path, out: Path, caption: str) -> str:
    """An image with its caption, linked relative to ``out`` so the folder can be moved."""
    link = html.escape(path.relative_to(out).as_posix(), quote=True)
    text = html.escape(caption, quote=True)
    return f'<figure><img src="{link}" alt="{text}"><figcaption>{text}</figcaption></figure>'


def _code_spans(escaped: str) -> str:
    """Markdown `code` spans of already escaped text as <code> elements."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", escaped)


HTML_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:90em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child,th:first-child{text-align:left}"
    "figure{display:inline-block;margin:0 1em 1em 0}img{max-width:100%}"
)


def write_index(
    results: Sequence[EvaluationResult], paths: Mapping[str, Path], out: Path, context: Mapping[str, Any]
) -> Path:
    """``index.html``: table, galleries and curves with relative links; every text is escaped."""
    views = [key.split()[1] for key in paths if key.startswith("gallery")]
    galleries = [_figure(paths[f"gallery {view}"], out, GALLERY_VIEWS[view][1]) for view in views]
    curves = [
        _figure(path, out, "all methods" if key == "overlay" else key.removeprefix("curves "))
        for key, path in paths.items()
        if key == "overlay" or key.startswith("curves")
    ]
    names = [html.escape(paths[key].name, quote=True) for key in ("markdown", "csv", "json")]
    files = " · ".join(f'<a href="{name}">{name}</a>' for name in names)
    body = [
        "<h1>Explainer evaluation</h1>",
        f"<p>{_code_spans(html.escape(model_sentence(context)))}.</p>",
        html_table(results),
        f"<p>Lower deletion / higher insertion AUC is better; italic rows are references. Settings and "
        f"definitions: {files}.</p>",
        "<h2>Gallery</h2>" + ("".join(galleries) or "<p>Only face-pair runs get a gallery.</p>"),
        "<h2>Deletion and insertion curves</h2>" + "".join(curves),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Explainer evaluation</title>'
        f"<style>{HTML_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    path = out / "index.html"
    write_text_atomic(path, page)
    return path


def write_markdown(
    results: Sequence[EvaluationResult], settings: EvaluationSettings, path: Path, context: Mapping[str, Any]
) -> Path:
    """``results.md``: the table and the settings paragraph."""
    parts = ["# Explainer evaluation", markdown_table(results), settings_paragraph(results, settings, context)]
    write_text_atomic(path, "\n\n".join(parts) + "\n")
    return path


def write_csv(results: Sequence[EvaluationResult], path: Path) -> Path:
    """``results.csv``: one row per method, columns ``explainer, kind, seconds_per_map, maps, <metric>...``."""
    cols = columns(results)
    with atomic_path(path) as partial, partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["explainer", "kind", "seconds_per_map", "maps", *cols])
        for r in results:
            seconds = "" if r.seconds_per_map is None else f"{r.seconds_per_map:.6g}"
            writer.writerow([r.name, r.kind, seconds, r.maps, *(f"{r.values.get(c, math.nan):.6g}" for c in cols)])
    return path


def write_json(
    results: Sequence[EvaluationResult], settings: EvaluationSettings, path: Path, context: Mapping[str, Any]
) -> Path:
    """``results.json``: rows with values, per-column settings and mean curves, for scripts.

    Standard JSON (RFC 8259): undefined values (NaN, e.g. verification AUCs of all-genuine pairs,
    or infinities) are written as ``null``, which every JSON parser reads; ``NaN`` tokens are not.
    """
    rows = []
    for r in results:
        curves = {mode: {view or "score": c.tolist() for view, c in lines.items()} for mode, lines in r.curves.items()}
        rows.append(
            {
                "name": r.name,
                "kind": r.kind,
                "seconds_per_map": r.seconds_per_map,
                "maps": r.maps,
                "values": r.values,
                "settings": r.settings,
                "higher_is_better": r.higher_is_better,
                "curves": curves,
            }
        )
    payload = {"settings": asdict(settings), "context": dict(context), "results": rows}
    write_text_atomic(path, json.dumps(finite_or_null(payload), indent=2, allow_nan=False, default=str))
    return path


def write_report(
    results: Sequence[EvaluationResult],
    settings: EvaluationSettings,
    out: str | Path,
    context: Mapping[str, Any],
    gallery: ExplanationInputs | None = None,
) -> dict[str, Path]:
    """Write every output into ``out``; returns label -> path.

    ``gallery`` is the first chunk of explained samples (their maps are each row's ``examples``).
    """
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
    paths.update(write_galleries(results, gallery, out))
    paths["html"] = write_index(results, paths, out, context)
    return paths
