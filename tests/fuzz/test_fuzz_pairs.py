"""Fuzzing the pairs-file reader (:func:`facexai.files.read_pairs`).

Property (see ``fuzz_cases``): every mutated pairs file parses to pairs inside the image root, or
raises PairsFileError with a message (or FileNotFoundError naming the pairs file, its documented
answer to images that do not exist); never another exception, a hang, or Python memory above
64x the file plus 16 MiB (each pair holds two Path objects).

The constant is 16 MiB, not 1 MiB: under pytest, one case in about 4000 of the slow run saw a
7.7 MiB transient peak that does not depend on the case (a different case each run, none of them
above 8 KiB when replayed alone), i.e. an interpreter-wide allocation during that case.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from fuzz_cases import DEFAULT_CASES, SLOW_CASES, check_reader, mutations, write

from facexai.files import PairsFileError, read_pairs

VALID = """10\t300
# LFW-style names, both kinds, then explicit paths
alice\t1\t2
alice\t1\tbob\t3
bob 2 3
alice/alice_0001.jpg bob/bob_0002.jpg 0
bob/bob_0001.jpg bob/bob_0003.jpg 1
"""
#: tokens a hostile file puts where names and numbers go
SPECIAL_TOKENS = (
    "..",
    "/",
    "/etc/passwd",
    "../x.jpg",
    "a/../../b",
    "..\\x",
    "\x00",
    "\u00b2",
    "9" * 5000,
    "-1",
    "0",
    "1",
    "#",
    "~",
    "a" * 300,
)


def _tree(root: Path) -> None:
    for name in ("alice", "bob"):
        (root / name).mkdir(parents=True)
        for i in (1, 2, 3):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(b"jpeg")


def _token_cases(cases: int, seed: int) -> list[tuple[str, bytes]]:
    """Lines with one token replaced by an escaping path, a NUL, a non-ASCII digit, a huge number."""
    rng = random.Random(seed)
    lines = VALID.splitlines()
    out = []
    for case in range(cases):
        forged = list(lines)
        at = rng.randrange(len(forged))
        tokens = forged[at].split() or ["x"]
        tokens[rng.randrange(len(tokens))] = rng.choice(SPECIAL_TOKENS)
        forged[at] = " ".join(tokens)
        out.append((f"token case {case} (seed {seed}): {forged[at]!r:.60}", ("\n".join(forged) + "\n").encode()))
    return out


def _read_inside(pairs_file: Path, root: Path) -> None:
    try:
        pairs = read_pairs(pairs_file, root)
    except FileNotFoundError as err:
        missing = str(err)
    else:
        missing = ""
    if missing:
        assert str(pairs_file) in missing
        return
    for pair in pairs:
        for path in (pair.path_a, pair.path_b):
            assert os.path.realpath(path).startswith(os.path.realpath(root) + os.sep), path
        assert isinstance(pair.issame, bool)


def _run(tmp_path: Path, cases: int, seed: int) -> dict[str, int]:
    root = tmp_path / "root"
    _tree(root)
    path = tmp_path / "pairs.txt"
    write(path, VALID.encode())
    _read_inside(path, root)
    outcomes = {"ok": 0, "refused": 0}
    for label, data in [*mutations(VALID.encode(), cases, seed), *_token_cases(cases // 2, seed)]:
        write(path, data)
        outcome = check_reader(
            lambda: _read_inside(path, root), PairsFileError, label, memory_bound=64 * len(data) + (16 << 20)
        )
        outcomes[outcome] += 1
    return outcomes


def test_fuzz_pairs(tmp_path: Path) -> None:
    outcomes = _run(tmp_path, DEFAULT_CASES, seed=14)
    assert outcomes["refused"] > DEFAULT_CASES // 4


@pytest.mark.slow
def test_fuzz_pairs_slow(tmp_path: Path) -> None:
    _run(tmp_path, SLOW_CASES, seed=1414)
