"""Run ``facexai evaluate`` and record what its metric scoring costs, per report row.

Usage (from the root of the tree to measure; another checkout is measured by putting it first
on ``PYTHONPATH``, e.g. a ``git archive`` of an older commit, since only ``facexai`` is imported):

    PYTHONPATH=$PWD python benchmarks/evaluate_scoring.py OUT.json [--profile OUT.prof] -- \
        --config configs/demo.yaml --ckpt_path CKPT --explainers gradcam --max-samples 8 \
        --device cpu --no-progress

Everything after ``--`` goes to ``facexai evaluate`` unchanged. ``MetricSuite.update`` (all of
the scoring of one chunk: perturbed images, forwards, metric updates) is wrapped to add up, per
suite (one per report row), its wall and CPU seconds and, by a forward pre-hook on the model it
is given, the number of forwards and of images forwarded. The image count is deterministic, so
two trees can be compared on the work they do without the timing noise of a shared machine.
Torch runs on one thread (``--threads``), so other jobs on the machine are disturbed less.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """This script's options, and the ``evaluate`` arguments after ``--``."""
    argv = list(argv)
    if "--" not in argv:
        raise SystemExit("give the evaluate arguments after --")
    cut = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="write the per-row counts and times here")
    parser.add_argument("--profile", type=Path, help="also write a cProfile of the whole run here")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv[:cut]), argv[cut + 1 :]


class ScoringRecorder:
    """Wraps ``MetricSuite.update``: seconds, CPU seconds, forwards and images per suite."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._suites: list[object] = []  # kept alive: a new suite is a new report row

    def install(self) -> None:
        """Replace ``MetricSuite.update`` by the recording wrapper (this process only)."""
        from facexai.pipeline import suite as suite_module

        original = suite_module.MetricSuite.update
        recorder = self

        def update(suite: Any, label: str, views: Any, inputs: Any, model: nn.Module) -> None:
            row = recorder._row(suite)
            handle = model.register_forward_pre_hook(lambda module, args: recorder._count(row, args))
            start, cpu = time.perf_counter(), time.process_time()
            try:
                original(suite, label, views, inputs, model)
            finally:
                row["seconds"] += time.perf_counter() - start
                row["cpu_seconds"] += time.process_time() - cpu
                row["updates"] += 1
                handle.remove()

        suite_module.MetricSuite.update = update  # type: ignore[method-assign]

    def _row(self, suite: object) -> dict[str, float]:
        if not any(suite is seen for seen in self._suites):
            self._suites.append(suite)
            self.rows.append({"seconds": 0.0, "cpu_seconds": 0.0, "forwards": 0, "images": 0, "updates": 0})
        return self.rows[next(i for i, seen in enumerate(self._suites) if seen is suite)]

    @staticmethod
    def _count(row: dict[str, float], args: tuple) -> None:
        row["forwards"] += 1
        row["images"] += int(args[0].shape[0])

    def totals(self) -> dict[str, float]:
        """Sums over the rows."""
        keys = ("seconds", "cpu_seconds", "forwards", "images")
        return {key: sum(row[key] for row in self.rows) for key in keys}


def main(argv: Sequence[str] | None = None) -> int:
    args, evaluate_args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    import facexai
    from facexai.cli import main as cli_main

    recorder = ScoringRecorder()
    recorder.install()
    sys.argv = ["facexai", "evaluate", *evaluate_args]
    profile = cProfile.Profile() if args.profile else None
    start = time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        rc = cli_main()
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(args.profile)
    report = {
        "tree": str(Path(facexai.__file__).resolve().parents[1]),
        "evaluate_args": evaluate_args,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "wall_seconds": time.perf_counter() - start,
        "scoring": recorder.totals(),
        "rows": recorder.rows,
    }
    args.json.write_text(json.dumps(report, indent=1))
    print(json.dumps({"wall_seconds": report["wall_seconds"], **report["scoring"]}), flush=True)
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
