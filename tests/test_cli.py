"""The command line, run in-process: fit/validate with fast_dev_run, config errors, tool dispatch."""

import pytest
import yaml

from facexai.cli import main

TINY = {
    "seed_everything": 0,
    "trainer": {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    },
    "model": {
        "class_path": "facexai.models.VerificationModule",
        "init_args": {
            "backbone": "iresnet_mini",
            "num_identities": 4,
            "embedding_size": 16,
            "backbone_kwargs": {"img_size": 32},
        },
    },
    "data": {
        "class_path": "facexai.data.SyntheticFacesDataModule",
        "init_args": {
            "num_identities": 4,
            "images_per_identity": 2,
            "num_val_identities": 3,
            "val_images_per_identity": 2,
            "num_val_pairs": 8,
            "image_size": 32,
            "batch_size": 4,
        },
    },
}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_fit_and_validate_fast_dev_run(config):
    assert main(["fit", "--config", str(config), "--trainer.fast_dev_run=1"]) == 0
    assert main(["validate", "--config", str(config), "--trainer.fast_dev_run=1"]) == 0


def test_trainer_default_inference_mode_is_off(config, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config), "--print_config"])
    assert exc.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["inference_mode"] is False
    assert printed["model"]["init_args"]["margin"] == "arcface"


def test_unknown_config_key(config, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config), "--model.init_args.not_an_option=3"])
    assert exc.value.code != 0
    assert "not_an_option" in capsys.readouterr().err


def test_unknown_backbone_is_one_clear_line(tmp_path, capsys):
    bad = {**TINY, "model": {"class_path": "facexai.models.VerificationModule", "init_args": {"backbone": "iresnet55"}}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    code = main(["fit", "--config", str(path), "--trainer.fast_dev_run=1"])
    err = capsys.readouterr().err
    assert code != 0
    assert "iresnet55" in err
    assert "iresnet50" in err


def test_unknown_command(capsys):
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "export", "audit", "evaluate", "explain", "align"):
        assert command in out


def test_shipped_configs_parse(capsys):
    for name in ("demo", "classifier_demo", "arcface_iresnet50", "arcface_ms1mv2_iresnet50", "lfw_pairs"):
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--config", f"configs/{name}.yaml", "--print_config"])
        assert exc.value.code == 0, name


def test_audit_entry_point_does_not_import_torch():
    # `python -m facexai audit` must run on machines without PyTorch: the CLI dispatch itself
    # may not import torch before handing over to the audit.
    import subprocess
    import sys

    code = (
        "import sys\nfrom facexai.cli import main\n"
        "try:\n    main(['audit', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_validate_and_test_with_pairs_only(tmp_path):
    # A pretrained model is validated on LFW-style pairs with no training folders anywhere.
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        for i in (1, 2):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{name}_{i:04d}.jpg")
    (tmp_path / "pairs.txt").write_text("x 1 2\ny 1 2\nx 1 y 2\nx 2 y 1\n")
    data = {
        "class_path": "facexai.data.FacePairsDataModule",
        "init_args": {
            "pairs_files": [str(tmp_path / "pairs.txt")],
            "pairs_root": str(tmp_path),
            "image_size": 32,
            "batch_size": 4,
            "num_workers": 0,
        },
    }
    path = tmp_path / "pairs_only.yaml"
    path.write_text(yaml.safe_dump({**TINY, "data": data}))
    assert main(["validate", "--config", str(path), "--trainer.fast_dev_run=1"]) == 0
    assert main(["test", "--config", str(path), "--trainer.fast_dev_run=1"]) == 0


def test_torch_onnx_and_value_errors_are_one_line_other_errors_keep_traceback(monkeypatch, capsys):
    """User errors print one line and exit 2; a bug (KeyError) still raises for its traceback."""
    from torch.onnx._internal.exporter._errors import TorchExportError

    from facexai import cli

    class ExportError(ValueError):
        pass

    raised = {
        "export": TorchExportError("Failed to export the model.\n\nDetails\nof the graph"),
        "evaluate": ExportError("model cannot be exported: layer x"),
        "explain": KeyError("bug"),
    }

    def fails(command):
        def run(argv):
            raise raised[command]

        return run

    monkeypatch.setattr(cli, "TOOLS", {name: fails(name) for name in raised})
    monkeypatch.delenv("FACEXAI_DEBUG", raising=False)
    assert main(["export"]) == 2
    assert capsys.readouterr().err == (
        "facexai: error: Failed to export the model. (FACEXAI_DEBUG=1 shows the details)\n"
    )
    assert main(["evaluate"]) == 2
    assert capsys.readouterr().err == "facexai: error: model cannot be exported: layer x\n"
    with pytest.raises(KeyError):
        main(["explain"])
    monkeypatch.setenv("FACEXAI_DEBUG", "1")
    with pytest.raises(TorchExportError):
        main(["export"])
