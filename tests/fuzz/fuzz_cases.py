"""Seeded mutations of valid files and the property every reader of outside data must keep.

A reader fed a mutated file must either read it correctly or raise its own error (a ValueError
subclass) with a message: never another exception type, a hang, or memory growth beyond a bound.
Each fuzz module builds a valid file, mutates it with :func:`mutations` and checks every case with
:func:`check_reader`. The default suite runs a few hundred cases per reader; ``-m slow`` many more.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: cases per reader in the default suite and under ``-m slow``
DEFAULT_CASES = 300
SLOW_CASES = 3000
#: growth of the process's peak resident memory allowed on top of ``memory_bound``: first use of
#: a codec or plugin maps libraries and caches (tracemalloc misses C/C++ allocations, e.g. a
#: decoder sizing a buffer by a forged length, so peak RSS is checked as well)
RSS_SLACK = 64 << 20


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(0, max(1, len(data)))]


def _flip_bits(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _huge_number(data: bytes, rng: random.Random) -> bytes:
    """Overwrite 4 or 8 bytes with a huge or negative length/count/offset."""
    if len(data) < 8:
        return data + b"\xff" * 8
    value = rng.choice([2**31 - 1, 2**32 - 1, 2**40, 2**63 - 1, -1, -(2**31), 10**12])
    width = rng.choice([4, 8])
    fmt = {4: "<i" if value < 0 else "<I", 8: "<q" if value < 0 else "<Q"}[width]
    packed = struct.pack(fmt, value & ((1 << (8 * width)) - 1)) if value >= 0 else struct.pack(fmt, value)
    at = rng.randrange(0, len(data) - width + 1)
    return data[:at] + packed + data[at + width :]


def _splice(data: bytes, rng: random.Random) -> bytes:
    """Duplicate or delete a random chunk (shifts every later field)."""
    if len(data) < 2:
        return data * 2
    a = rng.randrange(len(data))
    b = rng.randrange(a, min(len(data), a + 64) + 1)
    return data[:a] + data[a:b] * rng.randint(0, 3) + data[b:]


def _random_bytes(data: bytes, rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(0, 256))


MUTATORS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "truncate": _truncate,
    "flip_bits": _flip_bits,
    "huge_number": _huge_number,
    "splice": _splice,
    "random_bytes": _random_bytes,
}


def mutations(valid: bytes, cases: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``cases`` seeded mutations of ``valid``: ``(label, data)``; the label names case and mutator."""
    rng = random.Random(seed)
    names = sorted(MUTATORS)
    for case in range(cases):
        name = names[case % len(names)]
        yield f"case {case} ({name}, seed {seed})", MUTATORS[name](valid, rng)


def text_mutations(valid: str, cases: int, seed: int = 0) -> Iterator[tuple[str, str]]:
    """Mutations of a text file, decoded back to text (undecodable bytes replaced)."""
    for label, data in mutations(valid.encode(), cases, seed):
        yield label, data.decode("utf-8", errors="replace")


class Hang(Exception):
    """A reader ran past its time limit."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread if the block runs longer than ``seconds``."""

    def _raise(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_reader(
    read: Callable[[], Any],
    error: type[ValueError],
    label: str,
    *,
    memory_bound: int,
    seconds: float = 10.0,
) -> str:
    """Run ``read`` once and enforce the reader property; returns ``"ok"`` or ``"refused"``.

    Args:
        read: reads the mutated file (already written by the caller).
        error: the reader's own error type (a ValueError subclass); plain ValueError is allowed
            only where that is the reader's documented error.
        label: names the case in assertion messages.
        memory_bound: the most bytes Python may allocate at peak while reading (tracemalloc also
            sees numpy buffers), e.g. a small multiple of the file size plus decoded images; the
            process's peak RSS may grow by at most this plus :data:`RSS_SLACK`.
        seconds: time limit; a longer read counts as a hang.
    """
    rss_before, blank = _peak_rss(), ""
    tracemalloc.start()
    try:
        with time_limit(seconds):
            read()
        outcome = "ok"
    except error as err:
        outcome = "refused"
        blank = "" if str(err).strip() else type(err).__name__  # a refusal must say what is wrong
    except Hang as err:
        raise AssertionError(f"{label}: reader hung ({err})") from None
    except Exception as err:  # noqa: BLE001 - the property under test is "no other type"
        raise AssertionError(f"{label}: {type(err).__name__} escaped instead of {error.__name__}: {err}") from err
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert not blank, f"{label}: {blank} without a message"
    assert peak <= memory_bound, f"{label}: peak Python memory {peak} B over the bound {memory_bound} B"
    rss_growth = _peak_rss() - rss_before
    assert rss_growth <= memory_bound + RSS_SLACK, (
        f"{label}: peak resident memory grew by {rss_growth} B, over the bound {memory_bound} B + {RSS_SLACK} B"
    )
    return outcome


def _peak_rss() -> int:
    """The process's peak resident memory in bytes (Linux reports KiB); it only ever grows, so a
    case that raises it by more than the bound allocated that much itself."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write(path: os.PathLike | str, data: bytes) -> None:
    """Write a case's bytes (helper so fuzz modules read alike)."""
    with open(path, "wb") as handle:
        handle.write(data)


def preload_image_plugins() -> None:
    """Import every Pillow plugin now: Pillow imports them on the first file it cannot identify,
    and those imports (about 1 MB) would otherwise count against that case's memory bound."""
    from PIL import Image

    Image.init()
