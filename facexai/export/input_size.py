"""Which input side an export uses: the model's own, not a guess.

A face model's embedding FC is sized for one input side (IResNet: ``widths[-1] * (S / 16) ** 2``
inputs), so exporting it at another side fails deep inside the network with a matrix-shape
error. The side is therefore read from the model, most reliable first:

1. the module's hyper-parameter ``backbone_kwargs.img_size`` (what training built; binding);
2. the backbone's ``img_size`` attribute (IResNet, ViT-style models; binding);
3. the backbone's timm ``pretrained_cfg`` / ``default_cfg`` ``input_size`` (a default only:
   timm CNNs pool globally and run at any side);
4. 112, insightface's ArcFace side.

Verification exports at a side other than 112 are allowed, with a note: insightface's
``ArcFaceONNX`` aligns faces to its 112 px template, and ``insightface.model_zoo`` only routes
square sides >= 112 that are multiples of 16 (and not 192, its landmark model) to that wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: insightface's ArcFace side, its routing rule (>= 112, multiple of 16) and the side it reserves
INSIGHTFACE_SIZE = 112
INSIGHTFACE_MULTIPLE = 16
INSIGHTFACE_RESERVED_SIZES = (192,)
#: sane export sides (same bounds as the audit accepts)
MIN_SIZE, MAX_SIZE = 16, 1024


@dataclass(frozen=True)
class DeclaredSize:
    """An input side the model states, where it was found, and whether other sides would break it."""

    size: int
    source: str
    binding: bool


def declared_input_size(model: Any) -> DeclaredSize | None:
    """The side ``model`` (a facexai module or a bare network) was built for, if it says."""
    hparams = getattr(model, "hparams", None) or {}
    kwargs = hparams.get("backbone_kwargs") if hasattr(hparams, "get") else None
    if isinstance(kwargs, dict) and (side := _side(kwargs.get("img_size"))) is not None:
        return DeclaredSize(side, "the checkpoint's backbone_kwargs.img_size", True)
    backbone = getattr(model, "backbone", model)
    if (side := _side(getattr(backbone, "img_size", None))) is not None:
        return DeclaredSize(side, "the backbone's img_size", True)
    for attribute in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(backbone, attribute, None)
        size = cfg.get("input_size") if isinstance(cfg, dict) else None
        if isinstance(size, (tuple, list)) and len(size) == 3 and (side := _side(tuple(size[1:]))) is not None:
            return DeclaredSize(side, f"the backbone's {attribute} input_size", False)
    return None


def _side(value: object) -> int | None:
    """A square side from an int or an (h, w) pair with h == w; None otherwise."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def resolve_input_size(model: Any, requested: int | None) -> int:
    """The export side: ``requested`` if it fits the model, else the model's own, else 112.

    Raises:
        ValueError: a requested side that is not an integer in 16..1024, or that contradicts a
            side the model is bound to (the message names the model's side and where it is from).
    """
    declared = declared_input_size(model)
    if requested is None:
        return declared.size if declared is not None else INSIGHTFACE_SIZE
    if isinstance(requested, bool) or not isinstance(requested, int) or not MIN_SIZE <= requested <= MAX_SIZE:
        raise ValueError(f"input_size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got {requested!r}")
    if declared is not None and declared.binding and requested != declared.size:
        raise ValueError(
            f"input_size {requested} does not fit this model: it was built for {declared.size} px "
            f"({declared.source}); omit --input_size or pass {declared.size}"
        )
    return requested


def insightface_note(input_size: int) -> str | None:
    """Why insightface will not use a plain verification export of this side (None at 112)."""
    if input_size == INSIGHTFACE_SIZE:
        return None
    routed = (
        input_size >= INSIGHTFACE_SIZE
        and input_size % INSIGHTFACE_MULTIPLE == 0
        and input_size not in INSIGHTFACE_RESERVED_SIZES
    )
    consequence = (
        "insightface.model_zoo may route it to ArcFaceONNX, but its face alignment was not made for this size"
        if routed
        else "insightface.model_zoo will not load it as ArcFaceONNX"
    )
    return (
        f"input size {input_size} px: insightface's ArcFaceONNX wrapper expects 112 px faces; "
        f"{consequence}. Use it with facexai (audit) or feed {input_size} px aligned faces yourself"
    )
