"""The ``>>>`` examples in facexai's docstrings run as tests, so the documented usage stays true.

Every module whose source holds an example is imported and run through :mod:`doctest`; a module
that gains an example is picked up without editing this file.
"""

from __future__ import annotations

import doctest
import importlib
import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import facexai

PACKAGE = Path(facexai.__file__).parent


def modules_with_examples() -> list[str]:
    """Dotted names of the facexai modules whose source contains a ``>>>`` example."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py" or ">>>" not in path.read_text(encoding="utf-8"):
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_examples_are_found() -> None:
    # the package documents its entry points with examples; finding none means the scan broke
    assert "facexai.explain" in modules_with_examples()


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    report = io.StringIO()
    with redirect_stdout(report):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name}: the '>>>' in its source is not in a docstring doctest can see"
    assert result.failed == 0, report.getvalue()
