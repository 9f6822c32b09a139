"""VerificationModule(pretrained=...): fine-tuning, validating and explaining a user's face model."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import fx, nn

from facexai.callbacks import ExplanationCallback
from facexai.data.synthetic_module import SyntheticFacesDataModule
from facexai.metrics.verification import PairVerificationMetrics
from facexai.models import IResNet, VerificationModule, load_module_checkpoint
from tests.thirdparty.arcface_torch import export_like_torch2onnx, face_batch, make_arcface_model, save_state_dict

SIDE = 32  # the synthetic faces' size in the Lightning run below; IResNets take multiples of 16
EMBEDDING = 24


@pytest.fixture(scope="module")
def arcface() -> nn.Module:
    return make_arcface_model((1, 1, 1, 1), EMBEDDING, (8, 16, 16, 32), side=SIDE)


@pytest.fixture(scope="module")
def files(arcface: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pretrained")
    return {
        "state_dict": save_state_dict(arcface, root / "backbone.pth"),
        "onnx": export_like_torch2onnx(arcface, root / "backbone.onnx", side=SIDE),
    }


def test_state_dict_backbone_trains_and_scores_pairs_like_the_original(arcface, files):
    module = VerificationModule(pretrained=str(files["state_dict"]), num_identities=5)
    assert isinstance(module.backbone, IResNet)
    assert module.head.weight.shape == (5, EMBEDDING)  # embedding size taken from the file
    assert module.hparams["pretrained"] == str(files["state_dict"])
    assert module.hparams["embedding_size"] is None
    a, b = face_batch(3, SIDE, seed=1), face_batch(3, SIDE, seed=2)
    with torch.no_grad():
        expected = F.cosine_similarity(arcface(a), arcface(b))
        scores = module.eval().pair_scores({"image_a": a, "image_b": b})
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-5)
    loss = module.train().training_step({"image": a, "label": torch.tensor([0, 1, 4])}, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert module.backbone.layer4[0].conv2.weight.grad is not None
    assert module.head.weight.grad is not None


def test_onnx_backbone_fits_validates_and_is_explained(files, tmp_path):
    torch.manual_seed(0)
    module = VerificationModule(pretrained=str(files["onnx"]), num_identities=4, lr=1e-3)
    assert isinstance(module.backbone, fx.GraphModule)
    before = [p.detach().clone() for p in module.backbone.parameters()]
    datamodule = SyntheticFacesDataModule(
        task="verification",
        num_identities=4,
        images_per_identity=2,
        num_val_identities=4,
        val_images_per_identity=2,
        num_val_pairs=8,
        image_size=SIDE,
        batch_size=4,
    )
    callback = ExplanationCallback(explainers=["gradcam"], metrics={}, max_time_share=None)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(module, datamodule)
    norms = [m for m in module.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms
    assert all(int(m.num_batches_tracked) == 2 for m in norms)
    after = list(module.backbone.parameters())
    assert any(not torch.equal(x, y) for x, y in zip(before, after, strict=True))  # the ONNX weights were fine-tuned
    # the logged ROC AUC is the one of this network's pair scores on the validation batch
    batch = next(iter(datamodule.val_dataloader()))
    metric = PairVerificationMetrics()
    with torch.no_grad():
        metric.update(module.eval().pair_scores(batch), batch["issame"].bool())
    expected = float(metric.compute()["roc_auc"])
    assert float(trainer.callback_metrics["val/synthetic/roc_auc"]) == pytest.approx(expected, abs=1e-6)
    maps = callback.last_maps["gradcam"]["pos"]
    assert maps.shape == (8, SIDE, SIDE)
    assert torch.isfinite(maps).all()
    assert maps.max() > 0


def test_checkpoint_of_a_pretrained_module_is_rebuilt_from_the_file(files, tmp_path):
    module = VerificationModule(
        pretrained=str(files["onnx"]), num_identities=4, pretrained_options={"check_parity": False}
    )
    with torch.no_grad():  # stands in for fine-tuning: the checkpoint must win over the file
        next(module.backbone.parameters()).mul_(0.5)
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    rebuilt = load_module_checkpoint(path)
    assert rebuilt.backbone.face_model_info.parity_cosine is None  # options were stored and re-applied
    x = face_batch(2, SIDE)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), module.eval()(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embedding_size": 512}, f"embedding_size=512 contradicts pretrained .* which outputs {EMBEDDING}"),
        ({"pretrained_options": {"side": 112}}, r"Unknown pretrained_options \['side'\]. Available: input_size, mean"),
        ({"weights": "w.pth"}, "pretrained replaces the timm backbone and its weights"),
    ],
)
def test_conflicting_arguments(files, kwargs, message):
    with pytest.raises(ValueError, match=message):
        VerificationModule(pretrained=str(files["state_dict"]), num_identities=4, **kwargs)


def test_timm_backbone_kwargs_are_ignored_with_a_warning(files):
    with pytest.warns(UserWarning, match=rf"backbone_kwargs {{'img_size': 64}} are ignored: .* \({SIDE} px input\)"):
        module = VerificationModule(
            pretrained=str(files["state_dict"]), num_identities=4, backbone_kwargs={"img_size": 64}
        )
    assert module.backbone.img_size == SIDE


def test_pretrained_options_without_pretrained():
    with pytest.raises(ValueError, match="pretrained_options is set but pretrained is not"):
        VerificationModule(num_identities=4, pretrained_options={"input_size": 112})


def test_default_embedding_size_is_unchanged_without_pretrained():
    module = VerificationModule(num_identities=4, backbone_kwargs={"img_size": 32}).eval()
    assert module.head.weight.shape == (4, 128)
    assert module(torch.zeros(1, 3, 32, 32)).shape == (1, 128)


def test_load_module_checkpoint_refuses_other_files_with_one_safe_message(tmp_path: Path) -> None:
    from facexai.config_loading import CheckpointError

    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    tensors = tmp_path / "weights.ckpt"
    torch.save({"w": torch.zeros(2)}, tensors)
    for path in (text, tensors):
        with pytest.raises(CheckpointError, match="not a") as info:
            load_module_checkpoint(path)
        assert "weights_only=False" not in str(info.value)
