"""Wall time and final quality of the demo training run, in-process.

    python benchmarks/demo_fit.py [--config configs/demo.yaml] [--keep DIR] [--threads N] [-- extra LightningCLI args]

Runs exactly what ``python -m facexai fit --config configs/demo.yaml`` runs (``facexai.cli.main``,
LightningCLI), with the TensorBoard logs redirected to a temporary folder (or ``--keep DIR``),
then prints the wall time and the last logged ``val/synthetic/roc_auc`` (read back from the
TensorBoard event files, since LightningCLI returns nothing to ``main``'s caller). Extra
arguments after ``--`` are passed to LightningCLI, e.g. ``-- --trainer.max_epochs 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
METRIC = "val/synthetic/roc_auc"


def last_scalar(log_dir: Path, tag: str) -> tuple[float, int] | None:
    """(value, step) of the last ``tag`` scalar in the newest event file under ``log_dir`` that has it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(log_dir.rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        if tag in events.Tags().get("scalars", []):
            last = events.Scalars(tag)[-1]
            return float(last.value), int(last.step)
    return None


def fit(config: Path, log_dir: Path, extra: Sequence[str]) -> tuple[int, float]:
    """Run ``facexai fit`` in-process; returns (exit code, wall seconds)."""
    from facexai.cli import main

    args = ["fit", "--config", str(config), "--trainer.logger.init_args.save_dir", str(log_dir), *extra]
    start = time.perf_counter()
    code = main(args)
    return code, time.perf_counter() - start


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument("--keep", type=Path, help="keep the logs and checkpoints in this folder")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    return parser.parse_args(own), extra


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        log_dir = args.keep or Path(scratch)
        code, seconds = fit(args.config, log_dir, extra)
        final = last_scalar(log_dir, METRIC)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    result = {"config": str(args.config), "extra_args": extra, "exit_code": code, "wall_s": seconds,
              METRIC: None if final is None else final[0], "step": None if final is None else final[1],
              "threads": args.threads, "load_average_end": load}  # fmt: skip
    print(f"facexai fit --config {args.config} {' '.join(extra)}".rstrip())
    print(f"  exit code {code}, wall time {seconds:.1f} s, load average {load}")
    print(f"  final {METRIC} = {'n/a' if final is None else f'{final[0]:.4f} (step {final[1]})'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
