"""TensorBoard-safe tags of the callback's explainer labels.

Explainers themselves are built and checked by :mod:`facexai.pipeline.explainers`, which the
callback shares with ``evaluate``.
"""

from __future__ import annotations

import re


def tag_label(label: str) -> str:
    """A TensorBoard-safe tag: ``gradcam++`` -> ``gradcam_pp``; ``/`` separates a set name.

    >>> tag_label("lfw/gradcam++")
    'lfw/gradcam_pp'
    """
    return "/".join(re.sub(r"[^\w.-]", "_", part.replace("++", "_pp").replace("+", "_p")) for part in label.split("/"))
