"""What the run store hands out: the run statuses and ``RunRecord`` (one row of ``runs``), built from the row
by the column list of ``core.store.schema``."""

from __future__ import annotations

import json
import math
import operator
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from core.common.errors import RunStoreError
from core.store.schema import RUN_COLUMNS

STATUSES: tuple[str, ...] = ("queued", "running", "completed", "cancelled", "failed", "crashed")
ACTIVE_STATUSES: tuple[str, ...] = ("queued", "running")
# The statuses a run's own code may end it with; ``crashed`` is only ever concluded by an observer.
FINAL_STATUSES: tuple[str, ...] = ("completed", "cancelled", "failed")
# Columns whose record field has another name; pid_start and instance stay internal (liveness only).
_FIELD_OF_COLUMN = {"id": "run_id", "run_group": "group", "pid_start": None, "instance": None}


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


def check_status(status: str, allowed: Sequence[str] = STATUSES) -> str:
    if status not in allowed:
        raise RunStoreError(f"bad run status {status!r}: expected one of {', '.join(allowed)}")
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
