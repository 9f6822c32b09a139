"""One intra-op thread for the callback tests.

These tests push batches of 4 tiny images through small networks; on a shared 2-core machine
two intra-op threads made each training step ~10x slower than one (thread hand-off dominates).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
