"""``benchmarks/run.py --quick`` runs end to end in a subprocess and writes a complete JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facexai.explain import available_explainers

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    script = str(ROOT / "benchmarks" / "run.py")
    command = [sys.executable, script, "--quick", "--threads", "1", "--json", str(out), *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Explainers" in done.stdout
    return json.loads(out.read_text())


def _check_rows(result: dict, models: list[str]) -> None:
    for model in models:
        rows = {row["method"]: row for row in result["rows"] if row["model"] == model}
        assert sorted(rows) == available_explainers()
        for row in rows.values():
            assert row["seconds"] > 0, row
            assert row["images_per_s"] > 0, row
            assert row["x_floor"] > 0, row
            assert row["x_forward"] > 0, row
            assert row["peak_mb"] >= 0, row
        assert rows["fame"]["per_iteration"]
        assert rows["fame"]["floor"] == "input"
        assert rows["gradcam"]["floor"] == "cam"
    floors = {(row["model"], row["method"]) for row in result["floors"]}
    assert {(m, f"floor:{k}") for m in models for k in ("forward", "cam", "input")} <= floors
    assert all(row["seconds"] > 0 for row in result["metrics"])
    assert len(result["metrics"]) == len(models)


def test_quick_benchmark_explainers_and_metrics(tmp_path: Path) -> None:
    result = _run(tmp_path, "--models", "iresnet_mini-32", "--sections", "explainers", "metrics")
    _check_rows(result, ["iresnet_mini-32"])
    assert result["meta"]["memory_method"]
    assert result["meta"]["load_average_start"]


@pytest.mark.slow
def test_quick_benchmark_every_section(tmp_path: Path) -> None:
    result = _run(tmp_path)
    _check_rows(result, ["iresnet_mini-32", "resnet-1111-32"])
    for row in result["comparisons"]:
        if "skipped" in row:
            continue
        assert row["facexai_s"] > 0, row
        assert row["other_s"] > 0, row
        assert row["pearson_samples"] == 0 or -1.0 - 1e-6 <= row["pearson"] <= 1.0 + 1e-6, row
    callback = result["callback"]
    assert "skipped" in callback or (
        callback["without_s"] > 0 and len(callback["overheads"]) == 1 and len(callback["epoch_s"]) == 5
    )
