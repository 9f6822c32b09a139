"""ExplanationCallback on a user's own LightningModule: tuple batches, no facexai methods."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from callback_models import FAST_METRICS, PlainClassifier, events, trainer, tuple_loaders

from facexai.callbacks import ExplanationCallback


def test_validate_then_fit_with_tuple_batches_smaller_than_max_samples(tmp_path: Path) -> None:
    train, val = tuple_loaders(batch_size=3)
    module = PlainClassifier()
    explainers = {"gradcam": {}, "gradcam_l2": {"method": "gradcam", "target_layer": "layer2"}}
    callback = ExplanationCallback(
        explainers=explainers, metrics=FAST_METRICS, target_layer="layer3", max_samples=8, max_time_share=None
    )
    assert callback.explainers["gradcam"].target_layer == "layer3"  # the callback default ...
    assert callback.explainers["gradcam_l2"].target_layer == "layer2"  # ... never overrides an option
    run = trainer(tmp_path, [callback], num_sanity_val_steps=1)  # the sanity check logs nothing
    # validate first (inference mode): the metric states it leaves must still work under fit.
    run.validate(module, val, verbose=False)
    run.fit(module, train, val)

    maps = callback.last_maps
    assert maps["gradcam"]["maps"].shape == (3, 32, 32)  # the whole batch of 3 < max_samples
    assert not torch.allclose(maps["gradcam"]["maps"], maps["gradcam_l2"]["maps"])
    acc = events(run.logger.log_dir)
    assert {"xai/gradcam/heatmaps", "xai/gradcam_l2/heatmaps", "xai/gradcam/curves"} <= set(acc.Tags()["images"])
    scalars = set(acc.Tags()["scalars"])
    assert {"val/xai/gradcam/deletion_auc", "val/xai/gradcam_l2/insertion_auc", "val/xai/samples"} <= scalars
    assert not any("pointing_game" in tag for tag in scalars)  # default metric, but no masks
    assert [s.value for s in acc.Scalars("val/xai/samples")] == [3, 3]  # validate, then fit


def test_autocast_around_the_run_does_not_change_maps_or_scores(tmp_path: Path) -> None:
    _, val = tuple_loaders()
    module = PlainClassifier()
    results = []
    for i, region in enumerate((nullcontext(), torch.autocast("cpu", dtype=torch.bfloat16))):
        callback = ExplanationCallback(
            metrics=FAST_METRICS, target_layer="layer3", log_images=False, max_time_share=None
        )
        run = trainer(tmp_path / str(i), [callback], logger=False)
        with region:
            run.validate(module, val, verbose=False)
        results.append((callback.last_maps["gradcam"]["maps"], run.callback_metrics["val/xai/gradcam/deletion_auc"]))
    (maps, deletion), (maps_bf16, deletion_bf16) = results
    assert maps_bf16.dtype == torch.float32
    torch.testing.assert_close(maps_bf16, maps)
    torch.testing.assert_close(deletion_bf16, deletion)


def test_warns_once_about_time_share_and_about_missing_masks(tmp_path: Path) -> None:
    _, val = tuple_loaders(n_val=6, batch_size=3)
    callback = ExplanationCallback(
        metrics=["deletion_auc", "pointing_game"],
        target_layer="layer3",
        batches_per_epoch=2,
        log_images=False,
        max_time_share=1e-9,
    )
    run = trainer(tmp_path, [callback], logger=False, limit_val_batches=2)
    with pytest.warns(UserWarning, match="max_time_share=") as record:
        run.validate(PlainClassifier(), val, verbose=False)
    assert run.callback_metrics["val/xai/samples"] == 6  # batches_per_epoch=2 batches of 3
    messages = [str(w.message) for w in record]
    assert sum("max_time_share=" in m for m in messages) == 1
    assert sum("['pointing_game'] need ground-truth masks" in m for m in messages) == 1  # two batches, one warning
    assert callback.suite.compute() == {}  # reset at the end of the epoch
