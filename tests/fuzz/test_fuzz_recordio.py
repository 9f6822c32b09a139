"""Fuzzing the RecordIO reader: mutated ``train.rec`` bytes and ``train.idx`` text.

Property (see ``fuzz_cases``): constructing the dataset and reading every item and the class
count either works (RGB uint8 images, int labels) or raises RecordIOError with a message; never
another exception, a hang, or Python memory above 16x the files plus 1 MiB and the decoded images.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from fuzz_cases import (
    DEFAULT_CASES,
    SLOW_CASES,
    check_reader,
    mutations,
    preload_image_plugins,
    text_mutations,
    write,
)

from facexai import files
from facexai.data.recordio import RecordIODataset, RecordIOError, encode_image, write_face_records

#: decoded pixels allowed per image while fuzzing (a forged JPEG size stays within the bound)
PIXEL_LIMIT = 1 << 16
DECODED = 8 * PIXEL_LIMIT * 3 * 4


def _valid_set(root: Path) -> tuple[bytes, str]:
    """Five PNG faces and one JPEG (no CRC: its forged sizes reach the decoder) in three identities."""
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(6)]
    samples = [
        (encode_image(face, ".jpg" if i == 2 else ".png"), label)
        for i, (face, label) in enumerate(zip(faces, (0, 0, 1, 1, 2, 2), strict=True))
    ]
    write_face_records(root, samples)
    return (root / "train.rec").read_bytes(), (root / "train.idx").read_text()


#: values a forged header or index field takes: out of range, not finite, not whole, past int64
SPECIAL_FLOATS = (float("inf"), float("-inf"), float("nan"), 1e12, -1.0, 2.5, 0.0, 1.0, 3.0, 7.0, 2.0**24, 3.4e38)
SPECIAL_INTS = (0, 1, 2, 3, 7, 2**31 - 1, 2**32 - 1)
SPECIAL_INDEX = ("-1", str(2**63), str(2**64), "9" * 30, "1e3", "0x10", "", "7", "0", str(10**12))


def _header_cases(rec: bytes, idx: str, cases: int, seed: int) -> Iterator[tuple[str, bytes, bytes]]:
    """Forged IRHeader fields (flag, scalar label, label array) of random records, and forged
    index keys/offsets: the fields the issue found trusted. Yields ``(label, rec, idx)``."""
    rng = random.Random(seed)
    lines = idx.splitlines()
    offsets = [int(line.split("\t")[1]) for line in lines]
    for case in range(cases):
        label = f"header case {case} (seed {seed})"
        if case % 4 == 3:
            fields = lines[rng.randrange(len(lines))].split("\t")
            fields[rng.randrange(2)] = rng.choice(SPECIAL_INDEX)
            forged = list(lines)
            forged[rng.randrange(len(lines))] = "\t".join(fields)
            yield f"{label}: idx line {forged!r:.60}", rec, ("\n".join(forged) + "\n").encode()
            continue
        data = bytearray(rec)
        for _ in range(rng.randint(1, 3)):
            payload = rng.choice(offsets[:1] * 3 + offsets) + 8  # record 0 (the header) most often
            field = rng.choice(["flag", "scalar", "label0", "label1"])
            if field == "flag":
                struct.pack_into("<I", data, payload, rng.choice(SPECIAL_INTS))
            else:
                at = payload + {"scalar": 4, "label0": 24, "label1": 28}[field]
                if at + 4 <= len(data):
                    struct.pack_into("<f", data, at, rng.choice(SPECIAL_FLOATS))
        yield label, bytes(data), idx.encode()


def _read_all(root: Path, skip_corrupt: bool) -> None:
    dataset = RecordIODataset(root, skip_corrupt=skip_corrupt)
    for index in range(len(dataset)):
        image, label = dataset._read_or_skip(index)
        assert image.dtype == np.uint8
        assert image.ndim == 3
        assert image.shape[2] == 3
        assert isinstance(label, int)
        assert label >= 0
    assert dataset.num_classes >= 1


def _run(tmp_path: Path, cases: int, seed: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    monkeypatch.setattr(files, "MAX_IMAGE_PIXELS", PIXEL_LIMIT)
    root = tmp_path / "set"
    rec, idx = _valid_set(root)
    _read_all(root, skip_corrupt=False)  # first-use imports happen here, not inside a measured case
    preload_image_plugins()
    rng = random.Random(seed)
    outcomes = {"ok": 0, "refused": 0}
    every = [
        *((lab, data, idx.encode()) for lab, data in mutations(rec, cases - cases // 3, seed)),
        *((f"idx {lab}", rec, text.encode()) for lab, text in text_mutations(idx, cases // 3, seed)),
        *_header_cases(rec, idx, cases // 2, seed),
    ]
    for label, rec_data, idx_data in every:
        write(root / "train.rec", rec_data)
        write(root / "train.idx", idx_data)
        skip = rng.random() < 0.5
        bound = 16 * (len(rec_data) + len(idx_data)) + (1 << 20) + DECODED
        outcome = check_reader(
            partial(_read_all, root, skip), RecordIOError, f"{label} skip={skip}", memory_bound=bound
        )
        outcomes[outcome] += 1
    return outcomes


def test_fuzz_recordio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = _run(tmp_path, DEFAULT_CASES, seed=14, monkeypatch=monkeypatch)
    assert outcomes["refused"] > DEFAULT_CASES // 4


@pytest.mark.slow
def test_fuzz_recordio_slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(tmp_path, SLOW_CASES, seed=1414, monkeypatch=monkeypatch)
