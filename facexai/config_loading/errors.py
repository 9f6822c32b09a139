"""The two refusals of the loader, and the one-line form their messages take."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config file that cannot be used: bad YAML, wrong structure, or a class it may not load."""


class CheckpointError(ValueError):
    """A file that is not a readable facexai/Lightning checkpoint, or whose weights do not fit."""


def one_line(text: str) -> str:
    r"""``text`` with every run of whitespace (newlines included) made one space, for one-line errors.

    Example:
        >>> one_line("while parsing\n  a block mapping")
        'while parsing a block mapping'
    """
    return " ".join(text.split())
