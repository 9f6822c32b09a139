"""evaluate's metric scoring against the bare forward passes of the images it scores.

    python benchmarks/scoring.py [--ckpt runs/demo/.../demo-epoch=04.ckpt] [--pairs 16]
        [--chunk-size 128] [--repeats 5] [--threads 1] [--road] [--json out.json]

The demo setup (configs/demo.yaml: an ArcFace IResNet-mini at 64 px on the synthetic faces),
with the weights of ``--ckpt`` (the demo checkpoint) or, without one, BatchNorm statistics
calibrated on random batches. ``--pairs`` validation pairs are explained by Grad-CAM (e+ and
e-, both faces) in ``evaluate``'s chunks of ``--batch-size`` pairs; the maps are made once and
then only the scoring is timed, two ways:

- ``view``: the per-view metrics of one view (e+) fed as ``evaluate`` feeds them: deletion and
  insertion curves at 50 steps, Average Drop, Increase in Confidence, Average Drop in Deletion
  (and ROAD MoRF with ``--road``).
- ``suite``: :meth:`MetricSuite.update` with ``evaluate``'s default metrics for every chunk
  (both views, the pair-level verification curves, the map-only metrics): all that ``evaluate``
  does for one explainer besides making the maps.

The floor of each is ``model(images)`` under ``torch.no_grad()`` on the very batches the scoring
fed to the model (recorded once by a forward pre-hook and kept in memory): the same number of
images in chunks of the same sizes, with everything else (ranking pixels, building perturbed
images, the target's cosine, the metric updates) taken away. The scoring and its floor run in
alternation (``harness.measure_against``), so the shared machine's drift cancels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from harness import check_device, measure_against, memory_method  # noqa: E402

from facexai.evaluate import (  # noqa: E402
    EvaluationSettings,
    build_from_config,
    collect_samples,
    explanation_chunks,
    load_checkpoint,
    load_config,
)
from facexai.evaluate.samples import adapter_for  # noqa: E402
from facexai.explain import Target, create_explainer  # noqa: E402
from facexai.explain.base import float32_interface  # noqa: E402
from facexai.metrics.functional import target_score_fn  # noqa: E402
from facexai.pipeline import ExplanationInputs, MetricSuite, parse_metric_specs  # noqa: E402
from facexai.pipeline.producers import VIEW_PRODUCERS, ViewSource  # noqa: E402
from facexai.pipeline.views import View, ViewSpec, make_views  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
VIEW_METRICS = ("deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence", "average_drop_in_deletion")


def demo_checkpoint() -> Path | None:
    """The newest demo checkpoint under runs/demo, if a demo fit left one."""
    found = sorted((ROOT / "runs" / "demo").glob("version_*/checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def calibrate(module: nn.Module, data: Any, batches: int = 4) -> str:
    """BatchNorm statistics from a few training batches (no checkpoint): a network whose activations
    have the scale of a trained one, which is all the timings depend on."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    data.setup("fit")
    model = adapter_for(module).resolve_model(module).train()
    with torch.no_grad():
        for index, batch in enumerate(data.train_dataloader()):
            if index == batches:
                break
            model(batch["image"] if isinstance(batch, dict) else batch[0])
    module.eval()
    return f"BatchNorm calibrated on {batches} training batches (no checkpoint)"


def gradcam_views(model: nn.Module, chunks: list[ExplanationInputs]) -> list[list[View]]:
    """Grad-CAM's e+ and e- maps of every chunk, made once (only the scoring is timed)."""
    explainer = create_explainer("gradcam")
    views = []
    with float32_interface(model):
        for inputs in chunks:

            def make(spec: ViewSpec, target: Target, images: Tensor = inputs.images) -> Tensor:
                return explainer(model, images, target)

            views.append(make_views(inputs, make))
    return views


def record_batches(model: nn.Module, fn: Callable[[], object]) -> list[Tensor]:
    """Copies of every batch ``fn`` feeds to ``model`` (a forward pre-hook on the model)."""
    seen: list[Tensor] = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        fn()
    finally:
        handle.remove()
    return seen


def forwards(model: nn.Module, batches: list[Tensor]) -> Callable[[], None]:
    """The floor: ``model(batch)`` of every recorded batch, nothing else."""

    def run() -> None:
        with torch.no_grad():
            for batch in batches:
                model(batch)

    return run


def view_scoring(
    model: nn.Module, chunks: list[ExplanationInputs], views: list[list[View]], specs: dict, settings: Any
) -> Callable[[], None]:
    """The per-view producers of every chunk's e+ view (what the view's metrics are fed)."""
    suite = MetricSuite(specs, settings.mean, settings.std, "evaluate", settings.chunk_size)
    metrics = [suite.metric("", name, views[0][0].spec, chunks[0].images.device) for name in specs]

    def run() -> None:
        with float32_interface(model):
            for inputs, chunk_views in zip(chunks, views, strict=True):
                view = chunk_views[0]
                source = ViewSource(
                    inputs.images,
                    view.maps,
                    _score_fn(model, view),
                    inputs.masks,
                    settings.mean,
                    settings.std,
                    settings.chunk_size,
                )
                source.plan(metrics)
                for metric in metrics:
                    args = VIEW_PRODUCERS[metric.inputs](source, metric)
                    if args is not None:
                        metric.update(*args)

    return run


def _score_fn(model: nn.Module, view: View) -> Callable[[Tensor, Tensor], Tensor]:
    return target_score_fn(model, view.target, softmax=view.spec.softmax)


def suite_scoring(
    model: nn.Module, chunks: list[ExplanationInputs], views: list[list[View]], settings: Any
) -> Callable[[], None]:
    """``MetricSuite.update`` of every chunk with evaluate's default metrics (a fresh suite per run)."""

    def run() -> None:
        suite = MetricSuite(settings.metric_specs(), settings.mean, settings.std, "evaluate", settings.chunk_size)
        with float32_interface(model):
            for inputs, chunk_views in zip(chunks, views, strict=True):
                suite.update("gradcam", chunk_views, inputs, model)

    return run


def measure_one(name: str, fn: Callable[[], None], model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
    """``fn`` against the forwards of the batches it feeds the model, timed in alternation."""
    device = torch.device(args.device)
    batches = record_batches(model, fn)
    floor = forwards(model, batches)
    timing, floor_timing = measure_against(fn, floor, device, args.repeats, args.warmup)
    sizes = [len(b) for b in batches]
    row = {
        "part": name,
        "seconds": timing.seconds,
        "floor_s": floor_timing.seconds,
        "x_floor": timing.seconds / floor_timing.seconds,
        "runs": timing.runs,
        "floor_runs": floor_timing.runs,
        "images": sum(sizes),
        "forwards": len(sizes),
        "full_chunks": sum(s == args.chunk_size for s in sizes),
        "smallest_chunk": min(sizes),
        "peak_mb": timing.peak_bytes / 2**20,
    }
    print(
        f"{name}: {timing.seconds:.3f} s against {floor_timing.seconds:.3f} s of forwards "
        f"({row['x_floor']:.3f}x; {row['images']} images in {row['forwards']} forwards, "
        f"{row['full_chunks']} of {args.chunk_size}, smallest {row['smallest_chunk']})",
        flush=True,
    )
    return row


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="demo checkpoint (default: the newest under runs/demo, if any)")
    parser.add_argument("--no-ckpt", action="store_true", help="calibrated BatchNorm instead of a checkpoint")
    parser.add_argument("--pairs", type=int, default=16, help="validation pairs to score (default 16)")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per evaluate chunk (default 16)")
    parser.add_argument("--chunk-size", type=int, default=128, help="images per scoring forward (default 128)")
    parser.add_argument("--steps", type=int, default=50, help="deletion/insertion steps (default 50)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--road", action="store_true", help="add ROAD MoRF to the view's metrics")
    parser.add_argument("--parts", nargs="+", default=["view", "suite"], choices=["view", "suite"])
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = check_device(args.device)
    torch.manual_seed(0)
    module, data = build_from_config(load_config(DEMO_CONFIG))
    ckpt = None if args.no_ckpt else (args.ckpt or demo_checkpoint())
    if ckpt is not None:
        load_checkpoint(module, ckpt)
        weights = f"checkpoint {ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt}"
    else:
        weights = calibrate(module, data)
    settings = EvaluationSettings(
        steps=args.steps, batch_size=args.batch_size, max_samples=args.pairs, device=args.device,
        chunk_size=args.chunk_size,
    )  # fmt: skip
    module.to(device).eval()
    chunks = explanation_chunks(module, collect_samples(data, args.pairs), settings)
    model = adapter_for(module).resolve_model(module)
    views = gradcam_views(model, chunks)
    view_specs: dict[str, dict[str, Any]] = {
        name: {"steps": args.steps} if "auc" in name else {} for name in VIEW_METRICS
    }
    if args.road:
        view_specs["road_morf"] = {}
    view_specs = parse_metric_specs(view_specs, "evaluate", dataset_level=True)
    rows = []
    with torch.no_grad():
        if "view" in args.parts:
            rows.append(measure_one("view (e+)", view_scoring(model, chunks, views, view_specs, settings), model, args))
        if "suite" in args.parts:
            rows.append(
                measure_one("suite (default metrics)", suite_scoring(model, chunks, views, settings), model, args)
            )
    meta = {
        "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
        "weights": weights, "pairs": args.pairs, "batch_size": args.batch_size, "chunk_size": args.chunk_size,
        "steps": args.steps, "repeats": args.repeats, "road": args.road, "memory_method": memory_method(device),
        "command": "python benchmarks/scoring.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
