"""ExplanationCallback under Lightning's true half precision (``precision="bf16-true"``).

The weights are bf16 and the batches arrive as bf16; every explainer, the metrics' perturbation
scoring and the pictures must still work, with float32 maps (tests/explain/test_low_precision.py
compares bf16 and float32 maps).
"""

from __future__ import annotations

from pathlib import Path

import torch
from callback_models import FAST_METRICS, PlainClassifier, events, faces, trainer, tuple_loaders, verification_module

from facexai.callbacks import ExplanationCallback
from facexai.callbacks.config import tag_label

#: every explainer, with options small enough for a test
ALL_EXPLAINERS = {
    "gradcam": {},
    "gradcam++": {},
    "scorecam": {"batch_size": 256},
    "liftcam": {},
    "fgcam": {},
    "fame": {"iterations": 5},
    "corrrise": {"n_masks": 20, "patch_size": 8},
}


def test_bf16_true_validation_explains_pairs_and_logs_maps(tmp_path: Path) -> None:
    datamodule, module = faces("verification"), verification_module()
    callback = ExplanationCallback(explainers=ALL_EXPLAINERS, metrics=FAST_METRICS, max_samples=2, max_time_share=None)
    run = trainer(tmp_path, [callback], precision="bf16-true")
    run.validate(module, datamodule, verbose=False)

    assert next(module.backbone.parameters()).dtype == torch.bfloat16
    for name in ALL_EXPLAINERS:
        for suffix in ("pos", "neg"):
            maps = callback.last_maps[name][suffix]
            assert maps.dtype == torch.float32
            assert maps.shape == (4, 32, 32)
            assert torch.isfinite(maps).all(), (name, suffix)
            assert maps.amax() > 0, (name, suffix)
        assert torch.isfinite(run.callback_metrics[f"val/xai/{tag_label(name)}/deletion_auc_pos"])
    assert {"xai/gradcam/pairs_pos", "xai/compare/pairs_neg"} <= set(events(run.logger.log_dir).Tags()["images"])


def test_bf16_true_fit_explains_a_plain_classifier(tmp_path: Path) -> None:
    train, val = tuple_loaders()
    callback = ExplanationCallback(
        explainers=["gradcam", "liftcam"], metrics=FAST_METRICS, target_layer="layer3", max_time_share=None
    )
    run = trainer(tmp_path, [callback], precision="bf16-true")
    run.fit(PlainClassifier(), train, val)
    assert callback.last_maps["gradcam"]["maps"].shape == (3, 32, 32)
    assert torch.isfinite(run.callback_metrics["val/xai/liftcam/deletion_auc"])
    assert "xai/liftcam/heatmaps" in events(run.logger.log_dir).Tags()["images"]
