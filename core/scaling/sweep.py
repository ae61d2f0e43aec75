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

One lifecycle for the page and the command line: :func:`submit_sweep` records the sweep as a queued run and
times its points in a job on the registry (the Scaling page polls it, its Stop button cancels it);
:func:`sweep_and_wait` is the same call waited for in this process (``python -m core sweep``, Ctrl-C cancels).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from core.common.cpu import set_torch_threads, usable_cores
from core.common.errors import CoreError
from core.common.workspace import Workspace
from core.scaling.config import KINDS, SweepConfig
from core.store.records import RunGroup
from core.store.runs import RunStore
from core.train.jobs import JobContext, JobRegistry

__all__ = ["KINDS", "SweepConfig", "run_sweep", "measured", "submit_sweep", "sweep_and_wait", "Swept"]

Progress = Callable[[int, int, str], None]  # (points done, points in all, what runs now)


@dataclass(frozen=True)
class Swept:
    """How a waited sweep ended: its run, its status (completed, cancelled) and its points' runs, in order."""

    sweep_id: int
    status: str
    runs: list[int]


def submit_sweep(registry: JobRegistry, ws: Workspace, config: SweepConfig, *,
                 on_point: Progress | None = None) -> int:  # fmt: skip
    """Queue the sweep ``config`` on ``registry``; returns the sweep's run id at once.

    The sweep is a queued run of kind ``sweep``; its job times every point in turn (reported on the job's progress,
    and to ``on_point`` from the job's thread when given), stops before the next point once cancelled, and ends the
    run completed, cancelled or failed (the registry records the error).

    Raises:
        CoreError: the settings are out of their bounds (nothing is recorded then).
    """
    config.validate()
    sweep_id = registry.store.create_run(dataset=config.dataset, kind="sweep", config=asdict(config))
    registry.submit(sweep_id, lambda ctx: _sweep_job(ctx, ws, config, on_point))
    return sweep_id


def _sweep_job(ctx: JobContext, ws: Workspace, config: SweepConfig, on_point: Progress | None) -> str:
    began = time.time()

    def progress(done: int, total: int, what: str) -> None:
        ctx.report(phase="training", step=done, total_steps=total, message=what, first_step=0, first_step_at=began)
        if on_point is not None:
            on_point(done, total, what)

    run_sweep(config, ws, ctx.store, sweep_id=ctx.run_id, progress=progress, cancel=ctx.cancel)
    return "cancelled" if ctx.cancel.is_set() else "completed"


def sweep_and_wait(ws: Workspace, store: RunStore, config: SweepConfig, *,
                   on_point: Progress | None = None) -> Swept:  # fmt: skip
    """:func:`submit_sweep`, waited for in this process. Ctrl-C cancels it as the page's Stop does: the point
    being timed finishes, no other starts, and the sweep ends cancelled with the points it has.

    Raises:
        CoreError: bad settings, or the sweep failed (its error, in words).
    """
    registry = JobRegistry(store)
    sweep_id = submit_sweep(registry, ws, config, on_point=on_point)
    try:
        job = registry.wait(sweep_id)
    except KeyboardInterrupt:
        registry.cancel(sweep_id)
        job = registry.wait(sweep_id)
    if job.status == "failed":
        raise CoreError(f"sweep {sweep_id} failed: {job.error}")
    points = [run.run_id for run in reversed(store.list_runs(group=RunGroup("sweep", sweep_id)))]  # oldest first
    return Swept(sweep_id, job.status, points)


def run_sweep(config: SweepConfig, ws: Workspace, store: RunStore, *, sweep_id: int | None = None,
              progress: Progress | None = None, cancel: threading.Event | None = None) -> list[int]:  # fmt: skip
    """Time every point of ``config`` (in this thread); returns the point runs' ids.

    ``sweep_id`` is the sweep's own run (created here when None); its group names the points.
    """
    config.validate()
    if sweep_id is None:
        sweep_id = store.create_run(dataset=config.dataset, kind="sweep", config=asdict(config), status="running")
    group = str(RunGroup("sweep", sweep_id))
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
