"""Fixtures the training tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module of tiny runs (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): on
    a busy 2-core machine a 2-thread OpenMP team waits on every layer's barrier for a descheduled thread (a 2-thread
    MobileNetV2 fell from 261 to 26 img/s beside a process using 40% of the CPU); tests need no speed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
