"""Fuzzing align's landmarks reader (:func:`facexai.data.align.read_landmarks`), CSV and JSON.

Property (see ``fuzz_cases``): every mutated file reads as finite float32 (5, 2) points under
relative names, or raises LandmarksFileError with a message; never another exception, a hang,
or Python memory above 64x the file plus 1 MiB.
"""

from __future__ import annotations

import json
import random
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from fuzz_cases import DEFAULT_CASES, SLOW_CASES, check_reader, mutations, write

from facexai.data.align import LandmarksFileError, read_landmarks

POINTS = [[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]]
VALID_CSV = "filename,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\n" + "".join(
    f"id{i}/face_{i}.jpg," + ",".join(str(v + i) for p in POINTS for v in p) + "\n" for i in range(4)
)
VALID_JSON = json.dumps({f"id{i}/face_{i}.png": [[x + i, y] for x, y in POINTS] for i in range(4)})
#: values a hostile JSON puts where a coordinate, a point or a name goes
WRONG_JSON = (None, True, "1", 1e308, 10**400, -0.0, [], [[1, 2]] * 6, {"x": 1}, [[[1, 2]]], "../x", "/abs", "\x00")


def _json_cases(cases: int, seed: int) -> list[tuple[str, bytes]]:
    """Valid structure with one value of a wrong type or range, or a deep nesting."""
    rng = random.Random(seed)
    out = []
    for case in range(cases):
        data = json.loads(VALID_JSON)
        name = rng.choice(list(data))
        where = rng.choice(["coord", "point", "entry", "name", "deep"])
        if where == "coord":
            data[name][rng.randrange(5)][rng.randrange(2)] = rng.choice(WRONG_JSON)
        elif where == "point":
            data[name][rng.randrange(5)] = rng.choice(WRONG_JSON)
        elif where == "entry":
            data[name] = rng.choice(WRONG_JSON)
        elif where == "name":
            data[str(rng.choice(WRONG_JSON))] = data.pop(name)
        text = json.dumps(data) if where != "deep" else "[" * 100_000 + "]" * 100_000
        out.append((f"json case {case} ({where}, seed {seed})", text.encode()))
    return out


def _read_checked(path: Path) -> None:
    for name, points in read_landmarks(path).items():
        pure = PurePosixPath(name)
        assert name
        assert not pure.is_absolute(), name
        assert ".." not in pure.parts, name
        assert points.shape == (5, 2)
        assert points.dtype == np.float32
        assert np.isfinite(points).all()


def _run(tmp_path: Path, cases: int, seed: int) -> dict[str, int]:
    outcomes = {"ok": 0, "refused": 0}
    every = [("l.csv", label, data) for label, data in mutations(VALID_CSV.encode(), cases // 2, seed)] + [
        ("l.json", label, data) for label, data in mutations(VALID_JSON.encode(), cases // 2, seed)
    ]
    every += [("l.json", label, data) for label, data in _json_cases(cases // 3, seed)]
    for name, label, data in every:
        path = tmp_path / name
        write(path, data)
        outcome = check_reader(
            partial(_read_checked, path), LandmarksFileError, f"{name} {label}", memory_bound=64 * len(data) + (1 << 20)
        )
        outcomes[outcome] += 1
    return outcomes


def test_fuzz_landmarks(tmp_path: Path) -> None:
    outcomes = _run(tmp_path, DEFAULT_CASES, seed=14)
    assert outcomes["refused"] > DEFAULT_CASES // 4


@pytest.mark.slow
def test_fuzz_landmarks_slow(tmp_path: Path) -> None:
    _run(tmp_path, SLOW_CASES, seed=1414)
