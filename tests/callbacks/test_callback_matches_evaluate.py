"""The callback logs exactly the numbers ``evaluate`` reports for the same model, samples and settings.

Both run :mod:`facexai.pipeline`; before it they built views, explainers and metrics each on
their own, and the e- score name and the Average Drop form of face pairs had drifted apart.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from callback_models import classifier_module, faces, trainer, verification_module

from facexai.callbacks import ExplanationCallback
from facexai.evaluate import EvaluationSettings, build_explainers, collect_samples, run_evaluation

#: every metric both can compute, with small steps; gradcam and liftcam are deterministic
METRICS = {
    "deletion_auc": {"steps": 4},
    "insertion_auc": {"steps": 4},
    "average_drop": {},
    "increase_in_confidence": {},
    "average_drop_in_deletion": {},
    "pointing_game": {},
    "energy_pointing_game": {},
    "sparsity": {},
    "complexity": {},
    "road_morf": {"percentages": [20, 60]},
    "road_lerf": {"percentages": [20, 60]},
}
EXPLAINERS = ["gradcam", "liftcam"]
SAMPLES = 4  # pairs or images: one batch of the validation loader


@pytest.mark.parametrize("task", ["verification", "classification"])
def test_callback_and_evaluate_give_identical_values(tmp_path: Path, task: str) -> None:
    module = verification_module() if task == "verification" else classifier_module()
    callback = ExplanationCallback(
        explainers=EXPLAINERS,
        metrics=METRICS,
        max_samples=SAMPLES,
        log_images=False,
        log_curves=False,
        max_time_share=None,
    )
    run = trainer(tmp_path, [callback], logger=False)
    run.validate(module, faces(task, batch_size=SAMPLES), verbose=False)
    logged = {
        key.removeprefix("val/xai/"): float(value)
        for key, value in run.callback_metrics.items()
        if key.startswith("val/xai/") and key != "val/xai/samples"
    }
    settings = callback.suite.settings()

    batch = collect_samples(faces(task, batch_size=SAMPLES), SAMPLES)
    options = EvaluationSettings(batch_size=SAMPLES, max_samples=SAMPLES, device="cpu", metrics=METRICS)
    rows = run_evaluation(module, batch, build_explainers(EXPLAINERS), options, progress=False)

    views = ("_pos", "_neg") if task == "verification" else ("",)
    expected = {f"{label}/{name}{view}" for label in EXPLAINERS for name in METRICS for view in views}
    assert set(logged) == expected  # every metric computed, in every view
    assert all(math.isfinite(value) for value in logged.values()), logged
    for row in rows[: len(EXPLAINERS)]:
        reported = {f"{row.name}/{column}": value for column, value in row.values.items()}
        assert set(reported) == {key for key in expected if key.startswith(f"{row.name}/")}
        for key, value in reported.items():
            assert value == logged[key], key  # identical, not merely close
            assert row.settings[key.split("/", 1)[1]] == settings[key], key
    if task == "verification":
        assert settings["gradcam/deletion_auc_neg"].endswith("score-1-cosine")
        assert settings["gradcam/average_drop_pos"].endswith("score-cosine_form-difference")
    else:
        assert settings["gradcam/average_drop"].endswith("score-probability_form-ratio")
