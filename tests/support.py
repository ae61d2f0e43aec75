"""What many tests share that is not a fixture: the repository root, one way to wait for something, one way to
train a run to its end, and a copy of a trained workspace for a test that changes it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from core.common.workspace import Workspace

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


@dataclass(frozen=True)
class TrainedRun:
    """A completed run and the workspace that holds it (see the session fixtures in ``tests/conftest.py``)."""

    ws: Workspace
    run_id: int
    dataset: Path  # the data it was trained on

    def result(self) -> dict:
        """The run's ``train --json`` object (status, epochs, test metrics)."""
        from core.store.runs import RunStore
        from core.train.runner import result_json

        return result_json(RunStore(self.ws.runs_db), self.run_id, self.ws)


def train_to_the_end(ws: Workspace, **config: object) -> TrainedRun:
    """Train ``TrainConfig(**config)`` in ``ws`` through the job registry (as the page and the CLI do) to its end."""
    from core.store.runs import RunStore
    from core.train import runner
    from core.train.config import TrainConfig
    from core.train.jobs import JobRegistry

    registry = JobRegistry(RunStore(ws.runs_db))
    run_id = runner.submit_training(registry, ws, TrainConfig(**config))
    job = registry.wait(run_id, timeout=900)
    assert job.status == "completed", job.error
    return TrainedRun(ws, run_id, Path(str(config["dataset"])))


def copy_workspace(trained: TrainedRun, dest: Path) -> TrainedRun:
    """The same run in a copy of its workspace at ``dest``, for a test that adds to or changes it. Its data roots
    stay the original's: the run's dataset is read where it was trained."""
    shutil.copytree(trained.ws.root, dest, symlinks=True)
    ws = Workspace.open(dest).with_roots(trained.ws.root, *trained.ws.extra_roots)
    return TrainedRun(ws, trained.run_id, trained.dataset)
