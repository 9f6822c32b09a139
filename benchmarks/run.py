"""Explainer speed and memory benchmark: every registered method against its measured floor.

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--json out.json] [--models ...]

Rows: every registered explainer on IResNet-50 at 112 px explaining face similarity
(``SimilarityTarget``) and on torchvision's ResNet-50 at 224 px explaining a class
(``ClassTarget``), at batch sizes 1 and 16; ``--quick`` uses tiny models, small images, batch 2
and one repeat (for CI). Each row gives the median seconds per batch after warm-up, images/s,
the ratio to the method's floor and to one forward pass, and the peak memory.

Floors, measured in the same run on the same batch (the ``Floors`` table), and again in
alternation with every method (one floor run before each timed run: the ``floor s`` and
``x floor`` columns), so that the machine's drift between measurements cancels:

- ``forward``: one forward pass without gradients.
- ``cam``: the last-layer CAM floor, forward + backward from the score to the target layer only
  (the layer output detached into a leaf by a forward hook, ``autograd.grad`` w.r.t. that leaf).
- ``input``: forward + full backward to the input (``autograd.grad`` w.r.t. the images), the
  floor of FG-CAM-to-input and of one FAME iteration (FAME rows are reported per iteration).

Also: deletion + insertion (50 steps) against the batched forwards of the images it scores,
facexai's Grad-CAM / Grad-CAM++ / Score-CAM against pytorch-grad-cam and Grad-CAM against captum
(speed and Pearson agreement; skipped when those packages are missing), and the fit-epoch
overhead of the default ``ExplanationCallback``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import compare  # noqa: E402
from harness import check_device, measure, measure_against, memory_method  # noqa: E402

from facexai.explain import ClassTarget, SimilarityTarget, Target, available_explainers, create_explainer  # noqa: E402
from facexai.explain.base import explanation_mode  # noqa: E402
from facexai.explain.layers import as_leaf, capture_output  # noqa: E402
from facexai.metrics.functional import deletion_insertion_curves, target_score_fn  # noqa: E402

#: methods whose floor is forward + full backward to the input (FAME: per iteration)
INPUT_FLOOR = ("fgcam", "fame")
FAME_ITERATIONS = 10
DI_STEPS = 50
CHUNK = 128


@dataclass
class ModelSpec:
    """A benchmark model: how to build it, its input size, target kind and CAM layer."""

    key: str
    size: int
    task: str  # "verification" or "classification"
    build: Callable[[], nn.Module]
    layer: str = "layer4"


def _iresnet(name: str, size: int, width: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from facexai.models import create_backbone

        return create_backbone(name, width, img_size=size)

    return build


def _torchvision(name: str, classes: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=classes)

    return build


def _torchvision_tiny(classes: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from torchvision.models.resnet import BasicBlock, ResNet

        return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=classes)

    return build


FULL_MODELS = [
    ModelSpec("iresnet50-112", 112, "verification", _iresnet("iresnet50", 112, 512)),
    ModelSpec("resnet50-224", 224, "classification", _torchvision("resnet50", 1000)),
]
QUICK_MODELS = [
    ModelSpec("iresnet_mini-32", 32, "verification", _iresnet("iresnet_mini", 32, 128)),
    # torchvision's ResNet code (shared ReLUs, Bottleneck-free) with one block per stage; layer3
    # (256 channels, 2x2 at 32 px) keeps Score-CAM's one forward per channel cheap.
    ModelSpec("resnet-1111-32", 32, "classification", _torchvision_tiny(10), layer="layer3"),
]


@dataclass
class Config:
    """Run settings, recorded in the JSON."""

    quick: bool
    device: str
    batch_sizes: list[int]
    repeats: int
    warmup: int
    methods: list[str]
    sections: list[str]
    threads: int
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


def progress(message: str) -> None:
    """One line per measurement on stderr, so long runs show where they are."""
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- inputs & floors


def make_inputs(spec: ModelSpec, model: nn.Module, batch: int, device: torch.device) -> tuple[Tensor, Target]:
    """Seeded random images and the target: partner embeddings (faces) or random classes."""
    generator = torch.Generator().manual_seed(batch)
    images = torch.randn(batch, 3, spec.size, spec.size, generator=generator).to(device)
    if spec.task == "verification":
        partners = torch.randn(batch, 3, spec.size, spec.size, generator=generator).to(device)
        with torch.no_grad():
            return images, SimilarityTarget(model(partners))
    with torch.no_grad():
        classes = model(images[:1]).shape[1]
    return images, ClassTarget(torch.randint(classes, (batch,), generator=generator).to(device))


def floor_functions(model: nn.Module, layer: str, images: Tensor, target: Target) -> dict[str, Callable[[], object]]:
    """The three floors as no-argument functions on this batch.

    Each runs under :func:`explanation_mode`, as the explainers do: parameters frozen, so no
    pass records a graph for weight gradients. With trainable parameters the ``cam`` floor's
    forward would record the whole backbone's graph (1.6x slower on ResNet-50 at batch 16 on
    the CPU) and flatter every ratio taken against it.
    """

    def forward() -> object:
        with torch.no_grad():
            return model(images)

    def cam() -> object:
        with explanation_mode(model), capture_output(model, layer, replace=as_leaf) as store:
            score = target(model(images)).sum()
            return torch.autograd.grad(score, store[-1])

    def to_input() -> object:
        with explanation_mode(model):
            inputs = images.detach().requires_grad_(True)
            return torch.autograd.grad(target(model(inputs)).sum(), inputs)

    return {"forward": forward, "cam": cam, "input": to_input}


def floor_of(name: str, explainer: object) -> str:
    """Which floor a method is compared with (CAMs: cam; FG-CAM/FAME: input; others: forward)."""
    if name in INPUT_FLOOR:
        return "input"
    return "cam" if hasattr(explainer, "target_layer") else "forward"


def method_options(name: str, spec: ModelSpec, quick: bool) -> dict[str, Any]:
    """Options of one method: the benchmark's CAM layer, FAME's 10 iterations, small quick runs."""
    options: dict[str, Any] = {}
    cls = type(create_explainer(name))
    if "target_layer" in inspect.signature(cls).parameters:
        options["target_layer"] = spec.layer
    if name == "fame":
        options["iterations"] = 2 if quick else FAME_ITERATIONS
    if name == "corrrise":
        options["patch_size"] = min(30, spec.size // 2)
        if quick:
            options["n_masks"] = 16
    return options


# ----------------------------------------------------------------------------- sections


def _row(model: str, batch: int, method: str, timing: Any, forward: float, floor: tuple[str, float] | None,
         per: int = 1, options: dict | None = None) -> dict[str, Any]:  # fmt: skip
    seconds = timing.seconds / per
    return {
        "model": model, "batch": batch, "method": method, "seconds": seconds, "call_seconds": timing.seconds,
        "runs": timing.runs, "images_per_s": batch / timing.seconds, "per_iteration": per > 1,
        "floor": floor[0] if floor else None, "x_floor": seconds / floor[1] if floor else None,
        "x_forward": seconds / forward, "peak_mb": timing.peak_bytes / 2**20, "options": options or {},
    }  # fmt: skip


def calibrate_batchnorm(model: nn.Module, size: int, device: torch.device, batches: int = 2) -> nn.Module:
    """Set BatchNorm running statistics from a few random batches, then switch to eval mode.

    Untrained weights with the fresh statistics (mean 0, variance 1) do not normalise anything in
    eval mode: an untrained IResNet-50 reaches activations of ~1e26 at layer4, its embeddings'
    norms overflow and every cosine (and so every map) is 0. Calibrated statistics give the
    activation scales of a trained network, which the timings do not depend on but the map
    agreement does.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    generator = torch.Generator().manual_seed(12345)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(8, 3, size, size, generator=generator).to(device))
    return model.eval()


def bench_model(spec: ModelSpec, config: Config, device: torch.device) -> dict[str, list[dict[str, Any]]]:
    """Floors, explainer rows, deletion/insertion and comparisons for one model."""
    torch.manual_seed(0)
    model = calibrate_batchnorm(spec.build().to(device), spec.size, device)
    out: dict[str, list[dict[str, Any]]] = {"floors": [], "rows": [], "metrics": [], "comparisons": []}
    for batch in config.batch_sizes:
        images, target = make_inputs(spec, model, batch, device)
        functions = floor_functions(model, spec.layer, images, target)
        # Floors run first on a new batch size, so they get one more warm-up (allocator, caches).
        floors = {k: measure(fn, device, config.repeats, config.warmup + 1) for k, fn in functions.items()}
        forward = floors["forward"].seconds
        progress(f"{spec.key} batch {batch} floors: " + ", ".join(f"{k} {t.seconds:.4g} s" for k, t in floors.items()))
        out["floors"] += [_row(spec.key, batch, f"floor:{k}", t, forward, None) for k, t in floors.items()]
        if "explainers" in config.sections:
            out["rows"] += explainer_rows(spec, model, images, target, floors, config, device, functions)
        if "metrics" in config.sections and batch == min(config.batch_sizes):
            out["metrics"].append(deletion_insertion_row(spec, model, images, target, forward, config, device))
        if "compare" in config.sections and batch == max(config.batch_sizes):
            out["comparisons"] += comparison_rows(spec, model, images, target, config, device)
    return out


def explainer_rows(
    spec: ModelSpec,
    model: nn.Module,
    images: Tensor,
    target: Target,
    floors: dict,
    config: Config,
    device: torch.device,
    functions: dict[str, Callable[[], object]],
) -> list[dict[str, Any]]:
    """One row per selected method on this batch, timed in alternation with its floor."""
    rows = []
    for name in config.methods:
        options = method_options(name, spec, config.quick)
        config.options[name] = options
        explainer = create_explainer(name, **options)
        floor = floor_of(name, explainer)
        explain = _explain_fn(explainer, model, images, target)
        timing, floor_timing = measure_against(explain, functions[floor], device, config.repeats, config.warmup)
        floor_s = floor_timing.seconds
        progress(f"{spec.key} batch {len(images)} {name}: {timing.seconds:.4g} s ({floor} floor {floor_s:.4g} s)")
        per = options.get("iterations", 1) if name == "fame" else 1
        row = _row(spec.key, len(images), name, timing, floors["forward"].seconds,
                   (floor, floor_timing.seconds), per, options)  # fmt: skip
        row["floor_s"] = floor_timing.seconds
        rows.append(row)
    return rows


def _scored_images(steps: int, shared_baseline: bool) -> int:
    """Images deletion + insertion score per sample: both curves share the clean image (and the
    fully deleted one when the baselines are equal)."""
    return 2 * (steps + 1) - 1 - int(shared_baseline)


def deletion_insertion_row(spec: ModelSpec, model: nn.Module, images: Tensor, target: Target, forward: float,
                           config: Config, device: torch.device) -> dict[str, Any]:  # fmt: skip
    """Deletion + insertion curves (50 steps, zero / blur baselines) against their batched forwards."""
    maps = torch.rand(images.shape[0], *images.shape[-2:], generator=torch.Generator().manual_seed(0)).to(device)
    score_fn = target_score_fn(model, target, softmax=spec.task == "classification")
    per_sample = _scored_images(DI_STEPS, shared_baseline=False)
    total = per_sample * len(images)
    chunk = images[:1].expand(min(CHUNK, total), -1, -1, -1).contiguous()

    def run() -> object:
        return deletion_insertion_curves(score_fn, images, maps, DI_STEPS, "zero", "blur", CHUNK, with_index=True)

    def batched_forwards() -> None:
        with torch.no_grad():
            for start in range(0, total, CHUNK):
                model(chunk[: min(CHUNK, total - start)])

    repeats = min(config.repeats, 3)
    timing, floor = measure_against(run, batched_forwards, device, repeats, config.warmup)
    floor_spec = (f"{total} batched forwards", floor.seconds)
    row = _row(spec.key, len(images), f"deletion+insertion({DI_STEPS})", timing, forward, floor_spec)
    row["scored_images"] = total
    row["floor_s"] = floor.seconds
    progress(f"{spec.key} deletion+insertion: {timing.seconds:.4g} s, floor {floor.seconds:.4g} s")
    return row


def _explain_fn(explainer: Any, model: nn.Module, images: Tensor, target: Target) -> Callable[[], Tensor]:
    return lambda: explainer(model, images, target)


def comparison_rows(spec: ModelSpec, model: nn.Module, images: Tensor, target: Target, config: Config,
                    device: torch.device) -> list[dict[str, Any]]:  # fmt: skip
    """facexai against pytorch-grad-cam / captum: speed ratio and Pearson agreement."""
    rows = []
    for pair in compare.comparison_pairs(config.methods):
        package = "pytorch_grad_cam" if pair.library == "pytorch-grad-cam" else "captum"
        base = {"model": spec.key, "batch": len(images), "method": pair.method, "library": pair.library,
                "other": pair.other}  # fmt: skip
        if not compare.available(package):
            rows.append({**base, "skipped": f"{pair.library} is not installed (pip install grad-cam captum)"})
            continue
        ours_fn = _explain_fn(create_explainer(pair.method, target_layer=spec.layer), model, images, target)
        theirs_fn = compare.other_runner(pair, model, spec.layer, images, target)
        ours = measure(ours_fn, device, config.repeats, config.warmup)
        theirs = measure(theirs_fn, device, config.repeats, config.warmup)
        progress(f"{spec.key} {pair.method} vs {pair.other}: {ours.seconds:.4g} s / {theirs.seconds:.4g} s")
        correlation, covered = compare.agreement(ours_fn(), theirs_fn(), images.shape[-2:])
        rows.append({**base, "facexai_s": ours.seconds, "other_s": theirs.seconds,
                     "speedup": theirs.seconds / ours.seconds, "pearson": correlation,
                     "pearson_samples": covered})  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- callback overhead


def callback_overhead(config: Config, device: torch.device) -> dict[str, Any]:
    """Fit-epoch overhead of the demo's ExplanationCallback, measured in alternation in one fit.

    The callback explains on even epochs only (``every_n_epochs=2``), so every explained epoch
    sits between two epochs without explanations of the same fit; its overhead is its time over
    the mean of those neighbours. Two separate fits (without, then with the callback) confounded
    the callback with the machine's drift: two fits *without* any callback, run back to back on
    this shared 2-core machine, differed by 35%.
    """
    try:
        from facexai.callbacks import ExplanationCallback
    except ImportError as err:
        return {"skipped": f"facexai.callbacks.ExplanationCallback cannot be imported: {err}"}
    epochs = 5 if config.quick else 7
    callback = ExplanationCallback() if config.quick else _demo_callback()
    callback.every_n_epochs, callback.max_time_share = 2, None
    seconds = _fit_epoch_durations([callback], epochs, config.quick, device)
    ratios = [seconds[i] / ((seconds[i - 1] + seconds[i + 1]) / 2) - 1 for i in range(2, len(seconds) - 1, 2)]
    plain = [seconds[i] for i in range(1, len(seconds), 2)]
    return {"epochs": epochs, "epoch_s": seconds, "explained_epochs": list(range(0, epochs, 2)),
            "method": "callback on even epochs; overhead = explained epoch / mean of its two neighbours - 1 "
                      "(epoch 0 excluded: warm-up)",
            "without_s": statistics.median(plain), "overheads": ratios, "overhead": statistics.median(ratios),
            "data": "quick" if config.quick else "configs/demo.yaml"}  # fmt: skip


DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _demo_callback() -> Any:
    """The ExplanationCallback exactly as configs/demo.yaml configures it (the 15% budget is
    stated for that configuration)."""
    from facexai.evaluate import instantiate, load_config

    entries = load_config(DEMO_CONFIG)["trainer"]["callbacks"]
    spec = next(e for e in entries if e["class_path"].endswith("ExplanationCallback"))
    return instantiate(spec, "trainer.callbacks")


def _demo_parts(quick: bool) -> tuple[Any, Any]:
    """The demo's model and data from configs/demo.yaml (its callbacks and logger are not used);
    ``quick``: the same model at 32 px on a handful of images."""
    from facexai.data import SyntheticFacesDataModule
    from facexai.evaluate import build_from_config, load_config
    from facexai.models import VerificationModule

    if not quick:
        return build_from_config(load_config(DEMO_CONFIG))
    torch.manual_seed(0)
    module = VerificationModule(backbone="iresnet_mini", num_identities=4, embedding_size=128, lr=0.003,
                                backbone_kwargs={"img_size": 32})  # fmt: skip
    data = SyntheticFacesDataModule(num_identities=4, images_per_identity=8, num_val_identities=4,
                                    num_val_pairs=16, image_size=32, batch_size=16)  # fmt: skip
    return module, data


def _fit_epoch_durations(callbacks: list[Any], epochs: int, quick: bool, device: torch.device) -> list[float]:
    """Wall seconds of every epoch (training and validation) of one fit of the demo setup."""
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    stamps: list[float] = []

    class Stamp(pl.Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            stamps.append(time.perf_counter())

        def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            stamps.append(time.perf_counter())

    module, data = _demo_parts(quick)
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(max_epochs=epochs, accelerator=device.type, devices=1,
                             logger=TensorBoardLogger(logs, name="bench"),
                             callbacks=[*callbacks, Stamp()], enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, inference_mode=False)  # fmt: skip
        trainer.fit(module, datamodule=data)
    return [b - a for a, b in itertools.pairwise(stamps)]


# ----------------------------------------------------------------------------- output


def _cell(text: str, width: int, column: int) -> str:
    """The first column left-aligned (names), the others right-aligned (numbers)."""
    return text.rjust(width) if column else text.ljust(width)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain-text table of ``rows`` with (key, title) columns."""
    cells = [[title for _, title in columns]] + [[_fmt(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(_cell(c, w, i) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


ROW_COLUMNS = [("model", "model"), ("batch", "batch"), ("method", "method"), ("seconds", "s/batch"),
               ("images_per_s", "img/s"), ("floor", "floor"), ("x_floor", "x floor"), ("x_forward", "x forward"),
               ("peak_mb", "peak MB")]  # fmt: skip
#: explainer and metric rows also show the floor's own time, measured in alternation with them
TIMED_COLUMNS = [*ROW_COLUMNS[:6], ("floor_s", "floor s"), *ROW_COLUMNS[6:]]
COMPARE_COLUMNS = [("model", "model"), ("batch", "batch"), ("method", "facexai"), ("library", "library"),
                   ("other", "class"), ("facexai_s", "facexai s"), ("other_s", "other s"), ("speedup", "other/facexai"),
                   ("pearson", "Pearson"), ("pearson_samples", "n"), ("skipped", "note")]  # fmt: skip


def report(result: dict[str, Any]) -> str:
    """The printed tables."""
    meta = result["meta"]
    parts = [f"device {meta['device']} | torch {meta['torch']} | threads {meta['threads']} | load average "
             f"{meta['load_average_start']} -> {meta['load_average_end']} | memory: {meta['memory_method']}",
             "FAME rows: seconds per iteration (x floor and x forward per iteration); img/s for the whole call.",
             "", "Floors", table(result["floors"], ROW_COLUMNS[:5] + ROW_COLUMNS[-1:]),
             "", "Explainers", table(result["rows"], TIMED_COLUMNS)]  # fmt: skip
    if result["metrics"]:
        parts += ["", "Deletion + insertion", table(result["metrics"], TIMED_COLUMNS)]
    if result["comparisons"]:
        title = "Side by side (Pearson after identical post-processing; n = samples whose maps are not constant)"
        parts += ["", title, table(result["comparisons"], COMPARE_COLUMNS)]
    if result.get("callback"):
        parts += ["", "ExplanationCallback overhead per fit epoch: " + json.dumps(result["callback"])]
    return "\n".join(parts)


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, small images, batch 2, 1 repeat (CI)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--models", nargs="+", help="model keys (default: all of the mode)")
    parser.add_argument("--explainers", nargs="+", help="methods (default: every registered explainer)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default 1 16 (quick: 2)")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement (default 5, quick 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default 1)")
    parser.add_argument("--sections", nargs="+", default=["explainers", "metrics", "compare", "callback"],
                        choices=["explainers", "metrics", "compare", "callback"], help="what to run")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> tuple[Config, list[ModelSpec]]:
    """Settings and models of the run; ``SystemExit`` with the reason for a bad device or model."""
    args.device = str(check_device(args.device))
    specs = QUICK_MODELS if args.quick else FULL_MODELS
    if args.models:
        unknown = sorted(set(args.models) - {s.key for s in specs})
        if unknown:
            raise SystemExit(f"unknown model(s) {unknown}; available: {[s.key for s in specs]}")
        specs = [s for s in specs if s.key in args.models]
    methods = args.explainers or available_explainers()
    for name in methods:
        create_explainer(name)  # unknown names: ValueError listing the registered ones
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = args.batch_sizes or ([2] if args.quick else [1, 16])
    repeats = args.repeats or (1 if args.quick else 5)
    config = Config(args.quick, args.device, batch_sizes, repeats, args.warmup, methods, args.sections,
                    torch.get_num_threads())  # fmt: skip
    return config, specs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config, specs = build_config(args)
    device = torch.device(config.device)
    meta = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "threads": config.threads, "load_average_start": _load(),
            "memory_method": memory_method(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}  # fmt: skip
    result: dict[str, Any] = {"floors": [], "rows": [], "metrics": [], "comparisons": []}
    model_sections = {"explainers", "metrics", "compare"} & set(config.sections)
    for spec in specs if model_sections else []:
        for key, rows in bench_model(spec, config, device).items():
            result[key] += rows
    if "callback" in config.sections:
        result["callback"] = callback_overhead(config, device)
    meta["load_average_end"] = _load()
    result = {"meta": meta, "config": asdict(config), **result}
    print(report(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
