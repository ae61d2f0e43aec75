"""What one sweep times: its kind, the dataset and the worker counts (the sweep and each kind's timer read it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.common.errors import CoreError
from core.train.config import MAX_EPOCHS, MAX_RANKS, MAX_THREADS, Bound

KINDS = ("prep", "train", "ddp")
MAX_WORKER_COUNTS = 16  # distinct worker counts in one sweep: 1..16 already covers every core count that matters
# The numbers of a sweep, read by its validation, the command line and the Scaling page. Each point is a run: a
# sweep is (worker counts x repeats) runs, so both are bounded, and so is the work of each point.
SWEEP_BOUNDS: dict[str, Bound] = {
    "workers": Bound(1, MAX_RANKS),  # processes, threads or ranks: the training bound on processes
    "repeats": Bound(1, 20),  # the tables show the median; past 20 repeats it no longer moves
    "threads_per_worker": Bound(0, MAX_THREADS),  # 0 = cores / workers
    "steps": Bound(1, 10_000),  # train: timed steps per point (30 by default; 10,000 is hours on a CPU)
    "epochs": Bound(1, MAX_EPOCHS),  # ddp: epochs per point
}


@dataclass
class SweepConfig:
    """One sweep: what to time and with which worker counts."""

    kind: str  # prep | train | ddp
    dataset: str
    workers: list[int] = field(default_factory=lambda: [1, 2])
    repeats: int = 3  # points per worker count; the tables report the median
    threads_per_worker: int = 0  # 0: cores // workers, never oversubscribed
    mode: str = "processes"  # prep: processes or threads
    task: str = "copy"  # prep: copy (split into folders) or fingerprint
    steps: int = 30  # train: timed training steps per point (after 3 untimed ones)
    epochs: int = 1  # ddp: epochs per point
    arch: str = "auto"  # train and ddp: the network

    def validate(self) -> SweepConfig:
        if self.kind not in KINDS:
            raise CoreError(f"unknown sweep {self.kind!r}; choose one of: {', '.join(KINDS)}")
        if not self.workers or len(set(self.workers)) > MAX_WORKER_COUNTS:
            raise CoreError(f"workers: give 1 to {MAX_WORKER_COUNTS} worker counts, got {len(set(self.workers))}")
        for n in self.workers:
            _check("workers", n)
        for name in ("repeats", "threads_per_worker", "steps", "epochs"):
            _check(name, getattr(self, name))
        self.workers = sorted(set(self.workers))
        return self

    def threads_for(self, workers: int, cores: int) -> int:
        return self.threads_per_worker or max(1, cores // workers)


def _check(name: str, value: object) -> None:
    bound = SWEEP_BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not bound.low <= value <= bound.high:
        raise CoreError(f"{name} {value!r}: expected a whole number from {bound.low:g} to {bound.high:g}")
