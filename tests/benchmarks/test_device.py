"""The benchmarks' device handling, checked without a GPU: clear refusals, and the CUDA code path
(synchronisation, events, peak-memory counters) selected by the device type."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import harness  # noqa: E402
import run  # noqa: E402


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.usefixtures("no_cuda")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match=r"CUDA is not available here.*--device cpu"):
        harness.check_device("cuda")
    with pytest.raises(SystemExit, match="CUDA is not available"):
        run.build_config(run.parse_args(["--quick", "--device", "cuda"]))


def test_bad_device_names_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match="not a device name"):
        harness.check_device("gpu")
    with pytest.raises(SystemExit, match="run on cpu or cuda"):
        harness.check_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit, match=r"only 1 CUDA device\(s\)"):
        harness.check_device("cuda:1")
    assert harness.check_device("cuda:0") == torch.device("cuda:0")
    assert harness.check_device("cpu") == torch.device("cpu")


class FakeCuda:
    """Records the torch.cuda calls the harness makes; events 'take' 250 ms."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.allocated = 1000

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cuda = torch.cuda
        names = ("synchronize", "reset_peak_memory_stats", "memory_allocated", "max_memory_allocated")
        for name in names:
            monkeypatch.setattr(cuda, name, getattr(self, name))
        monkeypatch.setattr(cuda, "Event", self.event)
        monkeypatch.setattr(cuda, "device", self.device)

    def synchronize(self, device: Any = None) -> None:
        self.calls.append("synchronize")

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        self.calls.append("reset_peak")

    def memory_allocated(self, device: Any = None) -> int:
        return self.allocated

    def max_memory_allocated(self, device: Any = None) -> int:
        self.calls.append("max_allocated")
        return self.allocated + 5 * 2**20

    def device(self, device: Any) -> Any:
        fake = self

        class Guard:
            def __enter__(self) -> None:
                fake.calls.append(f"device {device}")

            def __exit__(self, *exc: object) -> None:
                return None

        return Guard()

    def event(self, enable_timing: bool = False) -> Any:
        fake = self

        class Event:
            def record(self) -> None:
                fake.calls.append("record")

            def synchronize(self) -> None:
                fake.calls.append("event synchronize")

            def elapsed_time(self, end: Any) -> float:
                return 250.0

        assert enable_timing
        return Event()


def test_cuda_timing_synchronises_and_uses_events(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCuda()
    fake.install(monkeypatch)
    ran: list[str] = []

    def fn() -> None:
        ran.append("fn")
        fake.calls.append("fn")

    seconds = harness._timed(fn, torch.device("cuda:0"))
    assert seconds == 0.25  # the events' time, not the host's clock
    assert fake.calls == ["device cuda:0", "synchronize", "record", "fn", "record", "event synchronize"]


def test_cpu_timing_touches_no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCuda()
    fake.install(monkeypatch)
    timing = harness.measure(lambda: None, torch.device("cpu"), repeats=2)
    assert fake.calls == []
    assert len(timing.runs) == 2


def test_cuda_peak_memory_resets_and_reads_the_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCuda()
    fake.install(monkeypatch)
    probe = harness.MemoryProbe(torch.device("cuda"))
    assert "max_memory_allocated" in probe.method
    probe.start()
    assert fake.calls == ["synchronize", "reset_peak"]
    assert probe.peak() == 5 * 2**20  # above what was allocated at the start
    assert fake.calls[-2:] == ["synchronize", "max_allocated"]


def test_measure_against_alternates_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCuda()
    fake.install(monkeypatch)
    order: list[str] = []
    timing, floor = harness.measure_against(
        lambda: order.append("fn"), lambda: order.append("floor"), torch.device("cuda"), repeats=2
    )
    assert order == ["floor", "fn", "floor", "fn", "floor", "fn"]  # warm-ups, then alternated
    assert timing.runs == floor.runs == [0.25, 0.25]
    assert timing.peak_bytes == 5 * 2**20
