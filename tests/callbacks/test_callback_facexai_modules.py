"""ExplanationCallback on facexai's own modules: face pairs (e+/e-) and a classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from callback_models import FAST_METRICS, classifier_module, events, faces, trainer, verification_module

from facexai.callbacks import ExplanationCallback
from facexai.callbacks.config import tag_label
from facexai.callbacks.overlays import CAPTION_HEIGHT, PAD
from facexai.explain import ClassTarget, available_explainers, create_explainer, pair_targets
from facexai.metrics.functional import (
    curve_auc,
    deletion_insertion_curves,
    energy_pointing_game,
    target_score_fn,
)


def _grid_size(rows: int, cols: int, tile: int = 112) -> tuple[int, int]:
    """(width, height) of a captioned grid with a title line."""
    return cols * (tile + PAD) + PAD, CAPTION_HEIGHT + rows * (CAPTION_HEIGHT + tile + PAD) + PAD


def test_verification_fit_and_validate_log_pairs_and_score_e_plus_e_minus(tmp_path: Path) -> None:
    datamodule, module = faces("verification"), verification_module()
    callback = ExplanationCallback(explainers=["gradcam"], metrics=FAST_METRICS, max_time_share=None)
    run = trainer(tmp_path, [callback])
    run.fit(module, datamodule)

    acc = events(run.logger.log_dir)
    for kind in ("pairs_pos", "pairs_neg"):
        (image,) = acc.Images(f"xai/gradcam/{kind}")
        assert (image.width, image.height) == _grid_size(rows=4, cols=4)  # 4 pairs: A | map | B | map
        assert image.step == run.global_step
    assert "xai/gradcam/curves" in acc.Tags()["images"]
    assert "xai/settings/text_summary" in acc.Tags()["tensors"]
    scalars = set(acc.Tags()["scalars"])
    for metric in ("deletion_auc", "insertion_auc", "energy_pointing_game"):
        assert {f"val/xai/gradcam/{metric}_pos", f"val/xai/gradcam/{metric}_neg"} <= scalars
    assert {"xai/time_s", "xai/gradcam/time_s", "val/xai/samples"} <= scalars
    assert acc.Scalars("val/xai/samples")[0].value == 4

    # trainer.validate runs under inference_mode: the callback must still explain and score.
    run.validate(module, datamodule, verbose=False)
    logged = run.callback_metrics
    batch = next(iter(datamodule.val_dataloader()))
    model = module.backbone.eval()
    masks = torch.cat([batch["mask_a"], batch["mask_b"]])
    for suffix, mode in (("pos", "similar"), ("neg", "dissimilar")):
        images, target = pair_targets(model, batch["image_a"], batch["image_b"], mode)
        maps = create_explainer("gradcam")(model, images, target)
        torch.testing.assert_close(callback.last_maps["gradcam"][suffix], maps)
        # e+ is scored by the cosine similarity, e- by 1 - cosine (docs/metrics.md, score forms).
        score_fn = target_score_fn(model, target)
        deletion, insertion = deletion_insertion_curves(score_fn, images, maps, 4, with_index=True)
        assert float(logged[f"val/xai/gradcam/deletion_auc_{suffix}"]) == pytest.approx(
            float(curve_auc(deletion).mean()), abs=1e-5
        )
        assert float(logged[f"val/xai/gradcam/insertion_auc_{suffix}"]) == pytest.approx(
            float(curve_auc(insertion).mean()), abs=1e-5
        )
        assert float(logged[f"val/xai/gradcam/energy_pointing_game_{suffix}"]) == pytest.approx(
            float(energy_pointing_game(maps, masks)), abs=1e-5
        )
    assert not torch.allclose(callback.last_maps["gradcam"]["pos"], callback.last_maps["gradcam"]["neg"])


def test_classifier_bf16_every_n_epochs_and_test_stage(tmp_path: Path) -> None:
    datamodule, module = faces("classification"), classifier_module()
    metrics = {**FAST_METRICS, "pointing_game": {}, "sparsity": {}}
    callback = ExplanationCallback(metrics=metrics, every_n_epochs=2, max_samples=3, max_time_share=None)
    run = trainer(tmp_path, [callback], max_epochs=2, precision="bf16-mixed")
    run.fit(module, datamodule)

    maps = callback.last_maps["gradcam"]["maps"]
    assert maps.dtype == torch.float32
    assert maps.shape == (3, 32, 32)
    assert 0 <= maps.min()
    assert maps.max() <= 1
    acc = events(run.logger.log_dir)
    assert len(acc.Scalars("val/acc")) == 2  # two validation epochs ...
    (image,) = acc.Images("xai/gradcam/heatmaps")  # ... explained only in epoch 0
    assert image.step == 2
    assert (image.width, image.height) == _grid_size(rows=3, cols=3)
    for metric in ("deletion_auc", "insertion_auc", "energy_pointing_game", "pointing_game", "sparsity"):
        (value,) = acc.Scalars(f"val/xai/gradcam/{metric}")
        assert torch.isfinite(torch.tensor(value.value))

    run.test(module, datamodule, verbose=False)
    assert torch.isfinite(run.callback_metrics["test/xai/gradcam/deletion_auc"])
    assert "test/xai/gradcam/heatmaps" in callback.last_grids
    labels = next(iter(datamodule.val_dataloader()))["label"][:3]
    images = next(iter(datamodule.val_dataloader()))["image"][:3]
    expected = create_explainer("gradcam")(module.model, images, ClassTarget(labels))
    torch.testing.assert_close(callback.last_maps["gradcam"]["maps"], expected)


#: options that keep the iterative and sampling methods to a few model calls
CHEAP_OPTIONS = {"fame": {"iterations": 2}, "corrrise": {"n_masks": 8, "patch_size": 8}, "scorecam": {"batch_size": 64}}


def test_every_registered_explainer_runs_on_face_pairs_in_the_callback(tmp_path: Path) -> None:
    names = available_explainers()
    callback = ExplanationCallback(
        explainers={n: CHEAP_OPTIONS.get(n, {}) for n in names},
        metrics=FAST_METRICS,
        max_samples=2,
        log_curves=False,
        max_time_share=None,
    )
    run = trainer(tmp_path, [callback])
    run.validate(verification_module(), faces("verification"), verbose=False)
    images = set(events(run.logger.log_dir).Tags()["images"])
    for name in names:
        label = tag_label(name)  # "gradcam++" -> "gradcam_pp"
        for suffix in ("pos", "neg"):
            maps = callback.last_maps[name][suffix]
            assert maps.shape == (4, 32, 32)
            assert maps.dtype == torch.float32
            assert 0 <= maps.min()
            assert maps.max() <= 1
            assert torch.isfinite(run.callback_metrics[f"val/xai/{label}/deletion_auc_{suffix}"])
            assert f"xai/{label}/pairs_{suffix}" in images
