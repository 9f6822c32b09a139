"""What ``facexai evaluate`` runs on: a fit config's module and data, or a pretrained face model.

With ``--config`` the model and data come from the same YAML a ``fit`` run used (``model:`` and
``data:`` sections, ``class_path`` + ``init_args``), read and checked by
:mod:`facexai.config_loading` (the loader ``export`` uses too): only facexai/Lightning module and
data classes and nn layers are imported and built, so a config cannot run other code. With ``--model`` a user's face
model file is loaded by :func:`facexai.models.load_face_model` and only verification data is
needed: ``.bin`` sets, or a pairs file with its image root, read by the data modules without any
training set.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from facexai import config_loading
from facexai.config_loading import (
    ConfigError,
    build,
    lightning_bases,
    load_weights,
    parse_spec,
    read_checkpoint,
    read_config,
    section_specs,
    seed_of,
)

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
    """Read a LightningCLI YAML safely (:func:`facexai.config_loading.read_config`) with model and data."""
    config = read_config(path)
    if not all(key in config for key in ("model", "data")):
        raise ConfigError(f"{path} needs 'model' and 'data' sections (class_path + init_args), as for `facexai fit`")
    return config


def resolve_class(class_path: str, where: str = "model") -> type:
    """The class of a top-level ``class_path``, checked before import (:func:`facexai.config_loading.resolve_class`)."""
    return config_loading.resolve_class(class_path, lightning_bases()[where], where)


def instantiate(spec: Any, where: str) -> Any:
    """Build ``class_path(**init_args)`` of section ``where`` (``model``, ``data``, ``trainer.callbacks``).

    The classes are checked first (:func:`facexai.config_loading.parse_spec`): a config cannot make
    evaluate import or run anything but facexai/Lightning classes and nn layers.
    """
    return build(parse_spec(spec, where))


def build_from_config(config: Mapping[str, Any], name: str = "config") -> tuple[nn.Module, Any]:
    """The LightningModule and DataModule of a config, seeded as ``fit`` seeds them.

    Both sections are checked before either is built, so a refused data class leaves no model built.
    """
    specs = section_specs(config, ("model", "data"), name)
    seed = seed_of(config, name)
    if seed is not None:
        import pytorch_lightning as pl

        pl.seed_everything(seed, verbose=False)
    return build(specs["model"]), build(specs["data"])


def load_checkpoint(module: nn.Module, path: str | Path) -> None:
    """Load a Lightning checkpoint's weights into the config-built module (weights_only)."""
    load_weights(module, read_checkpoint(path), path)


# ----------------------------------------------------------------------------- pretrained face model


def check_sources(args: argparse.Namespace) -> None:
    """Exactly one of ``--config`` and ``--model``, each with the options that belong to it."""
    if args.config and args.model:
        raise ValueError(
            "--config and --model are mutually exclusive: evaluate a fit config's model "
            "(--config [--ckpt_path]) or a pretrained face model file (--model), not both"
        )
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
        bins = InsightFaceDataModule(val_bins=args.bin, image_size=image_size, batch_size=batch_size, num_workers=0)
        return bins, ", ".join(args.bin)
    pairs = FacePairsDataModule(
        pairs_files=args.pairs,
        pairs_root=args.images_root,
        image_size=image_size,
        batch_size=batch_size,
        num_workers=0,
        augmentation="none",
    )
    return pairs, f"{', '.join(args.pairs)} (images under {args.images_root})"


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
    module, datamodule = build_from_config(load_config(args.config), str(args.config))
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
