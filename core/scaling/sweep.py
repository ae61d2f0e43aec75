"""Sweeps: the same work timed with 1..N workers, every point an ordinary stored run.

A sweep is itself a run (kind ``sweep``) whose points are runs of kind ``prep`` or ``train`` in the same
group (``sweep-<id>``), each with its settings in its params (task or what, mode, workers, threads per
worker, images, cores) and its timed section in the metric ``time_s``. Repeats are interleaved (1, 2, 4, 1,
2, 4, ...), so a busy moment of the machine spreads over every worker count instead of spoiling one.

* ``prep``: split and copy a dataset into train/val/test folders, or fingerprint it (``core.scaling.prep``),
  with 1..N processes or threads.
* ``train``: training throughput with 1..N intra-op threads, a fixed number of steps (not whole runs).
* ``ddp``: training with 1..N ``torch.distributed`` ranks (``core.scaling.ddp_sweep``).

By default a point never runs more threads than the machine has cores: threads per worker = cores / workers.
More only when asked (``threads_per_worker``), and such points are marked oversubscribed in the tables.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from core.common.cpu import set_torch_threads, usable_cores
from core.common.workspace import Workspace
from core.scaling.config import KINDS, SweepConfig
from core.store.runs import RunStore

__all__ = ["KINDS", "SweepConfig", "run_sweep", "measured"]

Progress = Callable[[int, int, str], None]  # (points done, points in all, what runs now)


def run_sweep(config: SweepConfig, ws: Workspace, store: RunStore, *, sweep_id: int | None = None,
              progress: Progress | None = None, cancel: threading.Event | None = None) -> list[int]:  # fmt: skip
    """Time every point of ``config`` (in this thread); returns the point runs' ids.

    ``sweep_id`` is the sweep's own run (created here when None); its group names the points.
    """
    config.validate()
    if sweep_id is None:
        sweep_id = store.create_run(dataset=config.dataset, kind="sweep", config=asdict(config), status="running")
    group = f"sweep-{sweep_id}"
    timer = _timer(config, ws)
    plan = [n for _ in range(config.repeats) for n in config.workers]
    done: list[int] = []
    for i, workers in enumerate(plan):
        if cancel is not None and cancel.is_set():
            break
        if progress is not None:
            progress(i, len(plan), f"{workers} worker{'s' * (workers != 1)}, repeat {i // len(config.workers) + 1}")
        done.append(timer(config, workers, group, sweep_id, store))
    return done


def _timer(config: SweepConfig, ws: Workspace) -> Callable[..., int]:
    if config.kind == "prep":
        return _PrepTimer(ws, config)
    if config.kind == "train":
        return _ThreadTimer(ws, config)
    from core.scaling.ddp_sweep import DdpTimer

    return DdpTimer(ws, config)


@contextlib.contextmanager
def measured(store: RunStore, *, kind: str, dataset: str, group: str, parent: int,
             settings: dict) -> Iterator[dict]:  # fmt: skip
    """One point as a stored run that is running while the work is timed: its start and end bracket the work,
    so the tables can tell which other runs ran at the same time. The body sets ``point["time_s"]`` and
    ``point["images"]``; the run then completes with them (or fails with the error)."""
    run_id = store.create_run(dataset=dataset, kind=kind, group=group, parent_id=parent, status="running",
                              threads=settings["threads_per_worker"], processes=settings["workers"],
                              name=f"{kind}-{settings['workers']}x{settings['threads_per_worker']}")  # fmt: skip
    point: dict = {"run_id": run_id}
    try:
        yield point
    except BaseException as exc:
        store.finish_run(run_id, "failed", error=str(exc) or type(exc).__name__)
        raise
    time_s, images = float(point["time_s"]), int(point["images"])
    store.log_params(run_id, {"cores": usable_cores(), **settings, "images": images})
    store.log_metrics(run_id, [("time_s", 0, time_s), ("images_per_s", 0, images / time_s if time_s else 0.0)])
    store.finish_run(run_id, "completed")


class _PrepTimer:
    """Times the preparation task once per call, on a fresh output folder (removed afterwards)."""

    def __init__(self, ws: Workspace, config: SweepConfig) -> None:
        from core.datasets.scan import scan_dataset
        from core.datasets.sources import resolve_dataset

        self.scan = scan_dataset(resolve_dataset(config.dataset, ws), ws.cache)
        self.tmp = ws.cache / "sweeps"

    def __call__(self, config: SweepConfig, workers: int, group: str, parent: int, store: RunStore) -> int:
        from core.scaling.prep import run_task

        self.tmp.mkdir(parents=True, exist_ok=True)
        dest = Path(tempfile.mkdtemp(prefix="prep-", dir=self.tmp))
        settings = {"mode": config.mode, "task": config.task, "workers": workers, "threads_per_worker": 1}
        try:
            with measured(store, kind="prep", dataset=config.dataset, group=group, parent=parent,
                          settings=settings) as point:  # fmt: skip
                began = time.perf_counter()
                point["images"] = run_task(config.task, self.scan, dest, workers=workers, mode=config.mode)
                point["time_s"] = time.perf_counter() - began
        finally:
            shutil.rmtree(dest, ignore_errors=True)
        return point["run_id"]


class _ThreadTimer:
    """Times ``steps`` training steps with N intra-op threads (the data is prepared once, outside the timing)."""

    def __init__(self, ws: Workspace, config: SweepConfig) -> None:
        from core.train.config import TrainConfig
        from core.train.prepare import prepare

        self.data = prepare(TrainConfig(dataset=config.dataset, arch=config.arch).validate(), ws)

    def __call__(self, config: SweepConfig, workers: int, group: str, parent: int, store: RunStore) -> int:
        from core.scaling.steps import time_steps

        set_torch_threads(workers)  # the worker count is the thread count here: one process
        settings = {"mode": "threads", "task": "training steps", "workers": workers, "threads_per_worker": 1}
        with measured(store, kind="train", dataset=config.dataset, group=group, parent=parent,
                      settings=settings) as point:  # fmt: skip
            point["time_s"], point["images"] = time_steps(self.data, config.steps)
        return point["run_id"]
