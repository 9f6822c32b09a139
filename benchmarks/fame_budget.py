"""FAME's iteration budget: how close the map after k LOTS steps is to the map after 500 (issue 16).

    python benchmarks/fame_budget.py --train112 --json benchmarks/fame_budget_112.json
    python benchmarks/fame_budget.py --config configs/demo.yaml \\
        --ckpt_path runs/demo/version_0/checkpoints/demo-epoch=04.ckpt --json benchmarks/fame_budget_demo.json

``--train112`` trains (or reuses, from ``--ckpt_dir``) the demo recipe at 112 px: configs/demo.yaml's
ArcFace VerificationModule and SyntheticFacesDataModule with the image side and the backbone's
``img_size`` set to 112, no callbacks, ``--epochs`` epochs (default 5) on the CPU.

The first ``--pairs`` validation pairs (after ``--offset``), both sides, are explained with the e+
target (each side against the other's frozen embedding), all in one batch. One 500-step LOTS
descent is run with FAME's own step (:func:`facexai.explain.fame.lots_step`, the function
:meth:`FAME.explain` loops over, so the adversarial iterate at step k is bit-for-bit the one a
``FAME(iterations=k)`` run ends on: the script checks this at the first k). Every ``--record``
steps the map (:func:`facexai.explain.fame.fame_map`) is computed from the iterate with each blur:
the paper's (kernel 49, sigma 7.7 px) and the blur scaled to the image (``blur_sigma="auto"``,
identical to the paper's at 112 px). Reported per blur:

* median / min over samples of the Pearson correlation of the map after k steps to the map after
  the full run, k = 50, 100, 200, 300, 400;
* a simulated per-sample convergence stop: a sample stops at the first check (every
  ``check_every`` steps, from the second check on) where its map changed by less than a tolerance
  since the previous check, change = 1 - Pearson of the two maps; per tolerance, the min / median
  Pearson of the stopped map to the full run's, and the mean / max steps taken.

Time per iteration is the median of the timed LOTS steps of the batch (and per image).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import cast

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import Tensor, nn

from facexai.evaluate import build_from_config, collect_samples, load_checkpoint, load_config
from facexai.explain.base import explanation_mode
from facexai.explain.fame import FAME, PAPER_KERNEL, PAPER_SIGMA, fame_map, lots_step
from facexai.explain.pairs import pair_targets

ROOT = Path(__file__).resolve().parents[1]
REPORTED = (50, 100, 200, 300, 400)
TOLERANCES = (3e-2, 2e-2, 1e-2, 5e-3, 3e-3, 2e-3, 1e-3, 5e-4, 3e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5)


def config_112(config: dict) -> dict:
    """configs/demo.yaml at 112 px: the data's image side and the backbone's input side."""
    config = copy.deepcopy(config)
    config["data"]["init_args"]["image_size"] = 112
    config["model"]["init_args"].setdefault("backbone_kwargs", {})["img_size"] = 112
    return config


def train_or_reuse(config: dict, checkpoint: Path, epochs: int) -> tuple[nn.Module, object, dict]:
    """The config's module trained for ``epochs`` (saved to ``checkpoint``), or reloaded from it."""
    import pytorch_lightning as pl

    module, datamodule = build_from_config(config)
    info: dict = {"checkpoint": str(checkpoint), "epochs": epochs}
    if checkpoint.exists():
        load_checkpoint(module, checkpoint)
        info["trained_now"] = False
        return module, datamodule, info
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(cast(pl.LightningModule, module), datamodule=datamodule)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(checkpoint)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    info.update(trained_now=True, train_s=time.perf_counter() - start, val_metrics=metrics)
    print(f"trained {epochs} epochs in {info['train_s']:.0f} s: {metrics}", flush=True)
    return module, datamodule, info


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample Pearson correlation of maps (N, H, W) (NaN where a map is constant)."""
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


Trajectory = tuple[dict[str, dict[int, Tensor]], list[float]]


def trajectory(model: nn.Module, images: Tensor, target, iterations: int, record: int,
               blurs: dict[str, tuple[int, float]], also: tuple[int, ...] = ()) -> Trajectory:  # fmt: skip
    """Maps every ``record`` steps and after the steps in ``also`` of one LOTS descent (per blur)."""
    maps: dict[str, dict[int, Tensor]] = {name: {} for name in blurs}
    seconds = []
    with explanation_mode(model):
        images = images.detach().to(torch.float32).clone()
        adversarial = images.clone()
        for step in range(1, iterations + 1):
            start = time.perf_counter()
            adversarial = lots_step(model, adversarial, target, 1.0 / 255.0)[0]
            seconds.append(time.perf_counter() - start)
            if step % record == 0 or step in also:
                for name, (kernel, sigma) in blurs.items():
                    maps[name][step] = fame_map(images, adversarial, kernel, sigma)
            if step % 50 == 0:
                print(f"  step {step}: {statistics.median(seconds[-50:]):.3f} s/it", flush=True)
    return maps, seconds


def simulated_stops(maps: dict[int, Tensor], check_every: int, iterations: int, tolerance: float) -> Tensor:
    """Per sample, the step at which FAME(tolerance, check_every) stops (``iterations`` if never).

    The checks run before steps check_every, 2 * check_every, ... < iterations; the first
    comparison is at 2 * check_every. A prototype of the stop in FAME itself (per sample,
    batch-invariant; not shipped, see benchmarks/README.md) stopped every sample at exactly
    these steps.
    """
    n = len(maps[iterations])
    stopped = torch.full((n,), iterations)
    for k in reversed(range(2 * check_every, iterations, check_every)):  # the first check below wins
        change = 1 - pearson(maps[k], maps[k - check_every])
        stopped = torch.where(change < tolerance, torch.tensor(k), stopped)
    return stopped


def stop_simulation(maps: dict[int, Tensor], final: Tensor, check_every: int, iterations: int) -> list[dict]:
    """Per tolerance: where the per-sample stop (1 - Pearson between checks < tol) would end."""
    rows = []
    for tol in TOLERANCES:
        stopped = simulated_stops(maps, check_every, iterations, tol)
        agreement = torch.stack([pearson(maps[int(k)][i : i + 1], final[i : i + 1])[0] for i, k in enumerate(stopped)])
        rows.append(
            {
                "tolerance": tol,
                "check_every": check_every,
                "min_pearson": float(agreement.min()),
                "median_pearson": float(agreement.median()),
                "mean_steps": float(stopped.float().mean()),
                "max_steps": int(stopped.max()),
                "min_steps": int(stopped.min()),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--ckpt_path", help="trained weights for --config (without --train112)")
    parser.add_argument("--train112", action="store_true", help="train/reuse the config's recipe at 112 px")
    parser.add_argument("--ckpt_dir", default=str(ROOT / "runs" / "fame_budget"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--offset", type=int, default=0, help="skip this many validation pairs first")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--record", type=int, default=25, help="compute the maps every this many steps")
    parser.add_argument(
        "--also", type=int, nargs="*", default=[5, 10, 20], help="and after these steps (the demo's and the callback's)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config(args.config)
    if args.train112:
        config = config_112(config)
        module, datamodule, model_info = train_or_reuse(
            config, Path(args.ckpt_dir) / "iresnet_mini_112.ckpt", args.epochs
        )
    else:
        module, datamodule = build_from_config(config)
        if args.ckpt_path:
            load_checkpoint(module, args.ckpt_path)
        model_info = {"checkpoint": args.ckpt_path}
    model = cast(nn.Module, module.explained_model).eval()
    model_info["backbone"] = config["model"]["init_args"]["backbone"]
    batch = collect_samples(datamodule, args.offset + args.pairs)
    images_a, images_b = batch["image_a"][args.offset :], batch["image_b"][args.offset :]
    images, target = pair_targets(model, images_a, images_b, "similar")
    size = images.shape[-2:]
    blurs = {
        "paper": (PAPER_KERNEL, PAPER_SIGMA),
        "auto": FAME(blur_sigma="auto").blur_parameters(size),
    }
    print(f"{len(images)} images {tuple(size)}, blurs {blurs}", flush=True)

    maps, seconds = trajectory(model, images, target, args.iterations, args.record, blurs, tuple(args.also))

    # the recorded iterate is FAME's own: FAME(iterations=k) ends on the same map
    k = args.record
    explainer = FAME(iterations=k, blur_kernel=blurs["paper"][0], blur_sigma=blurs["paper"][1])
    with explanation_mode(model):
        check = explainer.explain(model, images.detach().to(torch.float32).clone(), target)
    same_as_fame = float((check - maps["paper"][k]).abs().max())
    print(f"max |FAME(iterations={k}) - recorded map at {k}| = {same_as_fame:.2e}", flush=True)

    result: dict = {
        "command": "python benchmarks/fame_budget.py " + " ".join(sys.argv[1:]),
        "model": model_info,
        "images": len(images),
        "image_size": list(size),
        "blurs": {name: {"kernel": kernel, "sigma": sigma} for name, (kernel, sigma) in blurs.items()},
        "threads": args.threads,
        "seconds_per_iteration_batch": statistics.median(seconds),
        "seconds_per_iteration_image": statistics.median(seconds) / len(images),
        "check_recorded_equals_fame_max_abs": same_as_fame,
        "curves": {},
        "stop": {},
        "per_sample": {},
    }
    for name, by_step in maps.items():
        final = by_step[args.iterations]
        rows = []
        for k in sorted(set(REPORTED) | set(by_step)):
            if k not in by_step:
                continue
            r = pearson(by_step[k], final)
            rows.append({"iterations": k, "median": float(r.median()), "min": float(r.min())})
        result["curves"][name] = rows
        result["stop"][name] = [
            row for every in (25, 50) if every % args.record == 0
            for row in stop_simulation(by_step, final, every, args.iterations)
        ]  # fmt: skip
        steps = sorted(by_step)
        result["per_sample"][name] = {
            "pearson_to_final": {k: pearson(by_step[k], final).tolist() for k in steps},
            "change_1_minus_pearson": {
                k: (1 - pearson(by_step[k], by_step[k - args.record])).tolist()
                for k in steps
                if k % args.record == 0 and k > args.record
            },
        }
        print(f"\nblur {name} {blurs[name]}: median / min Pearson to {args.iterations} steps")
        for row in rows:
            if row["iterations"] in REPORTED or row["iterations"] in args.also:
                print(f"  {row['iterations']:>4}: {row['median']:.4f} / {row['min']:.4f}")
        print("  stop simulation: check_every tol -> min / median Pearson, mean / max steps")
        for row in result["stop"][name]:
            print(
                f"  {row['check_every']:>3} {row['tolerance']:.0e} -> {row['min_pearson']:.4f} / "
                f"{row['median_pearson']:.4f}, {row['mean_steps']:.0f} / {row['max_steps']}"
            )
    print(f"\n{result['seconds_per_iteration_batch']:.3f} s per iteration for the batch of {len(images)}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
