"""``benchmarks/evaluate_scoring.py``: the recorder counts what ``MetricSuite.update`` forwards."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from facexai.evaluate.settings import EvaluationSettings
from facexai.pipeline import MetricSuite

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "pipeline"))
import evaluate_scoring  # noqa: E402
from test_shared_passes import counted, small_embedder, suite_inputs  # noqa: E402


def test_recorder_counts_the_images_each_suite_forwards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MetricSuite, "update", MetricSuite.update)  # undone after the test
    recorder = evaluate_scoring.ScoringRecorder()
    recorder.install()
    model = small_embedder()
    inputs, views = suite_inputs(model)
    settings = EvaluationSettings(steps=4, verification_steps=2, chunk_size=5)
    suites = [MetricSuite(settings.metric_specs(), settings.mean, settings.std, "evaluate", 5) for _ in range(2)]
    with counted(model) as sizes:
        suites[0].update("", views, inputs, model)
        suites[1].update("", views, inputs, model)
        suites[0].update("", views, inputs, model)
    per_update = len(sizes) // 3, sum(sizes) // 3
    assert [(row["forwards"], row["images"], row["updates"]) for row in recorder.rows] == [
        (2 * per_update[0], 2 * per_update[1], 2),
        (per_update[0], per_update[1], 1),
    ]
    assert recorder.totals()["images"] == sum(sizes)
    assert all(row["seconds"] > 0 for row in recorder.rows)
    assert len(model._forward_pre_hooks) == 0  # the recorder's hook is removed after each update


def test_evaluate_arguments_come_after_the_separator() -> None:
    args, rest = evaluate_scoring.parse_args(["out.json", "--", "--explainers", "gradcam"])
    assert (args.json, args.threads, rest) == (Path("out.json"), 1, ["--explainers", "gradcam"])
    with pytest.raises(SystemExit, match="after --"):
        evaluate_scoring.parse_args(["out.json"])
