"""Checkpoints read as tensors and plain data only, and the LightningModule they are loaded into."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from facexai.config_loading.class_paths import build, in_config_file, parse_spec
from facexai.config_loading.errors import CheckpointError, ConfigError, one_line
from facexai.config_loading.yaml_limits import read_config


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, read with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a torch file, or one holding pickled objects beyond tensors and plain
            data (which are never unpickled), or not a mapping.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(
            f"{path} is not a readable facexai/Lightning checkpoint: torch.load(weights_only=True) refused it "
            "(not a torch file, or it holds objects other than tensors and plain data; no pickled code runs)"
        ) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a facexai/Lightning checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def load_weights(module: Any, checkpoint: Mapping[str, Any], path: str | Path) -> None:
    """Load a checkpoint's ``state_dict`` (or a bare state dict) into ``module``."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} is not a facexai/Lightning checkpoint (no state_dict)")
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = one_line(str(err))[:300]
        raise CheckpointError(f"checkpoint {path} does not fit the model built from the config: {first}") from err


def load_module(
    checkpoint_path: str | Path, config: str | Path | None = None, bases: tuple[type, ...] | None = None
) -> Any:
    """The LightningModule of a checkpoint, in eval mode.

    Without ``config`` the module is rebuilt from the checkpoint's own ``hyper_parameters``; with
    it, from the config's ``model`` section (for checkpoints without hyper-parameters).

    Args:
        checkpoint_path: the ``.ckpt`` file.
        config: optional training YAML.
        bases: classes the config's model must extend (default: any LightningModule).
    """
    from facexai.models.modules import module_from_checkpoint

    checkpoint = read_checkpoint(checkpoint_path)
    if config is None:
        try:
            return module_from_checkpoint(checkpoint, checkpoint_path)
        except ValueError as err:  # says itself what is wrong (no hyper_parameters, bad values)
            raise CheckpointError(one_line(str(err))) from err
        except (TypeError, RuntimeError) as err:
            reason = one_line(str(err))[:300]
            raise CheckpointError(f"{checkpoint_path} does not fit a facexai module: {reason}") from err
    config_dict = read_config(config)
    section = config_dict.get("model")
    if section is None:
        raise ConfigError(f"config {config} has no 'model' section (class_path + init_args)")
    module = build(in_config_file(str(config), parse_spec, section, "model", bases))
    if "state_dict" not in checkpoint:
        raise CheckpointError(f"{checkpoint_path} is not a Lightning checkpoint (no state_dict)")
    load_weights(module, checkpoint, checkpoint_path)
    return module.eval()
