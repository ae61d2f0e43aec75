"""What one sweep times: its kind, the dataset and the worker counts (the sweep and each kind's timer read it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.common.errors import CoreError

KINDS = ("prep", "train", "ddp")


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
        if not self.workers or any(not isinstance(n, int) or n < 1 for n in self.workers):
            raise CoreError(f"workers must be whole numbers >= 1, got {self.workers}")
        if self.repeats < 1 or self.threads_per_worker < 0 or self.steps < 1 or self.epochs < 1:
            raise CoreError("repeats, steps and epochs must be at least 1 and threads_per_worker at least 0")
        self.workers = sorted(set(self.workers))
        return self

    def threads_for(self, workers: int, cores: int) -> int:
        return self.threads_per_worker or max(1, cores // workers)
