"""A torch-free reader of LFW-style pairs files, for the audit tool.

Re-exports :mod:`facexai.files`, which the training data modules share, so the audit and
training read pairs files and images identically.
"""

from __future__ import annotations

from facexai.files import Pair, load_image, read_pairs

__all__ = ["Pair", "load_image", "read_pairs"]
