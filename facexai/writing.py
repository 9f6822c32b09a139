"""Writing output files so that a failure never destroys data.

Every facexai writer (export, pack-rec, align, audit, evaluate, the callback's ``png_dir``) goes
through :func:`atomic_path`: the new content is written to a hidden temporary file beside the
target and renamed over it only once it is complete, so a crash, an error or Ctrl-C half-way
leaves the previous file untouched. :func:`refuse_inputs` stops a command from writing over one of
its own inputs (``export --output`` equal to the checkpoint, ``align --dst`` equal to ``--src``).

Torch-free (the audit imports it).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


class OverwriteInputError(ValueError):
    """An output path names (or lies inside) one of the command's own inputs."""


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (following links), whether or not they exist yet."""
    a, b = Path(a), Path(b)
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _same_or_inside(output: Path, source: Path) -> bool:
    if same_path(output, source):
        return True
    out, src = output.resolve(), source.resolve()
    return out == src or (src.is_dir() and src in out.parents)


def refuse_inputs(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], what: str = "output") -> None:
    """Raise :class:`OverwriteInputError` if ``output`` is one of ``inputs`` or lies inside an input folder.

    Args:
        output: the file or folder about to be written.
        inputs: the files and folders the command reads (``None`` entries are skipped).
        what: how the error names the output (e.g. ``"--output"``).
    """
    output = Path(output)
    for source in inputs:
        if source is not None and _same_or_inside(output, Path(source)):
            raise OverwriteInputError(f"{what} {output} would overwrite the input {source}; choose a different path")


def temporary_sibling(target: Path) -> Path:
    """A hidden, unused path in ``target``'s folder that keeps its suffix (writers pick formats by it)."""
    return target.with_name(f".{target.stem}.partial-{os.getpid()}-{secrets.token_hex(4)}{target.suffix}")


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``target`` only if the block succeeds.

    The temporary file lives in the target's folder, so the final :func:`os.replace` is atomic on
    the same file system. On any exception (including ``KeyboardInterrupt``) the temporary file is
    removed and ``target`` keeps its previous content.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = temporary_sibling(target)
    try:
        yield partial
        if not partial.exists():
            raise FileNotFoundError(f"writer produced no file for {target}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text to ``target`` through :func:`atomic_path`."""
    with atomic_path(target) as partial:
        partial.write_text(text, encoding="utf-8")


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    """Write bytes to ``target`` through :func:`atomic_path`."""
    with atomic_path(target) as partial:
        partial.write_bytes(data)
