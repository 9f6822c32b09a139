"""Command-line options shared by the commands that take a pretrained face model (``--model``).

``explain`` and ``evaluate --model`` both hand a user's file to
:func:`facexai.models.load_face_model`; the layout flags are defined once here so that both
commands spell and check them the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torch import nn

CHANNEL_ORDERS = ("RGB", "BGR")


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--model`` and the layout flags of :func:`facexai.models.load_face_model`."""
    parser.add_argument(
        "--model",
        required=required,
        help="face model file: arcface_torch state dict (.pth), facexai checkpoint (.ckpt) or ONNX (.onnx)",
    )
    group = parser.add_argument_group("model layout (only for files that do not say it themselves)")
    group.add_argument("--input-size", type=int, default=None, help="side of the square input faces (e.g. 112)")
    group.add_argument(
        "--mean",
        type=float,
        nargs="+",
        default=None,
        help="pixel mean(s) the network expects, 0..255 units, one value or three in its channel order "
        "(default: from the file, else 127.5)",
    )
    group.add_argument(
        "--std",
        type=float,
        nargs="+",
        default=None,
        help="pixel std(s), same conventions (default: from the file, else 127.5)",
    )
    group.add_argument(
        "--channel-order",
        type=str.upper,
        choices=CHANNEL_ORDERS,
        default=None,
        help="channel order the network expects (default: from the file, else RGB)",
    )


def _scalar_or_triple(values: list[float] | None, flag: str) -> float | tuple[float, float, float] | None:
    if values is None:
        return None
    if len(values) not in (1, 3):
        raise ValueError(f"{flag} takes one value or three (one per channel), got {len(values)}: {values}")
    return values[0] if len(values) == 1 else (values[0], values[1], values[2])


def layout_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``load_face_model`` that the user set (unset ones stay defaults)."""
    if args.input_size is not None and args.input_size < 1:
        raise ValueError(f"--input-size must be positive, got {args.input_size}")
    kwargs = {
        "input_size": args.input_size,
        "mean": _scalar_or_triple(args.mean, "--mean"),
        "std": _scalar_or_triple(args.std, "--std"),
        "channel_order": args.channel_order,
    }
    return {key: value for key, value in kwargs.items() if value is not None}


def load_model_from_args(args: argparse.Namespace) -> nn.Module:
    """The face model of ``--model`` with the layout flags; missing files fail before any import cost."""
    path = Path(args.model)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {path}")
    from facexai.models import load_face_model

    return load_face_model(path, **layout_kwargs(args))


def model_input_size(model: nn.Module) -> int:
    """The square input side the loaded model expects (``face_model_info.input_size``).

    ``load_face_model`` always records it as a positive int, or fails at load asking for ``input_size``.
    """
    from facexai.models.loading.layout import face_model_info

    return face_model_info(model).input_size
