"""What ``facexai evaluate`` runs on: a fit config's module and data, or a pretrained face model.

With ``--config`` the model and data come from the same YAML a ``fit`` run used (``model:`` and
``data:`` sections, ``class_path`` + ``init_args``), read with ``yaml.safe_load`` and built by
importing the named classes, so no config code is ever executed. With ``--model`` a user's face
model file is loaded by :func:`facexai.models.load_face_model` and only verification data is
needed: ``.bin`` sets, or a pairs file with its image root, read by the data modules without any
training set.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

#: packages searched for a bare class name in ``class_path`` (LightningCLI resolves them too)
SHORT_NAME_PACKAGES = ("facexai.models", "facexai.data", "pytorch_lightning")
MODEL_ONLY = ("bin", "pairs", "images_root", "input_size", "mean", "std", "channel_order")


@dataclass
class EvaluationInputs:
    """The module to explain, the data module to draw samples from, and how they were made.

    Attributes:
        module: a LightningModule (``--config``) or a bare face model (``--model``).
        datamodule: anything with ``val_dataloader()``.
        context: what the report says about the model and data (strings, JSON-safe).
    """

    module: nn.Module
    datamodule: Any
    context: dict[str, Any]


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a LightningCLI YAML with ``yaml.safe_load`` (plain data only, nothing executed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config not found: {path}")
    with path.open(encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    if not isinstance(config, Mapping) or not all(key in config for key in ("model", "data")):
        raise ValueError(f"{path} needs 'model' and 'data' sections (class_path + init_args), as for `facexai fit`")
    return dict(config)


def resolve_class(class_path: str) -> type:
    """Import the class named by a dotted ``class_path`` (or a bare facexai/Lightning name)."""
    if not isinstance(class_path, str) or not class_path:
        raise ValueError(f"class_path must be a non-empty string, got {class_path!r}")
    if "." in class_path:
        module_name, _, name = class_path.rpartition(".")
        candidates = [module_name]
    else:
        name, candidates = class_path, list(SHORT_NAME_PACKAGES)
    for module_name in candidates:
        try:
            found = getattr(importlib.import_module(module_name), name, None)
        except ModuleNotFoundError:
            found = None
        if isinstance(found, type):
            return found
    raise ValueError(f"class_path {class_path!r} does not name an importable class")


def instantiate(spec: Any, where: str) -> Any:
    """Build ``class_path(**init_args)``; nested ``class_path`` dicts in the arguments are built too."""
    if not isinstance(spec, Mapping) or "class_path" not in spec:
        raise ValueError(f"config section {where!r} must be a mapping with class_path (and init_args), got {spec!r}")
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, Mapping):
        raise ValueError(f"{where}.init_args must be a mapping, got {init_args!r}")
    kwargs = {key: _build_value(value, f"{where}.{key}") for key, value in init_args.items()}
    cls = resolve_class(spec["class_path"])
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(
            f"cannot build {where} ({spec['class_path']}) from init_args {dict(init_args)}: {err}"
        ) from err


def _build_value(value: Any, where: str) -> Any:
    if isinstance(value, Mapping) and "class_path" in value:
        return instantiate(value, where)
    return value


def build_from_config(config: Mapping[str, Any]) -> tuple[nn.Module, Any]:
    """The LightningModule and DataModule of a config, seeded as ``fit`` seeds them."""
    seed = config.get("seed_everything")
    if isinstance(seed, int) and not isinstance(seed, bool):
        import pytorch_lightning as pl

        pl.seed_everything(seed, verbose=False)
    return instantiate(config["model"], "model"), instantiate(config["data"], "data")


def load_checkpoint(module: nn.Module, path: str | Path) -> None:
    """Load a Lightning checkpoint's weights into the config-built module (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds no state dict")
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit the model built from the config: {err}") from err


# ----------------------------------------------------------------------------- pretrained face model


def check_sources(args: argparse.Namespace) -> None:
    """Exactly one of ``--config`` and ``--model``, each with the options that belong to it."""
    if args.config and args.model:
        raise ValueError("--config and --model are mutually exclusive: evaluate a fit config's model "
                         "(--config [--ckpt_path]) or a pretrained face model file (--model), not both")  # fmt: skip
    if not args.config and not args.model:
        raise ValueError("give --config (the YAML of a fit run) or --model (a pretrained face model file)")
    if args.config:
        given = [f"--{name.replace('_', '-')}" for name in MODEL_ONLY if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --model; with --config the data come from the YAML")
    elif args.ckpt_path:
        raise ValueError("--ckpt_path applies to --config; with --model the weights are in the model file")


def check_data_args(args: argparse.Namespace) -> None:
    """``--model`` takes ``--bin`` sets or ``--pairs`` with ``--images-root``; checked before any load."""
    if args.bin and args.pairs:
        raise ValueError("give --bin or --pairs, not both (the first verification set is evaluated)")
    if args.pairs and not args.images_root:
        raise ValueError("--pairs needs --images-root, the folder the pairs' image names are relative to")
    if args.images_root and not args.pairs:
        raise ValueError("--images-root only applies with --pairs")
    if not args.bin and not args.pairs:
        raise ValueError("--model needs verification data: --bin SET.bin, or --pairs pairs.txt --images-root DIR")


def verification_datamodule(args: argparse.Namespace, image_size: int, batch_size: int) -> tuple[Any, str]:
    """The data module of ``--bin`` or ``--pairs``/``--images-root`` (no training data), and a label."""
    from facexai.data import FacePairsDataModule, InsightFaceDataModule

    if args.bin:
        data = InsightFaceDataModule(val_bins=args.bin, image_size=image_size, batch_size=batch_size, num_workers=0)
        return data, ", ".join(args.bin)
    data = FacePairsDataModule(
        pairs_files=args.pairs, pairs_root=args.images_root, image_size=image_size,
        batch_size=batch_size, num_workers=0, augmentation="none",
    )  # fmt: skip
    return data, f"{', '.join(args.pairs)} (images under {args.images_root})"


def pretrained_inputs(args: argparse.Namespace, batch_size: int) -> EvaluationInputs:
    """A face model file and verification data sized to its input."""
    from facexai.face_model_args import layout_kwargs, load_model_from_args, model_input_size

    check_data_args(args)
    layout_kwargs(args)  # bad layout flags fail before anything is read
    model = load_model_from_args(args)
    datamodule, data = verification_datamodule(args, model_input_size(model), batch_size)
    info = getattr(model, "face_model_info", None)
    description = f"{type(model).__name__} ({getattr(info, 'source', 'face model')})"
    context = {"model": description, "model_file": str(args.model), "data": data}
    return EvaluationInputs(model, datamodule, context)


def config_inputs(args: argparse.Namespace) -> EvaluationInputs:
    """The LightningModule and DataModule of ``--config``, with ``--ckpt_path`` loaded."""
    module, datamodule = build_from_config(load_config(args.config))
    if args.ckpt_path:
        load_checkpoint(module, args.ckpt_path)
    context = {"config": str(args.config), "checkpoint": args.ckpt_path, "model": describe_module(module)}
    return EvaluationInputs(module, datamodule, context)


def describe_module(module: nn.Module) -> str:
    """``VerificationModule(iresnet50)``: the class and, where recorded, the backbone.

    A module built around a user's file (``pretrained=``) names that file: its ``backbone``
    hyper-parameter is then the unused default.
    """
    hparams = getattr(module, "hparams", {}) or {}
    if not isinstance(hparams, Mapping):
        return type(module).__name__
    backbone = hparams.get("pretrained") or hparams.get("backbone")
    return f"{type(module).__name__}({backbone})" if backbone else type(module).__name__


def evaluation_inputs(args: argparse.Namespace, batch_size: int) -> EvaluationInputs:
    """Model, data and report context for the parsed ``evaluate`` arguments."""
    check_sources(args)
    return config_inputs(args) if args.config else pretrained_inputs(args, batch_size)
