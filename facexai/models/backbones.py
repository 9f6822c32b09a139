"""Backbone construction: any timm model by name (IResNets included), never downloading."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

import facexai.models.iresnet  # noqa: F401  registers the IResNets in timm


def create_backbone(name: str, num_classes: int, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """Build timm model ``name`` with an output width of ``num_classes``.

    Args:
        name: any name from ``timm.list_models()``, including ``iresnet18/34/50/100``.
        num_classes: logits for a classifier, embedding size for a face model.
        weights: optional local state-dict file, loaded with ``weights_only=True`` (no pickled
            code is ever executed); nothing is downloaded.
        **kwargs: passed to ``timm.create_model`` (``img_size``, ``drop_rate``, ...).
    """
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ValueError(f"Unknown backbone {name!r}: not a timm model name.{hint}")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    if weights is not None:
        load_state_dict(model, weights)
    return model


def load_state_dict(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict safely (``weights_only=True``), with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Backbone weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for non-state-dict pickles
        raise ValueError(f"Could not load {path} as a weights-only state dict: {err}") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"Weights in {path} do not fit the backbone: {err}") from err
