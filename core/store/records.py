"""What the run store hands out: the run statuses, ``RunRecord`` (one row of ``runs``, built from the row by the
column list of ``core.store.schema``) and ``RunGroup``, the group a run belongs to (a search's trials, a sweep's
points), parsed from and printed to its stored string here and nowhere else."""

from __future__ import annotations

import json
import math
import operator
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from core.common.errors import ChoiceError, RunStoreError, check_choice
from core.store.schema import RUN_COLUMNS

STATUSES: tuple[str, ...] = ("queued", "running", "completed", "cancelled", "failed", "crashed")
ACTIVE_STATUSES: tuple[str, ...] = ("queued", "running")
# The statuses a run's own code may end it with; ``crashed`` is only ever concluded by an observer.
FINAL_STATUSES: tuple[str, ...] = ("completed", "cancelled", "failed")
# Columns whose record field has another name; pid_start and instance stay internal (liveness only).
_FIELD_OF_COLUMN = {"id": "run_id", "run_group": "group", "pid_start": None, "instance": None}


@dataclass(frozen=True)
class RunGroup:
    """The runs one search (its trials) or one sweep (its points) made: ``RunGroup("search", 12)``.

    Stored as ``search-12`` in the ``run_group`` column, as every workspace so far holds it; ``str()`` writes that
    form and :meth:`parse` reads it back.
    """

    kind: str  # one of GROUP_KINDS
    id: int  # the run id of the search or sweep itself

    def __post_init__(self) -> None:
        if self.kind not in GROUP_KINDS or isinstance(self.id, bool) or not isinstance(self.id, int) or self.id < 1:
            raise RunStoreError(f"not a run group: {self.kind!r} {self.id!r}")

    def __str__(self) -> str:
        return f"{self.kind}-{self.id}"

    @property
    def words(self) -> str:
        """The group as a page says it: ``search 12``."""
        return f"{self.kind} {self.id}"

    @classmethod
    def parse(cls, text: str | None) -> RunGroup | None:
        """The group a stored string names; None for no group or a string this studio does not write."""
        kind, _, number = (text or "").partition("-")
        # ASCII digits only, no sign, no leading zero: exactly what __str__ writes ("sweep-²" and "search-07" are not).
        if kind not in GROUP_KINDS or not number.isascii() or not number.isdigit() or number.startswith("0"):
            return None
        return cls(kind, int(number))


GROUP_KINDS: tuple[str, ...] = ("search", "sweep", "labels")  # labels: the folds of a thorough label check


def group_words(text: str | None) -> str:
    """A stored group as a page says it: ``sweep 12`` for ``sweep-12``; any other string as it is."""
    group = RunGroup.parse(text)
    return group.words if group is not None else (text or "")


@dataclass(frozen=True)
class RunRecord:
    """One row of the ``runs`` table, with the *effective* status (see ``RunStore.get_run``).

    ``thread`` is the owning thread's name (None for a queued run: its owner is the process);
    ``cpu_model``/``cpu_count`` describe the machine that last created or started the run.
    """

    run_id: int
    name: str
    kind: str
    group: str | None
    status: str
    dataset: str
    arch: str | None
    config: dict
    created_at: float
    started_at: float | None
    ended_at: float | None
    heartbeat_at: float | None
    host: str | None
    pid: int | None
    threads: int | None
    processes: int | None
    device: str | None
    error: str | None
    parent_id: int | None
    cpu_model: str | None = None
    cpu_count: int | None = None
    thread: str | None = None

    @property
    def run_group(self) -> RunGroup | None:
        """The search or sweep the run belongs to, parsed from ``group``; None for a run of its own."""
        return RunGroup.parse(self.group)

    def in_group(self, kind: str) -> int | None:
        """The id of the ``kind`` group (search, sweep) the run belongs to; None when it belongs to none."""
        group = self.run_group
        return group.id if group is not None and group.kind == kind else None

    @property
    def wall_s(self) -> float | None:
        """Seconds from the first start to the end (or to now while active); None if never started."""
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else time.time()
        return max(0.0, end - self.started_at)


def record(row: sqlite3.Row) -> RunRecord:
    """The ``RunRecord`` of a ``runs`` row (every column of ``RUN_COLUMNS``, config decoded from JSON)."""
    values = {_FIELD_OF_COLUMN.get(c, c): row[c] for c in RUN_COLUMNS if _FIELD_OF_COLUMN.get(c, c)}
    values["config"] = json.loads(values["config"] or "{}")
    return RunRecord(**values)


def crashed_record(row: sqlite3.Row, reason: str, now: float) -> RunRecord:
    """The row's record judged crashed: ended at the last sign of life, so wall_s stops growing."""
    return replace(record(row), status="crashed", error=reason, ended_at=row["heartbeat_at"] or now)


class StatusError(RunStoreError, ChoiceError):
    """A run status that is not one of the allowed ones."""


def check_status(status: str, allowed: Sequence[str] = STATUSES) -> str:
    """``status`` when it is one of ``allowed``; a :class:`StatusError` otherwise."""
    check_choice("status", status, allowed, StatusError)
    return status


def metric_row(run_id: int, row: tuple[str, int, float]) -> tuple[int, str, int, float | None]:
    """A (key, step, value) row checked and turned into the metrics table's (run_id, key, step, value)."""
    key, step, value = row
    try:
        number = float(value)
        step_int = operator.index(step)
    except (TypeError, ValueError) as exc:
        raise RunStoreError(f"metric {key!r} at step {step!r}: {value!r} is not a number ({exc})") from None
    if not isinstance(key, str) or not key:
        raise RunStoreError(f"metric key must be a non-empty string, got {key!r}")
    # NaN is stored as NULL on purpose (SQLite would do it silently anyway); NULL means NaN.
    return run_id, key, step_int, None if math.isnan(number) else number
