"""``python -m facexai evaluate``: compare explainers with faithfulness metrics on validation data.

The model and data come from the YAML of a ``fit`` run (``--config``) or from a pretrained face
model file with verification data only (``--model`` with ``--bin`` or ``--pairs``); see
:mod:`facexai.evaluate_inputs`. Each chosen explainer explains up to
``--max-samples`` validation samples (classifiers: the true class; face pairs: both sides, e+ and
e-), every applicable metric is computed with its settings recorded, and two reference rows show
what a map that ranks pixels badly scores: a random map and the inverted map of the best method.
The report (``results.md``, ``results.csv``, ``results.json``, curve PNGs, ``gallery.png``,
``index.html``) is written by :mod:`facexai.evaluate_report`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from tqdm.auto import tqdm

from facexai.pipeline.inputs import BatchAdapter, ExplanationInputs, head

# re-exported: scripts and tests import the config loaders from here
from facexai.evaluate_inputs import (  # noqa: F401
    build_from_config,
    evaluation_inputs,
    instantiate,
    load_checkpoint,
    load_config,
    resolve_class,
)
from facexai.explain import Explainer, SimilarityTarget, Target, available_explainers, create_explainer
from facexai.metrics import create_metric
from facexai.metrics.functional import (
    deletion_insertion_curves,
    masked_scores,
    target_score_fn,
    verification_perturbation_curves,
)

#: rows that are not explainers; explainer labels may not take these names
RANDOM_ROW = "random"
INVERTED_PREFIX = "inverted"
#: samples shown in the report's gallery (pairs: rows of A, maps of A, B, maps of B)
GALLERY_SAMPLES = 4
DELETION_BASELINE = "zero"
INSERTION_BASELINE = "blur"


@dataclass(frozen=True)
class ViewSpec:
    """One set of maps per sample: single images (""), or a face pair's e+ ("pos") / e- ("neg").

    ``score`` names what the metrics score and is recorded in their settings; ratio forms of
    Average Drop only make sense for positive scores (probabilities), so cosine scores use the
    difference form (METRICS.md).
    """

    suffix: str
    label: str
    score: str
    softmax: bool
    form: str


CLASS_VIEW = ViewSpec("", "", "probability", True, "ratio")
POS_VIEW = ViewSpec("pos", "e+", "cosine", False, "difference")
NEG_VIEW = ViewSpec("neg", "e-", "1-cosine", False, "difference")


@dataclass
class EvaluationSettings:
    """What every number depends on; written into the report.

    Attributes:
        steps: deletion/insertion steps (``steps + 1`` points per curve).
        verification_steps: steps of the verification-accuracy protocol (10: P = 0, 10, .., 100 %).
        batch_size: samples (images, or pairs) per explainer call.
        max_samples: samples taken from the first validation loader.
        seed: seed of the random-map baseline.
        device: where the model, explainers and metrics run.
        chunk_size: images per forward pass when scoring perturbed images.
    """

    steps: int = 50
    verification_steps: int = 10
    batch_size: int = 16
    max_samples: int = 64
    seed: int = 0
    device: str = "cpu"
    chunk_size: int = 128


@dataclass
class EvaluationResult:
    """One row of the report: a method (or a reference map) and its metric values.

    Attributes:
        name: row label ("gradcam", "random", "inverted gradcam").
        kind: "explainer" or "reference".
        values: column key (``<metric>[_pos|_neg]``) -> value.
        settings: column key -> the metric's ``log_name`` (carries steps, baseline, score).
        higher_is_better: column key -> direction of the metric.
        curves: ``{"deletion"|"insertion": {view label: mean curve (steps + 1,)}}``.
        seconds_per_map: mean wall time of the explainer per map; None for reference rows.
        maps: number of maps scored.
        examples: ``{view suffix: maps}`` of the first chunk, on the CPU, for the report's gallery.
    """

    name: str
    kind: str
    values: dict[str, float] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    curves: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    seconds_per_map: float | None = None
    maps: int = 0
    examples: dict[str, Tensor] = field(default_factory=dict)


# ----------------------------------------------------------------------------- explainers


def build_explainers(names: Sequence[str], options: Mapping[str, Any] | None = None) -> dict[str, Explainer]:
    """Explainers by label; ``options[label]`` are keyword options (``method`` runs another method).

    Raises:
        ValueError: unknown names (listing ``available_explainers()``), bad or stray options.
    """
    options = dict(options or {})
    if not names:
        raise ValueError(f"choose at least one explainer. Available: {', '.join(available_explainers())}")
    stray = sorted(set(options) - set(names))
    if stray:
        raise ValueError(f"--explainer-options names {stray} which are not in --explainers {list(names)}")
    explainers: dict[str, Explainer] = {}
    for label in names:
        if label == RANDOM_ROW or label.startswith(INVERTED_PREFIX):
            raise ValueError(f"explainer label {label!r} is reserved for the reference rows")
        explainers[label] = _create(label, options.get(label))
    return explainers


def _create(label: str, options: Any) -> Explainer:
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"options of explainer {label!r} must be a JSON object, got {options!r}")
    kwargs = dict(options or {})
    method = kwargs.pop("method", label)
    try:
        return create_explainer(method, **kwargs)
    except TypeError as err:
        raise ValueError(f"invalid options {kwargs} for explainer {method!r}: {err}") from err


# ----------------------------------------------------------------------------- samples


def collect_samples(datamodule: Any, max_samples: int) -> Any:
    """The first ``max_samples`` samples of the first validation loader, as one batch."""
    if hasattr(datamodule, "setup"):
        datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    if isinstance(loader, (list, tuple)):
        loader = loader[0]  # the first named validation set
    batches, count = [], 0
    for batch in loader:
        batch = head(batch, max_samples - count)
        batches.append(batch)
        count += batch_length(batch)
        if count >= max_samples:
            break
    if not batches:
        raise ValueError("the datamodule's validation loader yielded no batch")
    return concat_batches(batches)


def batch_length(batch: Any) -> int:
    """Samples in a (nested) batch: the length of its first tensor."""
    if isinstance(batch, Tensor):
        return len(batch)
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else []
    for value in values:
        if isinstance(value, (Tensor, Mapping, list, tuple)):
            return batch_length(value)
    raise ValueError("cannot tell the batch size: the batch holds no tensor")


def concat_batches(batches: list[Any]) -> Any:
    """Concatenate structurally equal batches along the sample dimension."""
    first = batches[0]
    if isinstance(first, Tensor):
        return torch.cat(batches) if first.dim() else first
    if isinstance(first, Mapping):
        return {key: concat_batches([b[key] for b in batches]) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(concat_batches(list(parts)) for parts in zip(*batches, strict=True))
    return first


def slice_batch(batch: Any, start: int, stop: int, device: torch.device) -> Any:
    """Samples ``start:stop`` of a (nested) batch, on ``device``."""
    if isinstance(batch, Tensor):
        return (batch[start:stop] if batch.dim() else batch).to(device)
    if isinstance(batch, Mapping):
        return {key: slice_batch(value, start, stop, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(slice_batch(value, start, stop, device) for value in batch)
    return batch


def adapter_for(module: nn.Module) -> BatchAdapter:
    """LightningModules hold their network in ``.model`` (or name it); a bare face model is the network."""
    import pytorch_lightning as pl

    return BatchAdapter() if isinstance(module, pl.LightningModule) else BatchAdapter(model_attr=None)


def explanation_chunks(module: nn.Module, batch: Any, settings: EvaluationSettings) -> list[ExplanationInputs]:
    """Explainer inputs per chunk of ``batch_size`` samples (pair targets computed once, here)."""
    adapter = adapter_for(module)
    device = torch.device(settings.device)
    total = batch_length(batch)
    return [
        adapter.read(module, slice_batch(batch, start, start + settings.batch_size, device), settings.batch_size)
        for start in range(0, total, settings.batch_size)
    ]


def view_targets(inputs: ExplanationInputs) -> list[tuple[ViewSpec, Target]]:
    """The views explained for one chunk: one for classifiers, e+ and e- for face pairs."""
    if not inputs.pairs:
        return [(CLASS_VIEW, inputs.target)]
    if not isinstance(inputs.target, SimilarityTarget):
        raise TypeError(f"face pairs need a SimilarityTarget, got {type(inputs.target).__name__}")
    reference = inputs.target.reference
    return [(POS_VIEW, SimilarityTarget(reference, "similar")), (NEG_VIEW, SimilarityTarget(reference, "dissimilar"))]


# ----------------------------------------------------------------------------- metrics


class ViewMetrics:
    """Every per-image metric of one (method, view), accumulated over chunks.

    Deletion (baseline "zero") and insertion (baseline "blur") curves come from one batched pass
    that shares their common images; Average Drop, Increase in Confidence and Average Drop in
    Deletion from one more pass; the pointing games only where ground-truth masks exist.

    Args:
        view: which view (sets the recorded score type and the Average Drop form).
        steps: deletion/insertion steps.
        chunk_size: images per forward pass when scoring perturbed images.
    """

    def __init__(self, view: ViewSpec, steps: int, chunk_size: int = 128) -> None:
        self.view, self.chunk_size = view, chunk_size
        score, form = view.score, view.form
        self.metrics: dict[str, Metric] = {
            "deletion_auc": create_metric("deletion_auc", steps=steps, baseline=DELETION_BASELINE, score=score),
            "insertion_auc": create_metric("insertion_auc", steps=steps, baseline=INSERTION_BASELINE, score=score),
            "average_drop": create_metric("average_drop", score=score, form=form),
            "increase_in_confidence": create_metric("increase_in_confidence", score=score),
            "average_drop_in_deletion": create_metric("average_drop_in_deletion", score=score, form=form),
            "pointing_game": create_metric("pointing_game"),
            "energy_pointing_game": create_metric("energy_pointing_game"),
            "sparsity": create_metric("sparsity"),
        }

    def update(self, score_fn: Callable[..., Tensor], images: Tensor, maps: Tensor, masks: Tensor | None) -> None:
        """Score one chunk; ``score_fn(images, index)`` is indexed (see ``target_score_fn``)."""
        m = self.metrics
        deletion, insertion = deletion_insertion_curves(
            score_fn, images, maps, m["deletion_auc"].steps, DELETION_BASELINE, INSERTION_BASELINE,
            chunk_size=self.chunk_size, with_index=True,
        )  # fmt: skip
        m["deletion_auc"].update(deletion)
        m["insertion_auc"].update(insertion)
        clean, kept, deleted = masked_scores(score_fn, images, maps, self.chunk_size, with_index=True)
        m["average_drop"].update(clean, kept)
        m["increase_in_confidence"].update(clean, kept)
        m["average_drop_in_deletion"].update(clean, deleted)
        m["sparsity"].update(maps)
        if masks is not None:
            m["pointing_game"].update(maps, masks)
            m["energy_pointing_game"].update(maps, masks)

    def _used(self) -> dict[str, Metric]:
        return {name: metric for name, metric in self.metrics.items() if metric.update_called}

    def column(self, name: str) -> str:
        """Report column of metric ``name`` in this view: ``deletion_auc_pos`` etc."""
        return f"{name}_{self.view.suffix}" if self.view.suffix else name

    def values(self) -> dict[str, float]:
        """Column -> value of every metric that saw data."""
        return {self.column(name): float(metric.compute()) for name, metric in self._used().items()}

    def settings(self) -> dict[str, str]:
        """Column -> the metric's ``log_name`` (carries its settings)."""
        return {self.column(name): metric.log_name for name, metric in self._used().items()}

    def directions(self) -> dict[str, bool]:
        """Column -> whether higher is better."""
        return {self.column(name): bool(metric.higher_is_better) for name, metric in self._used().items()}

    def mean_curves(self) -> dict[str, Tensor]:
        """``{"deletion": curve, "insertion": curve}`` averaged over every sample seen."""
        names = {"deletion": "deletion_auc", "insertion": "insertion_auc"}
        used = {mode: self.metrics[key] for mode, key in names.items() if self.metrics[key].update_called}
        return {mode: metric.mean_curve().cpu() for mode, metric in used.items()}


class PairAccuracyMetrics:
    """Verification accuracy under deletion/insertion of the probe's top e+ pixels (dataset level).

    Probes are the A sides, explained against B's embedding; the threshold is the EER threshold of
    the clean pair scores of the evaluated pairs, so both genuine and impostor pairs are needed.
    """

    def __init__(self, steps: int, chunk_size: int = 128) -> None:
        self.steps, self.chunk_size = steps, chunk_size
        self.metrics: dict[str, Metric] = {
            "verification_deletion_auc": create_metric("verification_deletion_auc", steps=steps),
            "verification_insertion_auc": create_metric("verification_insertion_auc", steps=steps),
        }
        self.labels: list[Tensor] = []

    def update(self, model: nn.Module, inputs: ExplanationInputs, pos_maps: Tensor) -> None:
        """Add one chunk of pairs (images [A; B]) with the e+ maps of both sides."""
        if inputs.issame is None:
            return
        n = len(inputs.images) // 2
        interleaved = torch.stack([inputs.images[:n], inputs.images[n:]], dim=1).flatten(0, 1)
        for name, metric in self.metrics.items():
            mode = "deletion" if "deletion" in name else "insertion"
            curves = verification_perturbation_curves(
                model, interleaved, pos_maps[:n], self.steps, mode, "zero", self.chunk_size
            )
            metric.update(curves, inputs.issame.to(curves.device))
        self.labels.append(inputs.issame.bool().cpu())

    def values(self) -> dict[str, float]:
        """AUCs, or NaN when the pairs are all genuine or all impostor (no EER threshold)."""
        if not self.labels:
            return {}
        labels = torch.cat(self.labels)
        both = bool(labels.any()) and bool((~labels).any())
        return {name: float(metric.compute()) if both else float("nan") for name, metric in self.metrics.items()}

    def settings(self) -> dict[str, str]:
        """Column -> ``log_name``."""
        return {name: metric.log_name for name, metric in self.metrics.items()} if self.labels else {}

    def directions(self) -> dict[str, bool]:
        """Column -> whether higher is better."""
        return {name: bool(metric.higher_is_better) for name, metric in self.metrics.items()} if self.labels else {}


# ----------------------------------------------------------------------------- running

MapFn = Callable[[int, ViewSpec, Tensor, Target], Tensor]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_method(
    name: str,
    kind: str,
    model: nn.Module,
    chunks: list[ExplanationInputs],
    make_maps: MapFn,
    settings: EvaluationSettings,
    progress: Any = None,
) -> tuple[EvaluationResult, list[dict[str, Tensor]]]:
    """Maps of one method for every chunk and view, their metrics and the explainer's wall time.

    Returns:
        The report row and the maps per chunk (``{view suffix: maps}``), kept for the inverted row.
    """
    specs = [spec for spec, _ in view_targets(chunks[0])]
    views = {spec.suffix: ViewMetrics(spec, settings.steps, settings.chunk_size) for spec in specs}
    pairs = PairAccuracyMetrics(settings.verification_steps, settings.chunk_size)
    all_maps, seconds, count = [], 0.0, 0
    for index, inputs in enumerate(chunks):
        chunk_maps: dict[str, Tensor] = {}
        for spec, target in view_targets(inputs):
            start = _clock(inputs.images.device)
            maps = make_maps(index, spec, inputs.images, target)
            seconds += _clock(inputs.images.device) - start
            count += len(maps)
            chunk_maps[spec.suffix] = maps
            score_fn = target_score_fn(model, target, softmax=spec.softmax)
            views[spec.suffix].update(score_fn, inputs.images, maps, inputs.masks)
        if inputs.pairs:
            pairs.update(model, inputs, chunk_maps[POS_VIEW.suffix])
        all_maps.append(chunk_maps)
        if progress is not None:
            progress.update(1)
    result = _result(name, kind, views, pairs, seconds / max(count, 1), count)
    result.examples = {suffix: maps.detach().cpu() for suffix, maps in all_maps[0].items()}
    return result, all_maps


def _clock(device: torch.device) -> float:
    _synchronize(device)
    return time.perf_counter()


def _result(
    name: str, kind: str, views: dict[str, ViewMetrics], pairs: PairAccuracyMetrics, seconds: float, count: int
) -> EvaluationResult:
    result = EvaluationResult(name, kind, seconds_per_map=seconds if kind == "explainer" else None, maps=count)
    for metrics in views.values():
        result.values.update(metrics.values())
        result.settings.update(metrics.settings())
        result.higher_is_better.update(metrics.directions())
        for mode, curve in metrics.mean_curves().items():
            result.curves.setdefault(mode, {})[metrics.view.label] = curve
    result.values.update(pairs.values())
    result.settings.update(pairs.settings())
    result.higher_is_better.update(pairs.directions())
    return result


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


def warm_up(explainer: Explainer, model: nn.Module, inputs: ExplanationInputs) -> None:
    """One untimed call on one sample, so one-time costs (layer search, allocator) are not timed."""
    index = torch.zeros(1, dtype=torch.long, device=inputs.images.device)
    explainer(model, inputs.images[:1], inputs.target.select(index))


def best_explainer(results: Sequence[EvaluationResult]) -> EvaluationResult:
    """The explainer row with the largest insertion AUC minus deletion AUC (e+ for pairs)."""

    def gap(result: EvaluationResult) -> float:
        suffix = "_pos" if "deletion_auc_pos" in result.values else ""
        return result.values[f"insertion_auc{suffix}"] - result.values[f"deletion_auc{suffix}"]

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


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m facexai evaluate``."""
    from facexai.face_model_args import add_model_arguments

    parser = argparse.ArgumentParser(
        prog="python -m facexai evaluate",
        description="Compare explainers with faithfulness and localisation metrics on validation data: "
        "a fit run's model (--config [--ckpt_path]) or a pretrained face model file (--model with --bin "
        "or --pairs/--images-root, no YAML).",
    )
    parser.add_argument("--config", help="the YAML of the fit run (model: and data: sections)")
    parser.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", help="Lightning checkpoint to load (--config)")
    add_model_arguments(parser, required=False)
    data = parser.add_argument_group("verification data (with --model)")
    data.add_argument("--bin", nargs="+", default=None, help="insightface verification sets (lfw.bin ...)")
    data.add_argument("--pairs", nargs="+", default=None, help="LFW-style pairs files")
    data.add_argument("--images-root", default=None, help="folder the pairs' image names are relative to")
    registered = ", ".join(available_explainers())
    parser.add_argument("--explainers", nargs="+", required=True, help=f"labels; registered: {registered}")
    parser.add_argument(
        "--explainer-options",
        default="{}",
        help='JSON object or file: {"fame": {"iterations": 50}}; "method" runs a method under another label',
    )
    parser.add_argument("--max-samples", type=int, default=64, help="validation samples (images, or pairs) to explain")
    parser.add_argument("--steps", type=int, default=50, help="deletion/insertion steps (default 50)")
    parser.add_argument("--verification-steps", type=int, default=10, help="verification-accuracy steps")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per explainer call")
    parser.add_argument("--out", default="eval", help="output folder (default eval/)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-map baseline")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def parse_options(text: str) -> dict[str, Any]:
    """``--explainer-options``: a JSON object, inline or in a file."""
    path = Path(text)
    if not text.lstrip().startswith("{") and path.is_file():
        text = path.read_text(encoding="utf-8")
    try:
        options = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--explainer-options is not valid JSON: {err}") from err
    if not isinstance(options, dict):
        raise ValueError(f"--explainer-options must be a JSON object name -> options, got {options!r}")
    return options


def device_from_arg(device: str | None) -> str:
    """``--device``, defaulting to CUDA when present; asking for absent CUDA is a user error."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available")
    return device


def settings_from_args(args: argparse.Namespace) -> EvaluationSettings:
    """Validated :class:`EvaluationSettings` from the parsed arguments."""
    for name in ("max_samples", "steps", "verification_steps", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    device = device_from_arg(args.device)
    return EvaluationSettings(args.steps, args.verification_steps, args.batch_size, args.max_samples, args.seed, device)


def gallery_inputs(module: nn.Module, batch: Any, settings: EvaluationSettings) -> ExplanationInputs:
    """The first chunk again (images, clean outputs, issame): the samples whose maps the gallery shows."""
    device = torch.device(settings.device)
    chunk = slice_batch(batch, 0, settings.batch_size, device)
    return adapter_for(module).read(module, chunk, settings.batch_size)


def input_paths(args: argparse.Namespace) -> list[str]:
    """Every file or folder ``evaluate`` reads: config, checkpoint, model, data, options file."""
    paths = [args.config, args.ckpt_path, args.model, args.images_root, *(args.bin or []), *(args.pairs or [])]
    if not args.explainer_options.lstrip().startswith("{") and Path(args.explainer_options).is_file():
        paths.append(args.explainer_options)
    return [path for path in paths if path]


def report_files(out: Path, labels: Sequence[str]) -> list[Path]:
    """Every file the report may write into ``out`` (the inverted row may follow any explainer)."""
    from facexai.evaluate_report import GALLERY_VIEWS, safe_name

    rows = [*labels, RANDOM_ROW, *(f"{INVERTED_PREFIX} {label}" for label in labels)]
    fixed = ["results.md", "results.csv", "results.json", "curves_overlay.png", "index.html"]
    names = fixed + [name for name, _ in GALLERY_VIEWS.values()] + [f"curves_{safe_name(r)}.png" for r in rows]
    return [out / name for name in names]


def check_output_folder(args: argparse.Namespace) -> None:
    """Refuse an ``--out`` that is an input, lies inside an input folder, or would overwrite an input file.

    Checked before anything is loaded, so a slip such as ``--out`` = the image root costs nothing.
    """
    from facexai.writing import refuse_inputs

    inputs = input_paths(args)
    out = Path(args.out)
    refuse_inputs(out, inputs, what="--out")
    for path in report_files(out, args.explainers):
        refuse_inputs(path, inputs, what="--out")


def evaluate_main(argv: Sequence[str]) -> int:
    """``facexai evaluate``: explain, score and write the report; returns the exit code."""
    from facexai.evaluate_report import write_report

    args = build_parser().parse_args(list(argv))
    check_output_folder(args)
    explainers = build_explainers(args.explainers, parse_options(args.explainer_options))
    settings = settings_from_args(args)
    inputs = evaluation_inputs(args, settings.batch_size)
    batch = collect_samples(inputs.datamodule, settings.max_samples)
    results = run_evaluation(inputs.module, batch, explainers, settings, progress=not args.no_progress)
    gallery = gallery_inputs(inputs.module, batch, settings)
    paths = write_report(results, settings, args.out, inputs.context, gallery)
    sys.stdout.write(paths["markdown"].read_text(encoding="utf-8"))
    sys.stdout.write("\nwrote " + ", ".join(str(p) for p in paths.values()) + "\n")
    return 0
