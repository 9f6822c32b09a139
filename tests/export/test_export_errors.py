"""Bad inputs to the export: checkpoints, input sizes, tasks, and the command's exit codes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from export_helpers import save_checkpoint

from facexai.export import export_main, export_onnx
from facexai.export.cli import export_parser


def test_missing_checkpoint(tmp_path: Path, capsys) -> None:
    assert export_main(["--ckpt_path", str(tmp_path / "none.ckpt"), "--output", str(tmp_path / "m.onnx")]) == 2
    assert "Checkpoint not found" in capsys.readouterr().err


def test_not_a_checkpoint(tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"definitely not a zip or pickle")
    assert export_main(["--ckpt_path", str(junk), "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "is not a readable facexai/Lightning checkpoint" in err
    assert "weights_only=False" not in err
    plain = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.zeros(2)}, plain)
    assert export_main(["--ckpt_path", str(plain), "--output", str(tmp_path / "m.onnx")]) == 2
    assert "is not a facexai Lightning checkpoint" in capsys.readouterr().err


class Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def test_pickled_code_is_never_executed(tmp_path: Path, capsys) -> None:
    """A checkpoint holding a code-running pickle is refused by weights_only=True, not unpickled."""
    evil, marker = tmp_path / "evil.ckpt", tmp_path / "pwned"
    torch.save({"state_dict": {}, "hyper_parameters": {"margin": Payload(marker)}}, evil)
    assert export_main(["--ckpt_path", str(evil), "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "weights_only=True" in err
    assert "no pickled code runs" in err
    assert not marker.exists()


@pytest.mark.parametrize("size", [100, 120, 96, 192])
def test_input_size_must_be_the_checkpoint_size(size: int, verification_module, tmp_path: Path) -> None:
    # the fixture's IResNet is built for 112 px (backbone_kwargs.img_size): other sides break its FC
    with pytest.raises(ValueError, match=f"input_size {size} does not fit this model: it was built for 112 px"):
        export_onnx(verification_module, tmp_path / "m.onnx", input_size=size)
    assert not (tmp_path / "m.onnx").exists()


def test_bad_task_and_format(verification_module, tmp_path: Path) -> None:
    net = verification_module.explained_model
    with pytest.raises(ValueError, match="task must be 'classification' or 'verification'"):
        export_onnx(net, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="contradicts"):
        export_onnx(verification_module, tmp_path / "m.onnx", task="classification")
    with pytest.raises(ValueError, match="Unknown input_format"):
        export_onnx(verification_module, tmp_path / "m.onnx", input_format="bgr")
    with pytest.raises(ValueError, match="from 16 to 1024"):
        export_onnx(net, tmp_path / "m.onnx", input_size=8, task="classification")
    with pytest.raises(TypeError, match=r"torch.nn.Module"):
        export_onnx("model.ckpt", tmp_path / "m.onnx")


def test_cli_rejects_unknown_explainer_and_stray_options(verification_module, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        export_parser().parse_args(["--ckpt_path", "x", "--output", "y", "--explainer", "fame"])
    assert "invalid choice: 'fame'" in capsys.readouterr().err
    ckpt = save_checkpoint(verification_module, tmp_path / "v.ckpt")
    args = ["--ckpt_path", str(ckpt), "--output", str(tmp_path / "m.onnx"), "--target_layer", "layer4"]
    assert export_main(args) == 2
    assert "--target_layer needs --explainer" in capsys.readouterr().err


def test_config_rebuilds_module_and_refuses_foreign_classes(verification_module, tmp_path: Path, capsys) -> None:
    from facexai.export.cli import load_checkpoint

    ckpt = tmp_path / "bare.ckpt"
    torch.save({"state_dict": verification_module.state_dict()}, ckpt)  # no hyper_parameters
    config = tmp_path / "cfg.yaml"
    section = {"class_path": "facexai.models.VerificationModule", "init_args": dict(verification_module.hparams)}
    config.write_text(yaml.safe_dump({"model": section}))
    module = load_checkpoint(ckpt, config)
    for key, value in verification_module.state_dict().items():
        assert torch.equal(module.state_dict()[key], value)
    config.write_text("model:\n  class_path: os.system\n  init_args: {}\n")
    with pytest.raises(ValueError, match=r"'os.system' is refused: only classes from facexai"):
        load_checkpoint(ckpt, config)
    config.write_text("model:\n  class_path: facexai.models.IResNet\n")
    with pytest.raises(ValueError, match="is not a ClassifierModule or VerificationModule"):
        load_checkpoint(ckpt, config)


def test_output_may_not_overwrite_the_checkpoint_or_config(verification_module, tmp_path: Path, capsys) -> None:
    ckpt = save_checkpoint(verification_module, tmp_path / "v.ckpt")
    config = tmp_path / "cfg.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "class_path": "facexai.models.VerificationModule",
                    "init_args": dict(verification_module.hparams),
                }
            }
        )
    )
    before = ckpt.read_bytes(), config.read_bytes()
    assert export_main(["--ckpt_path", str(ckpt), "--output", str(ckpt)]) == 2
    assert f"--output {ckpt} would overwrite the input {ckpt}" in capsys.readouterr().err
    assert export_main(["--ckpt_path", str(ckpt), "--config", str(config), "--output", str(config)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert (ckpt.read_bytes(), config.read_bytes()) == before


def test_malformed_config_is_one_line(verification_module, tmp_path: Path, capsys) -> None:
    ckpt = save_checkpoint(verification_module, tmp_path / "v.ckpt")
    config = tmp_path / "cfg.yaml"
    config.write_text("model:\n  class_path: facexai.models.VerificationModule\n  init_args: [1,\n")
    assert export_main(["--ckpt_path", str(ckpt), "--config", str(config), "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"config {config}: line 4" in err
    assert "Traceback" not in err


def test_torch_export_error_is_one_line(verification_module, tmp_path: Path, monkeypatch, capsys) -> None:
    """A model torch.onnx cannot trace is the user's problem: one line and exit 2, no traceback."""
    from torch.onnx._internal.exporter._errors import TorchExportError

    import facexai.export.onnx as onnx_module

    def untraceable(*args, **kwargs):
        raise TorchExportError("Failed to export the model with torch.export.\n\nlong details\nmore")

    monkeypatch.setattr(onnx_module, "export_onnx", untraceable)
    ckpt = save_checkpoint(verification_module, tmp_path / "v.ckpt")
    assert export_main(["--ckpt_path", str(ckpt), "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "facexai export: error: Failed to export the model with torch.export. (FACEXAI_DEBUG=1 shows the details)\n"
    )


def test_help_texts() -> None:
    from facexai.export.cli import audit_parser

    assert "insightface" in export_parser().format_help()
    assert "no torch" in audit_parser().format_help()


def test_layer_typo_gets_the_layer_error(verification_module, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Layer 'layer9' is not in .*Closest matches: layer4"):
        export_onnx(
            verification_module, tmp_path / "m.onnx", explainer="gradcam", explainer_options={"target_layer": "layer9"}
        )
    with pytest.raises(ValueError, match="explainer_options were given without an explainer"):
        export_onnx(verification_module, tmp_path / "m.onnx", explainer_options={"target_layer": "layer4"})


def test_failed_parity_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    """A graph that does not compute what the module computes is reported and never replaces a file."""
    from facexai.export import parity

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    net(torch.zeros(1, 3, 16, 16))
    path = tmp_path / "tiny.onnx"
    path.write_bytes(b"an older export")
    honest = parity.plain_reference
    monkeypatch.setattr(parity, "plain_reference", lambda n, name: lambda x, t: {name: n(x).detach() + 1e-3})
    with pytest.raises(ValueError, match=r"differs from PyTorch by 0.001 .*PyTorch itself is stable there"):
        export_onnx(net, path, input_size=16, task="classification")
    assert path.read_bytes() == b"an older export"  # written atomically: the previous file survives
    monkeypatch.setattr(parity, "plain_reference", honest)
    assert export_onnx(net, path, input_size=16, task="classification").path == path


@pytest.mark.slow
def test_real_lightning_checkpoint_exports(tmp_path: Path) -> None:
    """A checkpoint written by Trainer (callbacks, loops, optimizer state) loads weights_only."""
    import pytorch_lightning as pl

    from facexai.data import SyntheticFacesDataModule
    from facexai.export import read_metadata
    from facexai.export.onnx import file_sha256
    from facexai.models import VerificationModule

    data = SyntheticFacesDataModule(
        num_identities=4,
        images_per_identity=2,
        num_val_identities=4,
        val_images_per_identity=2,
        num_val_pairs=8,
        batch_size=8,
    )
    module = VerificationModule(
        backbone="iresnet_mini", num_identities=4, embedding_size=32, backbone_kwargs={"img_size": 112}
    )
    trainer = pl.Trainer(
        max_steps=1,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=data)
    ckpt = tmp_path / "real.ckpt"
    trainer.save_checkpoint(ckpt)
    assert export_main(["--ckpt_path", str(ckpt), "--output", str(tmp_path / "real.onnx")]) == 0
    assert read_metadata(tmp_path / "real.onnx").source_sha256 == file_sha256(ckpt)
