"""Background jobs: runs that work in threads of this process while the dashboard stays responsive.

One ``JobRegistry`` per process (the dashboard keeps it in ``st.cache_resource``); its threads never call
Streamlit. Each job is a run in the run store: the registry creates nothing itself, it takes a queued
run id and a ``work`` function, starts the work on a daemon thread when a core is free, and records how
it ended (completed, cancelled, failed). A thread that dies in any other way, or a server that exits,
leaves the run ``running`` with a dead owner, which the run store reports as ``crashed`` (resumable).

Threads are counted: processes x threads above the core count made training 2-3x slower (measured on a
2-core machine). So at most ``cores`` jobs run at once, the rest wait in a queue, and the budget is
``cores // running jobs`` torch threads per job: one job gets every core, two jobs on two cores get one
thread each (measured here: 154-173 img/s in total, against 120 for two jobs at two threads).
``torch.set_num_threads`` turned out to be per thread once a thread has used torch (OpenMP keeps the
value per thread; a new thread starts from the last value set anywhere; checked on torch 2.14.1), so
each job applies the budget to itself: at its start and at every ``JobContext.sync_threads()`` call,
which the training loop makes once per step. The budget changes as jobs start and end.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from core.common.cpu import set_torch_threads, usable_cores
from core.common.errors import CoreError, RunStoreError
from core.store.records import FINAL_STATUSES
from core.store.runs import RunStore

# What a job's work function returns: how the run ended (``completed`` or ``cancelled``).
Work = Callable[["JobContext"], str]


@dataclass(frozen=True)
class Progress:
    """What a job last reported, for its progress line: typed, so a reader cannot ask for a key nobody writes.

    ``epochs`` is the planned length (None until training starts; the cycles schedule may lengthen it), ``max_epochs``
    its cap when the run trains ``until_converged``. ``first_step``/``first_step_at``: where the step rate is counted
    from (a resumed run starts at its checkpoint's step, not at 0).
    """

    phase: str = "queued"  # queued | starting | preparing | training | completed | cancelled | failed
    message: str = ""
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    epochs: int | None = None
    max_epochs: int | None = None
    until_converged: bool = False
    images_per_s: float | None = None
    first_step: int = 0
    first_step_at: float | None = None
    updated_at: float = 0.0

    def updated(self, **values: Any) -> Progress:
        """This progress with ``values`` replaced (an unknown name is a TypeError); a None leaves a value as it was,
        and a new phase without a message drops the last phase's message."""
        given = {k: v for k, v in values.items() if v is not None}
        if given.get("phase", self.phase) != self.phase:
            given.setdefault("message", "")
        return replace(self, **given, updated_at=time.time())

    @property
    def fraction(self) -> float:
        """Share of the planned steps done, 0..1 (0 while the total is not known)."""
        return min(self.step / self.total_steps, 1.0) if self.total_steps else 0.0

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left, from the step rate since the first step was reported; None until known."""
        if not self.step or not self.total_steps or self.first_step_at is None or self.first_step >= self.step:
            return None
        elapsed = max((time.time() if now is None else now) - self.first_step_at, 1e-6)
        rate = (self.step - self.first_step) / elapsed
        return max(0.0, (self.total_steps - self.step) / rate)


@dataclass
class JobContext:
    """What a running job sees: its run, its cancel flag, and a place to report progress."""

    run_id: int
    store: RunStore
    cancel: threading.Event
    budget: Callable[[], int]  # the torch threads this job may use now (changes as other jobs start and end)
    _applied: int = 0
    _progress: Progress = field(default_factory=Progress)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self, **values: Any) -> None:
        """Progress for the UI: the named fields of :class:`Progress` (phase, step, total_steps, epoch, epochs, ...)
        replaced, the others kept from the last report."""
        with self._lock:
            self._progress = self._progress.updated(**values)

    def progress(self) -> Progress:
        with self._lock:
            return self._progress

    def sync_threads(self) -> int:
        """Apply the current thread budget to the calling (job) thread; cheap when it has not changed."""
        threads = self.budget()
        if threads != self._applied:
            set_torch_threads(threads)
            self._applied = threads
        return threads


@dataclass
class Job:
    """A submitted run: queued, then running on its thread, then done."""

    run_id: int
    work: Work
    context: JobContext
    submitted_at: float = field(default_factory=time.time)
    thread: threading.Thread | None = None
    status: str = "queued"  # queued | running | completed | cancelled | failed
    error: str | None = None
    detail: str | None = None  # the traceback of an unexpected error, for the log, not for the page

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES

    def progress(self) -> Progress:
        return self.context.progress()

    def eta_s(self) -> float | None:
        """Seconds left, from the step rate since the first step was reported; None until known."""
        return self.progress().eta_s()


class JobRegistry:
    """Runs jobs on background threads, at most one per core, the rest queued in submission order."""

    def __init__(self, store: RunStore, *, cores: int | None = None):
        self.store = store
        self.cores = cores or usable_cores()
        self._lock = threading.RLock()
        self._jobs: dict[int, Job] = {}
        self._queue: deque[int] = deque()
        self._threads_each = self.cores

    # -- public --------------------------------------------------------------------------------

    def submit(self, run_id: int, work: Work) -> Job:
        """Queue ``work`` for the (queued) run ``run_id``; it starts as soon as a core is free.

        Raises:
            RunStoreError: the run is already a job of this registry.
        """
        with self._lock:
            if run_id in self._jobs and not self._jobs[run_id].done:
                raise RunStoreError(f"run {run_id} is already {self._jobs[run_id].status}")
            context = JobContext(run_id, self.store, threading.Event(), lambda: self._threads_each)
            job = self._jobs[run_id] = Job(run_id, work, context)
            context.report(phase="queued")
            self._queue.append(run_id)
            self._start_waiting()
            return job

    def cancel(self, run_id: int) -> bool:
        """Ask a job to stop: a queued one is cancelled at once, a running one at its next step.

        Returns False when the run is not an unfinished job of this registry.
        """
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None or job.done:
                return False
            job.context.cancel.set()
            if job.status == "queued":
                self._queue.remove(run_id)
                job.status = "cancelled"
                self.store.set_status(run_id, "cancelled", error="cancelled before it started")
            return True

    def get(self, run_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(run_id)

    def active(self) -> list[Job]:
        """Queued and running jobs, in submission order."""
        with self._lock:
            return [job for job in self._jobs.values() if not job.done]

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def running(self) -> int:
        with self._lock:
            return sum(job.status == "running" for job in self._jobs.values())

    def wait(self, run_id: int, timeout: float | None = None) -> Job:
        """Block until the job has ended (for the command line and tests; pages poll instead)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self._jobs[run_id]
            if job.done:
                if job.thread is not None:
                    job.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {job.status} after {timeout} s")
            time.sleep(0.05)

    # -- scheduling ----------------------------------------------------------------------------

    def _start_waiting(self) -> None:
        with self._lock:
            while self._queue and self.running() < self.cores:
                job = self._jobs[self._queue.popleft()]
                job.status = "running"
                self._rebalance()
                job.thread = threading.Thread(
                    target=self._run, args=(job,), name=f"studio-run-{job.run_id}", daemon=True
                )
                job.thread.start()

    def _rebalance(self) -> None:
        """One torch thread budget for all running jobs: cores // running (at least 1)."""
        self._threads_each = max(1, self.cores // max(1, self.running()))

    def _run(self, job: Job) -> None:
        status, error = "failed", None
        try:
            self.store.start_run(job.run_id)  # this thread owns the run: if it dies, the run shows crashed
            job.context.sync_threads()
            job.context.report(phase="starting")
            status = job.work(job.context)
        except CoreError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a job must end recorded, whatever broke inside it
            error = f"{type(exc).__name__}: {exc}"
            job.detail = traceback.format_exc()
        finally:
            self._finish(job, status if error is None else "failed", error)

    def _finish(self, job: Job, status: str, error: str | None) -> None:
        try:
            self.store.finish_run(job.run_id, status, error=error)
        except RunStoreError as exc:  # e.g. deleted while running: the job still ends here
            error = error or str(exc)
        with self._lock:
            job.status, job.error = status, error
            job.context.report(phase=status)
            self._start_waiting()
            if self.running():  # the jobs still running get the cores this one gave back
                self._rebalance()
