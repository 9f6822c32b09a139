"""Explain the samples with every explainer, score them, and add the reference rows.

Each chosen explainer explains every chunk of samples (classifiers: the true class; face pairs:
both sides, e+ and e-) through :func:`facexai.pipeline.explain_and_score`, the step the
training callback runs too, so the same settings give the same numbers. Two reference rows show
what a map that ranks pixels badly scores: a random map and the inverted map of the best method.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from facexai.evaluate.samples import adapter_for, explanation_chunks
from facexai.evaluate.settings import INVERTED_PREFIX, OWNER, RANDOM_ROW, EvaluationResult, EvaluationSettings
from facexai.explain import Explainer, Target, available_explainers
from facexai.pipeline import ExplanationInputs, MetricSuite, ViewSpec, clock, explain_and_score
from facexai.pipeline import build_explainers as build_from_specs
from facexai.pipeline.views import MapMaker

#: makes one view's maps of one chunk: (chunk index, view spec, images, target) -> maps (N, H, W)
MapFn = Callable[[int, ViewSpec, Tensor, Target], Tensor]


def build_explainers(names: Sequence[str], options: Mapping[str, Any] | None = None) -> dict[str, Explainer]:
    """Explainers by label; ``options[label]`` are keyword options (``method`` runs another method).

    Built by :func:`facexai.pipeline.build_explainers`, after the checks of the command line:
    at least one name, options only for named labels, JSON objects as options, and no label
    that a reference row uses.

    Raises:
        ValueError: unknown names (listing ``available_explainers()``), bad or stray options.
    """
    options = dict(options or {})
    if not names:
        raise ValueError(f"choose at least one explainer. Available: {', '.join(available_explainers())}")
    stray = sorted(set(options) - set(names))
    if stray:
        raise ValueError(f"--explainer-options names {stray} which are not in --explainers {list(names)}")
    for label in names:
        if label == RANDOM_ROW or label.startswith(INVERTED_PREFIX):
            raise ValueError(f"explainer label {label!r} is reserved for the reference rows")
        if options.get(label) is not None and not isinstance(options[label], Mapping):
            raise ValueError(f"options of explainer {label!r} must be a JSON object, got {options[label]!r}")
    return build_from_specs({label: options.get(label) for label in names})


def explainer_maps(explainer: Explainer, model: nn.Module) -> MapFn:
    """A map function running ``explainer``."""

    def make(index: int, spec: ViewSpec, images: Tensor, target: Target) -> Tensor:
        return explainer(model, images, target)

    return make


def random_maps(seed: int) -> MapFn:
    """I.i.d. uniform per-pixel maps: the ranking a method must beat to carry any information."""
    generator = torch.Generator().manual_seed(seed)

    def make(index: int, spec: ViewSpec, images: Tensor, target: Target) -> Tensor:
        n, _, h, w = images.shape
        return torch.rand(n, h, w, generator=generator).to(images.device)

    return make


def inverted_maps(stored: list[dict[str, Tensor]]) -> MapFn:
    """``1 - map`` of stored maps: the same method's ranking reversed, least important first."""

    def make(index: int, spec: ViewSpec, images: Tensor, target: Target) -> Tensor:
        return 1.0 - stored[index][spec.suffix]

    return make


def _timed(make_maps: MapFn, index: int, images: Tensor, seconds: list[float]) -> MapMaker:
    """``make_maps`` for chunk ``index`` as the pipeline calls it, its wall time added to ``seconds``."""

    def make(spec: ViewSpec, target: Target) -> Tensor:
        start = clock(images.device)
        maps = make_maps(index, spec, images, target)
        seconds.append(clock(images.device) - start)
        return maps

    return make


def score_method(
    name: str,
    kind: str,
    model: nn.Module,
    chunks: list[ExplanationInputs],
    make_maps: MapFn,
    settings: EvaluationSettings,
    progress: Any = None,
) -> tuple[EvaluationResult, list[dict[str, Tensor]]]:
    """Maps of one method for every chunk and view, their metrics and the map function's wall time.

    Returns:
        The report row and the maps per chunk (``{view suffix: maps}``), kept for the inverted row.
    """
    suite = MetricSuite(settings.metric_specs(), settings.mean, settings.std, OWNER, settings.chunk_size)
    all_maps: list[dict[str, Tensor]] = []
    seconds: list[float] = []
    for index, inputs in enumerate(chunks):
        views = explain_and_score(suite, "", _timed(make_maps, index, inputs.images, seconds), inputs, model)
        all_maps.append({view.suffix: view.maps for view in views})
        if progress is not None:
            progress.update(1)
    count = sum(len(maps) for chunk in all_maps for maps in chunk.values())
    result = _result(name, kind, suite, sum(seconds) / max(count, 1), count)
    result.examples = {suffix: maps.detach().cpu() for suffix, maps in all_maps[0].items()}
    return result, all_maps


def _result(name: str, kind: str, suite: MetricSuite, seconds: float, count: int) -> EvaluationResult:
    """One report row from a suite whose metric keys are the report's columns."""
    result = EvaluationResult(name, kind, seconds_per_map=seconds if kind == "explainer" else None, maps=count)
    values = suite.compute()
    values.pop("samples", None)
    settings, directions = suite.settings(), suite.directions()
    result.values = {column: float(value) for column, value in values.items()}
    result.settings = {column: settings[column] for column in values}
    result.higher_is_better = {column: bool(directions[column]) for column in values}
    for panels in suite.mean_curves().values():
        for mode, lines in panels.items():
            result.curves.setdefault(mode, {}).update({view: curve.cpu() for view, curve in lines.items()})
    return result


def warm_up(explainer: Explainer, model: nn.Module, inputs: ExplanationInputs) -> None:
    """One untimed call on one sample, so one-time costs (layer search, allocator) are not timed."""
    index = torch.zeros(1, dtype=torch.long, device=inputs.images.device)
    explainer(model, inputs.images[:1], inputs.target.select(index))


def best_explainer(results: Sequence[EvaluationResult]) -> EvaluationResult:
    """The explainer row with the largest insertion AUC minus deletion AUC (e+ for pairs).

    Rows without both columns (other metrics chosen) or with NaN rank last; ties keep the first.
    """

    def gap(result: EvaluationResult) -> float:
        suffix = "_pos" if "deletion_auc_pos" in result.values else ""
        value = result.values.get(f"insertion_auc{suffix}", math.nan) - result.values.get(
            f"deletion_auc{suffix}", math.nan
        )
        return value if math.isfinite(value) else -math.inf

    return max(results, key=gap)


def run_evaluation(
    module: nn.Module,
    batch: Any,
    explainers: Mapping[str, Explainer],
    settings: EvaluationSettings,
    progress: bool = True,
) -> list[EvaluationResult]:
    """Explain ``batch`` with every explainer, score it, and add the random and inverted rows."""
    device = torch.device(settings.device)
    module.to(device).eval()
    chunks = explanation_chunks(module, batch, settings)
    model = adapter_for(module).resolve_model(module)
    total = len(chunks) * (len(explainers) + 2)
    bar = tqdm(total=total, desc="evaluate", disable=not progress, leave=False, file=sys.stderr)
    results: list[EvaluationResult] = []
    best_maps: list[dict[str, Tensor]] = []
    try:
        for label, explainer in explainers.items():
            bar.set_postfix_str(label)
            warm_up(explainer, model, chunks[0])
            make = explainer_maps(explainer, model)
            result, maps = score_method(label, "explainer", model, chunks, make, settings, bar)
            results.append(result)
            if best_explainer(results) is result:  # only the best method's maps are kept
                best_maps = maps
        best = best_explainer(results).name
        bar.set_postfix_str("references")
        references = [
            (RANDOM_ROW, random_maps(settings.seed)),
            (f"{INVERTED_PREFIX} {best}", inverted_maps(best_maps)),
        ]
        for label, make in references:
            results.append(score_method(label, "reference", model, chunks, make, settings, bar)[0])
    finally:
        bar.close()
    return results
