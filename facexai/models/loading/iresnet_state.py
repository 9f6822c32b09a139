"""Rebuild facexai's ``IResNet`` from an arcface_torch / insightface PyTorch state dict.

arcface_torch saves only tensors (``backbone.pth``), so the architecture has to be read back from
them: blocks per stage from the ``layerK.I.`` key indices, stage widths from the convolution
shapes, the embedding size from ``fc.weight`` and the input side from the FC's in-features
(``width4 * (side / 16) ** 2``). facexai's ``IResNet`` uses the same parameter names, so the
tensors load into it unchanged and explainers find the usual ``layer1..layer4`` modules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from facexai.models.iresnet import IResNet
from facexai.models.loading import first_line

#: keys every arcface_torch IResNet has; their absence means another architecture
CORE_KEYS = (
    "conv1.weight",
    "bn1.weight",
    "prelu.weight",
    "layer1.0.conv1.weight",
    "layer4.0.conv1.weight",
    "bn2.weight",
    "fc.weight",
    "features.running_var",
)
_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


def clean_state_dict(state: Mapping[str, object], path: Path) -> dict[str, Tensor]:
    """Tensors only, ``module.`` (DDP) prefix removed, floating tensors cast to float32.

    fp16 saves are cast up because facexai's explainers and margin heads compute in float32.
    """
    tensors: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ValueError(  # noqa: TRY004  the file's content is wrong, not an argument: ValueError as documented
                f"{path} is not a state dict: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        if key.startswith("module."):
            key = key[len("module.") :]
        tensors[key] = value.float() if value.is_floating_point() else value
    return tensors


def infer_iresnet_shape(state: Mapping[str, Tensor], path: Path) -> dict[str, object]:
    """``IResNet`` constructor arguments (layers, widths, num_classes, img_size) read from tensors."""
    missing = [key for key in CORE_KEYS if key not in state]
    if missing:
        found = ", ".join(list(state)[:3])
        raise ValueError(
            f"{path} is not an arcface_torch IResNet state dict: it lacks {', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''} (its first keys: {found})"
        )
    blocks = [0, 0, 0, 0]
    for key in state:
        match = _BLOCK_KEY.match(key)
        if match:
            stage, index = int(match.group(1)) - 1, int(match.group(2))
            blocks[stage] = max(blocks[stage], index + 1)
    widths = tuple(int(state[f"layer{k}.0.conv1.weight"].shape[0]) for k in range(1, 5))
    in_chans = int(state["conv1.weight"].shape[1])
    if in_chans != 3:
        raise ValueError(f"{path} is an IResNet for {in_chans}-channel input; face models take 3 (RGB)")
    fc_in = int(state["fc.weight"].shape[1])
    cells = fc_in / widths[3]
    cell_side = math.isqrt(int(cells)) if cells == int(cells) else 0
    if cell_side < 1 or cell_side * cell_side != cells:
        raise ValueError(
            f"{path}: fc.weight takes {fc_in} features, not a square multiple of the last width "
            f"{widths[3]}, so the input side cannot be inferred"
        )
    return {
        "layers": tuple(blocks),
        "widths": widths,
        "num_classes": int(state["fc.weight"].shape[0]),
        "img_size": cell_side * 16,
    }


def build_iresnet(state: Mapping[str, Tensor], path: Path) -> IResNet:
    """An ``IResNet`` shaped by :func:`infer_iresnet_shape` holding the file's tensors, eval mode."""
    shape = infer_iresnet_shape(state, path)
    model = IResNet(**shape)  # type: ignore[arg-type]
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path} is not an arcface_torch IResNet state dict: missing {_brief(missing)}; "
            f"unexpected {_brief(unexpected)}"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = str(err).strip().splitlines()[-1].strip()  # the last line names the tensor
        raise ValueError(f"{path}: tensors do not fit the inferred IResNet {shape}: {detail}") from err
    return model.eval()


def _brief(keys: list[str], limit: int = 3) -> str:
    if not keys:
        return "none"
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def torch_file(path: Path) -> object:
    """``torch.load(weights_only=True)`` with a one-line ValueError for unreadable files."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle and unpickler errors all mean "not a usable file"
        raise ValueError(
            f"{path} is not a readable PyTorch weights file (corrupted or truncated?): {first_line(err)}"
        ) from err
