"""Two CPU processes: images are logged once, metrics are synced across the ranks."""

from __future__ import annotations

from pathlib import Path

import pytest
from callback_models import FAST_METRICS, GridCountingCallback, PlainClassifier, events, trainer, tuple_loaders

from facexai.callbacks import ExplanationCallback


class _Counting(GridCountingCallback, ExplanationCallback):
    pass


@pytest.mark.slow  # spawns two processes that each import torch and Lightning (~30 s here)
def test_ddp_spawn_logs_images_once_and_syncs_metrics(tmp_path: Path) -> None:
    train, val = tuple_loaders(n_train=12, n_val=6, batch_size=3)  # 2 x 3 training, 3 validation images per rank
    callback = _Counting(metrics=FAST_METRICS, target_layer="layer3", max_time_share=None, png_dir=str(tmp_path / "png"))
    callback.record_dir = str(tmp_path)
    run = trainer(tmp_path, [callback], strategy="ddp_spawn", devices=2)
    run.fit(PlainClassifier(), train, val)

    acc = events(run.logger.log_dir)
    (image,) = acc.Images("xai/gradcam/heatmaps")
    assert image.height > 3 * 96  # rank zero's 3 rows
    assert len(acc.Images("xai/gradcam/curves")) == 1
    (samples,) = acc.Scalars("val/xai/samples")
    assert samples.value == 6  # 3 per rank, summed by torchmetrics
    assert len(acc.Scalars("val/xai/gradcam/deletion_auc")) == 1
    assert [p.name for p in (tmp_path / "png").iterdir()] == ["xai_gradcam_heatmaps.png"]
    # Rendering happens on rank zero only, not merely writing (a TensorBoard logger is silent elsewhere).
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)] == ["1", "0"]
