"""What many tests share that is not a fixture: the repository root and one way to wait for something."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent  # the repository: where app.py and core/ are
T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    process: subprocess.Popen | None = None,
) -> T:
    """Call ``condition`` until it returns something truthy, and return that.

    Fails (AssertionError naming ``what``) after ``timeout`` seconds, or at once when ``process`` exits meanwhile:
    a child that died will never make the condition true.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode} first")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:g} s")
        time.sleep(interval)


def cancel_after_first_checkpoint(registry, run_id: int, last: Path) -> None:
    """Press Cancel at the first step after ``last`` (the run's ``last.pt``) appears, however fast the machine.

    Waiting for the file and then cancelling raced the training on a tiny dataset: the run sometimes finished
    every epoch in between and ended ``completed``. Call it right after submitting or resuming (the job decodes
    its images before its first step, so no step is missed). Then ``registry.wait(run_id)`` as usual.
    """
    context = registry.get(run_id).context
    report = context.report

    def report_then_cancel(**values) -> None:
        report(**values)
        if "step" in values and last.is_file():
            context.cancel.set()

    context.report = report_then_cancel
