"""facexai.config_loading: configs and checkpoints from strangers never run their code.

Each test feeds what an attacker or a typo would put in a config and checks the one-line error
and that nothing ran (no marker file, no module imported).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

from facexai import config_loading
from facexai.config_loading import (
    CheckpointError,
    ClassSpec,
    ConfigError,
    build,
    load_config_specs,
    load_module,
    parse_spec,
    read_checkpoint,
    read_config,
)

MODEL = {
    "class_path": "facexai.models.VerificationModule",
    "init_args": {
        "backbone": "iresnet_mini",
        "num_identities": 4,
        "embedding_size": 16,
        "backbone_kwargs": {"img_size": 32},
    },
}
DATA = {"class_path": "facexai.data.SyntheticFacesDataModule", "init_args": {"image_size": 32}}


def _config(tmp_path: Path, payload: object, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))  # JSON is YAML
    return path


def test_shipped_configs_load(tmp_path: Path) -> None:
    for config in sorted(Path("configs").glob("*.yaml")):
        specs = load_config_specs(config)
        assert specs["model"].cls.__name__ in ("VerificationModule", "ClassifierModule"), config
        assert specs["data"].cls.__module__.startswith("facexai.data"), config


def test_popen_class_path_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    model = {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", str(marker)]}}
    path = _config(tmp_path, {"model": model, "data": DATA})
    with pytest.raises(ConfigError, match=r"model.class_path 'subprocess.Popen' is refused: only classes from facexai"):
        load_config_specs(path)
    assert not marker.exists()


def test_untrusted_module_is_never_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing a module runs its top level: the package is checked before the import."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_config_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Model:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _config(tmp_path, {"model": {"class_path": "evil_config_module.Model"}, "data": DATA})
    with pytest.raises(ConfigError, match="is refused"):
        load_config_specs(path)
    assert not marker.exists()
    assert "evil_config_module" not in sys.modules


@pytest.mark.parametrize(
    ("section", "class_path", "expected"),
    [
        ("model", "facexai.data.SyntheticFacesDataModule", "LightningModule"),
        ("data", "facexai.models.VerificationModule", "LightningDataModule"),
        ("model", "facexai.models.IResNet", "LightningModule"),
        ("model", "facexai.data.RecordIOWriter", "LightningModule"),
        ("model", "facexai.evaluate.sys", "does not name an importable class"),
        ("model", "facexai.models.__builtins__", "dotted class name"),
    ],
)
def test_top_level_classes_must_be_lightning_classes(section: str, class_path: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_spec({"class_path": class_path}, section)


def test_reexported_foreign_class_is_refused() -> None:
    """A class reachable through a facexai module but defined elsewhere is not facexai's."""
    import facexai.evaluate.figures as report  # imports matplotlib's Figure at module level

    assert report.Figure.__module__.startswith("matplotlib")
    with pytest.raises(ConfigError, match="is refused"):
        parse_spec({"class_path": "facexai.evaluate.figures.Figure"}, "model")


def test_nested_class_paths_only_name_nn_layers() -> None:
    spec = parse_spec(
        {**MODEL, "init_args": {**MODEL["init_args"], "backbone_kwargs": {"act": {"class_path": "torch.nn.GELU"}}}},
        "model",
    )
    where = "model.init_args.backbone_kwargs.act"
    assert spec.init_args["backbone_kwargs"]["act"] == ClassSpec(torch.nn.GELU, {}, where)
    for bad in ("subprocess.Popen", "builtins.eval", "facexai.data.RecordIOWriter", "pathlib.Path"):
        nested = {**MODEL["init_args"], "weights": [{"class_path": bad, "init_args": {}}]}
        with pytest.raises(ConfigError, match=r"model.init_args.weights\[0\].class_path .* is refused"):
            parse_spec({**MODEL, "init_args": nested}, "model")


def test_nested_spec_is_built_before_its_owner() -> None:
    linear = ClassSpec(torch.nn.Linear, {"in_features": 2, "out_features": 3}, "layer")
    built = build(ClassSpec(torch.nn.ModuleDict, {"modules": {"a": linear}}, "owner"))
    assert isinstance(built["a"], torch.nn.Linear)
    assert built["a"].out_features == 3
    with pytest.raises(ConfigError, match=r"cannot build layer \(Linear\) from its init_args: .*nope"):
        build(ClassSpec(torch.nn.Linear, {"nope": 1}, "layer"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"class_path": "facexai.models.VerificationModule", "init": {}}, r"unknown keys \['init'\]; valid: class_"),
        ({"class_path": 5}, "dotted class name"),
        ({"class_path": ["a"]}, "dotted class name"),
        ({"class_path": "facexai.models.VerificationModule", "init_args": [1]}, "init_args must be a mapping"),
        ({"class_path": "facexai.models.VerificationModule", "init_args": {1: 2}}, "init_args must be a mapping"),
        ("facexai.models.VerificationModule", "must be a mapping with class_path"),
    ],
)
def test_spec_structure_errors(spec: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec(spec, "model")


def test_malformed_yaml_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    path = _config(tmp_path, "model:\n  class_path: x\n  init_args: {a: 1\ndata: 2\n")
    with pytest.raises(ConfigError) as err:
        read_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "line 4" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- model\n- data\n", "must be a YAML mapping"),
        ("just text", "must be a YAML mapping"),
        ("", "must be a YAML mapping"),
        ("seed_everything: 1e999\nmodel: {}\ndata: {}\n", "seed_everything must be an integer"),
        ("a: &a [*a]\n", "nested more than 64 levels"),  # a list holding itself
        ("[" * 5000 + "]" * 5000, r"nested more than 64 levels deep \(\[ and \{\)"),  # PyYAML: quadratic
        ("a:\n" + "".join(" " * i + "-\n" for i in range(1, 800)), "nested too deeply"),  # RecursionError
        ("a:\n" + "".join(" " * i + "- \n" for i in range(1, 100)), "nested more than 64 levels"),
    ],
)
def test_bad_documents_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config_specs(_config(tmp_path, text))


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """Nine levels of ten aliases expand to 10**9 values; the node budget stops the walk early."""
    lines = ['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    path = _config(tmp_path, "\n".join(lines) + "\nmodel: *a9\ndata: {}\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than 100000 values"):
        read_config(path)
    assert time.perf_counter() - start < 2.0


def test_oversized_and_binary_files(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (config_loading.MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        read_config(big)
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"model: \xff\xfe\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        read_config(binary)
    with pytest.raises(FileNotFoundError, match="Config not found"):
        read_config(tmp_path / "missing.yaml")


def test_checkpoint_errors_never_suggest_unsafe_loading(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "extra": Path("x")}, pickled)  # a non-tensor object
    for path in (junk, pickled):
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        assert "is not a readable facexai/Lightning checkpoint" in str(err.value)
        assert "weights_only=False" not in str(err.value)
        assert "\n" not in str(err.value)
    tensor = tmp_path / "tensor.ckpt"
    torch.save(torch.zeros(2), tensor)
    with pytest.raises(CheckpointError, match="holds a Tensor"):
        read_checkpoint(tensor)


def test_load_module_from_config_and_from_hyper_parameters(tmp_path: Path) -> None:
    module = build(parse_spec(MODEL, "model"))
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": module.state_dict()}, bare)
    config = _config(tmp_path, {"model": MODEL})
    rebuilt = load_module(bare, config)
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in module.state_dict().items())
    with pytest.raises(CheckpointError, match="is not a facexai Lightning checkpoint"):
        load_module(bare)  # no hyper_parameters and no config
    small = {**MODEL, "init_args": {**MODEL["init_args"], "embedding_size": 8}}
    with pytest.raises(CheckpointError, match="does not fit the model built from the config"):
        load_module(bare, _config(tmp_path, {"model": small}, "small.yaml"))
