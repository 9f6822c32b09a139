"""The callback's option checks and its TensorBoard tags.

Options are checked when the callback is constructed, so a bad value fails before training
rather than at the end of the first epoch. Explainers themselves are built and checked by
:mod:`facexai.pipeline.explainers`, which the callback shares with ``evaluate``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from facexai.callbacks.overlays import check_colormap
from facexai.explain import Explainer


def tag_label(label: str) -> str:
    """A TensorBoard-safe tag: ``gradcam++`` -> ``gradcam_pp``; ``/`` separates a set name.

    >>> tag_label("lfw/gradcam++")
    'lfw/gradcam_pp'
    """
    return "/".join(re.sub(r"[^\w.-]", "_", part.replace("++", "_pp").replace("+", "_p")) for part in label.split("/"))


#: explainer labels that would collide with the comparison grids' tags
RESERVED_LABELS = ("compare",)


def check_options(colormap: str, max_time_share: float | None, **counts: int) -> None:
    """Raise ``ValueError`` for option values that would only fail (or misbehave) mid-training."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    check_colormap(colormap)
    if max_time_share is not None and not max_time_share > 0:
        raise ValueError(f"max_time_share must be positive or None, got {max_time_share!r}")


def check_labels(explainers: Mapping[str, Explainer]) -> None:
    """Raise ``ValueError`` for a label whose tags would overwrite the comparison grids."""
    for label in explainers:
        if label in RESERVED_LABELS:
            raise ValueError(
                f"explainer label {label!r} is reserved for the comparison grids (xai/{label}/...); "
                "give the entry another label and name its method, e.g. {'gradcam_2': {'method': 'gradcam'}}"
            )


def set_of(label: str) -> str:
    """``"lfw/"`` of ``"lfw/gradcam"`` (labels carry the validation set when all are explained), else ``""``."""
    return label.rsplit("/", 1)[0] + "/" if "/" in label else ""


def png_name(tag: str) -> str:
    """The PNG file name of a tag under ``png_dir``: ``xai/gradcam/heatmaps`` -> ``xai_gradcam_heatmaps.png``."""
    return f"{tag.replace('/', '_')}.png"


def channel_stats(mean: float | list[float] | None, std: float | list[float] | None) -> tuple[list[float], list[float]]:
    """Per-channel mean and std lists (ROAD imputes in pixel space); None is facexai's 0.5."""

    def expand(value: float | list[float] | None) -> list[float]:
        values = [0.5] if value is None else ([float(value)] if isinstance(value, (int, float)) else list(value))
        return values * 3 if len(values) == 1 else values

    return expand(mean), expand(std)
