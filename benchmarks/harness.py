"""Timing and peak-memory measurement shared by the benchmark scripts.

Timing: the median over ``repeats`` runs after ``warmup`` untimed runs. On CUDA every run is
bracketed by CUDA events recorded on the device's current stream, after a
``torch.cuda.synchronize`` (nothing queued before the run is counted) and up to the end event's
completion (every kernel the run queued is), on the device the run uses even when another one is
current; on the CPU ``time.perf_counter``.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above what was allocated before the
run. On the CPU ``tracemalloc`` does not see torch's allocations, so the peak resident set size
is used: Linux lets a process reset its high-water mark (``echo 5 > /proc/self/clear_refs``), and
``VmHWM - VmRSS(before)`` is then the run's own peak. Where that is not possible the growth of
``resource.getrusage().ru_maxrss`` is reported instead, which only shows runs that exceed every
earlier peak of the process (the method in use is recorded in the JSON).
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

CLEAR_REFS = Path("/proc/self/clear_refs")
#: device types :func:`check_device` accepts
DEVICE_TYPES = ("cpu", "cuda")
STATUS = Path("/proc/self/status")


@dataclass
class Timing:
    """Median seconds of one run, every run's seconds, and the run's peak memory in bytes."""

    seconds: float
    runs: list[float]
    peak_bytes: int


def _status_kib(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _can_reset_hwm() -> bool:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class MemoryProbe:
    """Peak memory of a code region on one device; see the module docstring for the method."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.hwm = device.type == "cpu" and _can_reset_hwm()
        self._base = 0

    @property
    def method(self) -> str:
        """What the peak numbers mean, for the report."""
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated minus allocated before"
        if self.hwm:
            return "peak RSS (VmHWM reset via /proc/self/clear_refs) minus RSS before"
        return "growth of resource.getrusage ru_maxrss (only peaks above earlier ones show)"

    def start(self) -> None:
        """Mark the beginning of the region."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif self.hwm:
            CLEAR_REFS.write_text("5")
            self._base = (_status_kib("VmRSS") or 0) * 1024
        else:
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def peak(self) -> int:
        """Bytes above the start level at the region's peak."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device) - self._base)
        if self.hwm:
            return max((_status_kib("VmHWM") or 0) * 1024 - self._base, 0)
        return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self._base, 0)


def check_device(name: str) -> torch.device:
    """The device ``--device name`` asks for, or ``SystemExit`` with what is wrong (not a traceback).

    Unknown names, CUDA on a machine without it and a CUDA index beyond the visible devices are
    refused before any model is built.
    """
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device {name!r}: not a device name; use one of {', '.join(DEVICE_TYPES)}") from None
    if device.type not in DEVICE_TYPES:
        raise SystemExit(f"--device {name!r}: the benchmarks run on {' or '.join(DEVICE_TYPES)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(
                f"--device {name}: CUDA is not available here (torch {torch.__version__}, "
                f"CUDA build {torch.version.cuda or 'none'}); run on a GPU machine or use --device cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SystemExit(f"--device {name}: only {count} CUDA device(s) are visible")
    return device


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def measure(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> Timing:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs, and its peak memory.

    The peak is taken over the last warm-up run (a separate untimed run if ``warmup`` is 0), so
    resetting counters costs no timed time and expensive methods run no extra time.
    """
    for _ in range(warmup - 1):
        fn()
    probe = MemoryProbe(device)
    probe.start()
    fn()
    peak = probe.peak()
    runs = [_timed(fn, device) for _ in range(max(repeats, 1))]
    return Timing(statistics.median(runs), runs, peak)


def measure_against(
    fn: Callable[[], object],
    floor: Callable[[], object],
    device: torch.device,
    repeats: int,
    warmup: int = 1,
) -> tuple[Timing, Timing]:
    """``fn`` and its ``floor`` timed in alternation: ``(fn's timing, the floor's timing)``.

    Interleaving cancels the machine's drift between two measurements taken minutes apart (on
    the shared 2-core machine a floor measured first and a method measured later differed by
    up to 25% in either direction; interleaved, the same pair agreed within 8%). ``fn``'s peak
    memory is taken as in :func:`measure`; the floor's is not measured (0).
    """
    for _ in range(warmup - 1):
        fn()
    floor()
    probe = MemoryProbe(device)
    probe.start()
    fn()
    peak = probe.peak()
    runs: list[float] = []
    floor_runs: list[float] = []
    for _ in range(max(repeats, 1)):
        floor_runs.append(_timed(floor, device))
        runs.append(_timed(fn, device))
    return Timing(statistics.median(runs), runs, peak), Timing(statistics.median(floor_runs), floor_runs, 0)


def memory_method(device: torch.device) -> str:
    """The description of the peak-memory method used on ``device``."""
    return MemoryProbe(device).method
