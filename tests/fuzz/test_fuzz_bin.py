"""Fuzzing the verification ``.bin`` reader: mutated bytes and hostile pickle structures.

Property (see ``fuzz_cases``): every case loads correctly or raises VerificationBinError with a
message; never another exception, a hang, or Python memory above 16x the file plus 1 MiB and
the decoded images.
"""

from __future__ import annotations

import pickle
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fuzz_cases import DEFAULT_CASES, SLOW_CASES, check_reader, mutations, preload_image_plugins, write

from facexai.data.recordio import encode_image
from facexai.data.verification_bin import VerificationBinError, load_verification_bin

SIDE = 16
#: decoded images of the valid set (6 x 16 x 16 x 3) with room for cv2/numpy temporaries
DECODED = 6 * SIDE * SIDE * 3 * 4


def _valid_images(rng: np.random.Generator, count: int = 6) -> list[bytes]:
    return [encode_image(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)) for _ in range(count)]


def _valid_bin() -> bytes:
    return pickle.dumps((_valid_images(np.random.default_rng(0)), [True, False, True]), protocol=4)


def _bound(size: int) -> int:
    return 16 * size + (1 << 20) + DECODED


def _memo_bomb(rng: random.Random, image: bytes) -> bytes:
    """One image memoised once and referenced many times: the issue's 1 MB -> 301 MB file."""
    refs = rng.choice([2, 8, 300, 5000])
    kind = rng.choice([b"B" + struct.pack("<I", len(image)), b"\x96" + struct.pack("<Q", len(image))])
    images = b"](" + kind + image + b"\x94" + b"h\x00" * (refs - 1) + b"e"
    flags = b"](" + b"\x88" * (refs // 2) + b"e"
    return b"\x80\x04" + images + flags + b"\x86."


def _wrong_type(rng: random.Random, depth: int = 0) -> object:
    """A random value of a type a .bin may not hold where it is put (or may, by chance)."""
    choices = [
        lambda: rng.randint(-(2**70), 2**70),
        lambda: rng.choice([0, 1, 2, -1]),
        lambda: rng.choice(["1", "True", "", "x" * 1000]),
        lambda: rng.random(),
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.randbytes(rng.randint(0, 64)),
        lambda: bytearray(rng.randbytes(8)),
        lambda: {"k": 1},
        lambda: {1, 2},
        lambda: [_wrong_type(rng, depth + 1) for _ in range(rng.randint(0, 3))] if depth < 4 else [],
        lambda: tuple(_wrong_type(rng, depth + 1) for _ in range(rng.randint(0, 3))) if depth < 4 else (),
    ]
    return rng.choice(choices)()


def _structure(rng: random.Random, images: list[bytes]) -> object:
    """A (images, issame)-like object with wrong types at a random place."""
    flags: list[object] = [True, False, True]
    imgs: list[object] = list(images)
    where = rng.choice(["image", "flag", "images", "flags", "top", "extra"])
    if where == "image":
        imgs[rng.randrange(len(imgs))] = _wrong_type(rng)
    elif where == "flag":
        flags[rng.randrange(len(flags))] = _wrong_type(rng)
    elif where == "images":
        return (_wrong_type(rng), flags)
    elif where == "flags":
        return (imgs, _wrong_type(rng))
    elif where == "extra":
        return (imgs, flags, _wrong_type(rng))
    return _wrong_type(rng) if where == "top" else (imgs, flags)


def _pickle_cases(cases: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """Pickle-level cases: wrong types at every level, every protocol, memo bombs."""
    rng = random.Random(seed)
    images = _valid_images(np.random.default_rng(seed), 6)
    for case in range(cases):
        label = f"pickle case {case} (seed {seed})"
        if case % 5 == 0:
            yield label + " memo bomb", _memo_bomb(rng, rng.choice(images))
        else:
            obj = _structure(rng, images)
            yield label + f" {obj!r:.80}", pickle.dumps(obj, protocol=rng.randint(0, 5))


def _run(tmp_path: Path, cases: int, seed: int) -> dict[str, int]:
    path = tmp_path / "fuzz.bin"
    outcomes = {"ok": 0, "refused": 0}
    valid = _valid_bin()
    write(path, valid)
    load_verification_bin(path)  # first-use imports happen here, not inside a measured case
    preload_image_plugins()
    every = [*mutations(valid, cases, seed), *_pickle_cases(cases // 3, seed)]
    for label, data in every:
        write(path, data)
        outcome = check_reader(
            lambda: load_verification_bin(path), VerificationBinError, label, memory_bound=_bound(len(data))
        )
        outcomes[outcome] += 1
    return outcomes


def test_fuzz_bin(tmp_path: Path) -> None:
    outcomes = _run(tmp_path, DEFAULT_CASES, seed=14)
    assert outcomes["refused"] > DEFAULT_CASES // 2  # the mutations really do break files


@pytest.mark.slow
def test_fuzz_bin_slow(tmp_path: Path) -> None:
    _run(tmp_path, SLOW_CASES, seed=1414)
