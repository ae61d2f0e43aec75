"""The run store: one SQLite file holding runs, their params, per-step metrics and artifact pointers.

Writers are training threads (in the Streamlit process and in CLI processes) and torchrun workers;
readers are the dashboard (polling every 1-2 s) and ``python -m core runs``. The design follows
``research/sqlite-runs.md``:

- WAL journal (readers and the single writer never block each other), ``synchronous=NORMAL``.
- One connection per thread (``threading.local``), opened lazily; a ``RunStore`` object can be shared
  by every thread of a process (e.g. in ``st.cache_resource``) and several processes can use one file.
- Every write is one ``BEGIN IMMEDIATE ... COMMIT``: the write lock is taken first, so the busy timeout
  applies and a read-then-write never fails with ``SQLITE_BUSY_SNAPSHOT``. Reads use ``fetchall()``
  outside any transaction so they never hold a snapshot that blocks WAL checkpoints.
- Each run records its owner (host, pid, pid start time, process instance id, thread name). A
  ``queued``/``running`` run whose owner is gone is reported, and persisted, as ``crashed``:

  * same host, another process: the pid is not alive, is a zombie, or was reused (its start time in
    ``/proc/<pid>/stat`` differs from the recorded one);
  * same process: the owning thread has ended (checked on the ``Thread`` object registered by
    ``start_run``, else by name in ``threading.enumerate()``);
  * another host: the heartbeat is older than ``stale_after_s`` (a queued run that never sent a
    heartbeat is left queued: nothing says its owner is gone).

Metric values: NaN is stored as NULL (SQLite turns NaN into NULL anyway; a NULL value means NaN and
nothing else, so no flag column is needed) and reads back as NaN; +-inf are kept as REAL. ``best_metric``
ignores NaN and +-inf; ``latest_metrics`` reports them as they are (a diverged loss should show).
Re-logging the same (run, key, step) replaces the value: a resumed run replays the steps after its
last checkpoint. ``t`` is stamped inside the write lock, so ``metrics(..., since_t=max_t_seen)`` is a
gap-free incremental poll.
"""

from __future__ import annotations

import json
import math
import operator
import os
import shutil
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.common.errors import RunStoreError
from core.store.hosts import host_facts, pid_start, process_alive

if TYPE_CHECKING:  # pandas is imported inside metrics() so that importing this module stays fast
    import pandas as pd

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "INSTANCE_ID",
    "SCHEMA_VERSION",
    "STATUSES",
    "RunRecord",
    "RunStore",
    "host_facts",
    "process_alive",
]

STATUSES: tuple[str, ...] = ("queued", "running", "completed", "cancelled", "failed", "crashed")
ACTIVE_STATUSES: tuple[str, ...] = ("queued", "running")
# The statuses a run's own code may end it with; ``crashed`` is only ever concluded by an observer.
FINAL_STATUSES: tuple[str, ...] = ("completed", "cancelled", "failed")

BUSY_TIMEOUT_S = 10.0

# One uuid per Python process. A forked child gets a new one (it is a different process even though
# it inherits this module), so a run it owns is never judged by its parent's threads.
INSTANCE_ID: str = uuid.uuid4().hex

# Migration i brings a database from user_version i to i + 1. Never edit a released entry: append one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs(
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT 'train',
            run_group TEXT,
            status TEXT NOT NULL
                CHECK (status IN ('queued','running','completed','cancelled','failed','crashed')),
            dataset TEXT NOT NULL,
            arch TEXT,
            config TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            started_at REAL,
            ended_at REAL,
            heartbeat_at REAL,
            host TEXT,
            pid INTEGER,
            pid_start INTEGER,
            instance TEXT,
            thread TEXT,
            cpu_model TEXT,
            cpu_count INTEGER,
            threads INTEGER,
            processes INTEGER,
            device TEXT,
            error TEXT,
            parent_id INTEGER REFERENCES runs(id) ON DELETE SET NULL)""",
        "CREATE INDEX runs_status ON runs(status)",
        "CREATE INDEX runs_group ON runs(run_group)",
        "CREATE INDEX runs_parent ON runs(parent_id)",
        """CREATE TABLE params(
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (run_id, key)) WITHOUT ROWID""",
        """CREATE TABLE metrics(
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            step INTEGER NOT NULL,
            value REAL,
            t REAL NOT NULL)""",
        "CREATE UNIQUE INDEX metrics_run_key_step ON metrics(run_id, key, step)",
        "CREATE INDEX metrics_run_t ON metrics(run_id, t)",
        """CREATE TABLE artifacts(
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            sha256 TEXT,
            created_at REAL NOT NULL,
            UNIQUE (run_id, path))""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_RUN_COLUMNS = (
    "id, name, kind, run_group, status, dataset, arch, config, created_at, started_at, ended_at, "
    "heartbeat_at, host, pid, pid_start, instance, thread, cpu_model, cpu_count, threads, processes, "
    "device, error, parent_id"
)
_OWNER_COLUMNS = ("host", "pid", "pid_start", "instance", "thread", "cpu_model", "cpu_count")
_FLOAT_MAX = 1.7976931348623157e308  # finite bounds: best_metric skips +-inf

# (store file, run id) -> the Thread that called start_run in this process. The Thread object, not
# its name, is the proof of life: names repeat, objects do not.
_OWNER_THREADS: dict[tuple[str, int], threading.Thread] = {}
_OWNER_LOCK = threading.Lock()
# Connections inherited through fork(): SQLite must not use (nor close) them in the child.
_FORKED_CONNECTIONS: list[sqlite3.Connection] = []


def _after_fork_in_child() -> None:
    global INSTANCE_ID
    INSTANCE_ID = uuid.uuid4().hex
    _OWNER_THREADS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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


# ---------------------------------------------------------------------------------------------------
# Small pure helpers


def _check_status(status: str, allowed: Sequence[str] = STATUSES) -> str:
    if status not in allowed:
        raise RunStoreError(f"bad run status {status!r}: expected one of {', '.join(allowed)}")
    return status


def _metric_row(run_id: int, row: tuple[str, int, float]) -> tuple[int, str, int, float | None]:
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


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        run_id=row["id"],
        name=row["name"],
        kind=row["kind"],
        group=row["run_group"],
        status=row["status"],
        dataset=row["dataset"],
        arch=row["arch"],
        config=json.loads(row["config"] or "{}"),
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        heartbeat_at=row["heartbeat_at"],
        host=row["host"],
        pid=row["pid"],
        threads=row["threads"],
        processes=row["processes"],
        device=row["device"],
        error=row["error"],
        parent_id=row["parent_id"],
        cpu_model=row["cpu_model"],
        cpu_count=row["cpu_count"],
        thread=row["thread"],
    )


def _crashed(row: sqlite3.Row, reason: str, now: float) -> RunRecord:
    # ended_at = the last sign of life, so wall_s stops growing once the owner is gone.
    return replace(_record(row), status="crashed", error=reason, ended_at=row["heartbeat_at"] or now)


def _find_thread(name: str | None) -> threading.Thread | None:
    """The live thread of this process called ``name``, if any."""
    return next((t for t in threading.enumerate() if t.name == name), None)


def _owner(pid: int | None = None, thread: str | None = None) -> dict[str, Any]:
    """Owner columns for ``pid`` (default: this process) and thread name ``thread``."""
    facts = host_facts()
    pid = os.getpid() if pid is None else pid
    return {
        "host": facts["hostname"],
        "pid": pid,
        "pid_start": pid_start(pid),
        # Only this process can vouch for its threads; for another pid the process is the owner.
        "instance": INSTANCE_ID if pid == os.getpid() else None,
        "thread": thread if pid == os.getpid() else None,
        "cpu_model": facts["cpu_model"],
        "cpu_count": facts["cpu_count"],
    }


# ---------------------------------------------------------------------------------------------------
# The store


class RunStore:
    """Thread-safe, multi-process access to one run-store file.

    Example:
        >>> store = RunStore(tmp / "runs.sqlite")
        >>> run = store.create_run(dataset="sample:shapes", arch="resnet18")
        >>> store.start_run(run)
        >>> store.log_metrics(run, [("train_loss", 1, 0.9), ("val_acc", 1, 0.5)])
        >>> store.finish_run(run, "completed")
    """

    def __init__(self, db_path: str | os.PathLike, *, stale_after_s: float = 60.0) -> None:
        """Open (and on first use create) the store.

        Args:
            db_path: the SQLite file; its parent folder is created. Must be on a local disk (WAL
                needs shared memory between the processes using it, so no NFS/SMB).
            stale_after_s: a run owned by another host with no heartbeat for this long is crashed.

        Raises:
            RunStoreError: the file is not a run store, or was written by a newer schema version.
        """
        self.path = Path(db_path)
        self.stale_after_s = stale_after_s
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._key = str(self.path.resolve())
        try:
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise RunStoreError(f"cannot open run store {self.path}: {exc}") from None

    # -- connections ---------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and again in a forked child)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        if conn is not None:  # inherited through fork: keep it referenced, never touch it
            _FORKED_CONNECTIONS.append(conn)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA synchronous=NORMAL")  # in WAL never corrupts; no fsync per commit
        conn.execute("PRAGMA foreign_keys=ON")  # off by default; needed for ON DELETE CASCADE
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        """Close the calling thread's connection (other threads keep theirs)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE ... COMMIT`` transaction; rolled back on any exception."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
                raise self._disk_full_error() from exc
            raise

    def _disk_full_error(self) -> RunStoreError:
        try:
            free = _human_bytes(shutil.disk_usage(self.path.parent).free)
        except OSError:
            free = "unknown space"
        return RunStoreError(f"disk full while writing the run store {self.path} ({free} free)")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        # fetchall() so no cursor keeps a read snapshot open (that would stall WAL checkpoints).
        return self._conn().execute(sql, args).fetchall()

    def _init_schema(self) -> None:
        conn = self._conn()
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode=WAL").fetchall()  # persistent: set once per file
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RunStoreError(
                    f"run store {self.path} has schema version {version}; this code knows up to {SCHEMA_VERSION}"
                )
            for migration in _MIGRATIONS[version:]:
                for statement in migration:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- owner registry (this process) ---------------------------------------------------------

    def _register(self, run_id: int, thread: threading.Thread | None) -> None:
        with _OWNER_LOCK:
            if thread is None:
                _OWNER_THREADS.pop((self._key, run_id), None)
            else:
                _OWNER_THREADS[(self._key, run_id)] = thread

    def _registered(self, run_id: int) -> threading.Thread | None:
        with _OWNER_LOCK:
            return _OWNER_THREADS.get((self._key, run_id))

    # -- crash detection -----------------------------------------------------------------------

    def _crash_reason(self, row: sqlite3.Row, now: float) -> str | None:
        """Why an active run's owner is gone, or None when it may still be working."""
        if row["status"] not in ACTIVE_STATUSES:
            return None
        if row["host"] != socket.gethostname():
            return self._stale_reason(row, now)
        if row["instance"] == INSTANCE_ID and row["pid"] == os.getpid():
            return self._thread_crash_reason(row)
        if process_alive(row["pid"], row["pid_start"]):
            return None
        return f"process {row['pid']} on {row['host']} is gone"

    def _thread_crash_reason(self, row: sqlite3.Row) -> str | None:
        owner = self._registered(row["id"])
        name = row["thread"]
        if owner is not None:
            alive = owner.is_alive()
        elif name is None:
            return None  # owned by this process itself, which is evidently alive
        else:
            alive = _find_thread(name) is not None
        return None if alive else f"thread {name} ended without finishing"

    def _stale_reason(self, row: sqlite3.Row, now: float) -> str | None:
        # Another host: its pids mean nothing here, only the heartbeat age does. A queued run that
        # never sent a heartbeat has no evidence either way and stays queued.
        last = row["heartbeat_at"]
        if last is None or now - last <= self.stale_after_s:
            return None
        return f"no heartbeat for {now - last:.0f} s"

    def _effective(self, rows: list[sqlite3.Row]) -> list[RunRecord]:
        """Records with dead owners' runs turned ``crashed``, persisted in one write."""
        now = time.time()
        judged = [(row, self._crash_reason(row, now)) for row in rows]
        crashed = [(row, reason) for row, reason in judged if reason]
        changed = self._persist_crashes(crashed, now) if crashed else set()
        records = []
        for row, reason in judged:
            if row["id"] in changed:  # someone (the owner, a resume) wrote it meanwhile: reread
                fresh = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id=?", (row["id"],))
                records.extend(_record(r) for r in fresh)
            else:
                records.append(_crashed(row, reason, now) if reason else _record(row))
        return records

    def _persist_crashes(self, crashed: list[tuple[sqlite3.Row, str]], now: float) -> set[int]:
        """Mark runs crashed unless their row changed since it was judged; returns the changed ids."""
        changed = set()
        with self._write() as conn:
            for row, reason in crashed:
                cursor = conn.execute(
                    "UPDATE runs SET status='crashed', error=?, ended_at=? WHERE id=? AND status=? "
                    "AND pid IS ? AND instance IS ? AND thread IS ? AND heartbeat_at IS ?",
                    (reason, _crashed(row, reason, now).ended_at, row["id"], row["status"], row["pid"])
                    + (row["instance"], row["thread"], row["heartbeat_at"]),
                )
                if cursor.rowcount == 0:
                    changed.add(row["id"])
        for row, _ in crashed:
            if row["id"] not in changed:
                self._register(row["id"], None)
        return changed

    # -- lifecycle -----------------------------------------------------------------------------

    def _require_row(self, conn: sqlite3.Connection, run_id: int) -> sqlite3.Row:
        row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise RunStoreError(f"unknown run {run_id}")
        return row

    def create_run(
        self,
        *,
        dataset: str,
        kind: str = "train",
        name: str | None = None,
        arch: str | None = None,
        config: dict | None = None,
        group: str | None = None,
        threads: int | None = None,
        processes: int | None = None,
        device: str | None = None,
        parent_id: int | None = None,
        status: str = "queued",
    ) -> int:
        """Record a new run owned by the calling process (a ``running`` one: by the calling thread).

        Args:
            dataset: the dataset reference (path or ``sample:NAME``).
            kind: ``train``, ``scaling``, ``search``, ...
            name: display name; default ``<arch or kind>-<id>``.
            arch, config, group, threads, processes, device: what the run is; config is stored as JSON.
            parent_id: e.g. the ``search`` run a trial belongs to (set to NULL if the parent is deleted).
            status: initial status, any of ``STATUSES``.

        Returns:
            The new run id (ids are never reused, even after a delete).
        """
        _check_status(status)
        now = time.time()
        running = status == "running"
        columns = {
            "kind": kind,
            "run_group": group,
            "status": status,
            "dataset": str(dataset),
            "arch": arch,
            "config": json.dumps(config or {}, sort_keys=True, default=str),
            "created_at": now,
            "started_at": now if running else None,
            "heartbeat_at": now if running else None,
            "ended_at": None if status in ACTIVE_STATUSES else now,
            "threads": threads,
            "processes": processes,
            "device": device,
            "parent_id": parent_id,
            **_owner(thread=threading.current_thread().name if running else None),
        }
        with self._write() as conn:
            if parent_id is not None:
                self._require_row(conn, parent_id)
            cursor = conn.execute(
                f"INSERT INTO runs(name, {', '.join(columns)}) VALUES ('', {', '.join('?' * len(columns))})",
                tuple(columns.values()),
            )
            run_id = cursor.lastrowid  # the default name needs the id: set it in the same transaction
            conn.execute("UPDATE runs SET name=? WHERE id=?", (name or f"{arch or kind}-{run_id}", run_id))
        if running:
            self._register(run_id, threading.current_thread())
        return run_id

    def start_run(self, run_id: int, *, thread: str | None = None, pid: int | None = None) -> None:
        """Mark a run running, owned by the caller; also resumes a crashed/cancelled/failed run.

        ``started_at`` keeps its first value (a resumed run's wall time spans the interruption);
        ``ended_at`` and ``error`` are cleared.

        Args:
            run_id: the run.
            thread: name of the owning thread of this process; default the calling thread (call
                start_run from the thread that does the work, or pass the name of a started thread).
            pid: another process that owns the run (e.g. a torchrun launcher); default this process.

        Raises:
            RunStoreError: unknown run, already running under a live owner, or completed.
        """
        own_process = pid is None or pid == os.getpid()
        current = threading.current_thread()
        thread_name = (thread or current.name) if own_process else None
        owner = _owner(pid=pid, thread=thread_name)
        now = time.time()
        with self._write() as conn:
            row = self._require_row(conn, run_id)
            self._check_startable(row, owner, now)
            assignments = ", ".join(f"{column}=?" for column in owner)
            conn.execute(
                f"UPDATE runs SET status='running', started_at=coalesce(started_at, ?), ended_at=NULL, "
                f"error=NULL, heartbeat_at=?, {assignments} WHERE id=?",
                (now, now, *owner.values(), run_id),
            )
        if own_process:  # another process's threads cannot be watched from here
            self._register(run_id, _find_thread(thread) if thread else current)

    def _check_startable(self, row: sqlite3.Row, owner: dict[str, Any], now: float) -> None:
        status = "crashed" if self._crash_reason(row, now) else row["status"]
        same_owner = all(row[column] == owner[column] for column in ("host", "pid", "instance", "thread"))
        if status == "running" and not same_owner:
            where = f"thread {row['thread']} of " if row["thread"] else ""
            raise RunStoreError(f"run {row['id']} is already running ({where}process {row['pid']} on {row['host']})")
        if status == "completed":
            raise RunStoreError(f"run {row['id']} is completed; it cannot be started again")

    def heartbeat(self, run_id: int) -> None:
        """Say that the run's owner is alive (``log_metrics`` does this too).

        Raises:
            RunStoreError: unknown run.
        """
        with self._write() as conn:
            self._touch(conn, run_id, time.time())

    def _touch(self, conn: sqlite3.Connection, run_id: int, now: float) -> None:
        if conn.execute("UPDATE runs SET heartbeat_at=? WHERE id=?", (now, run_id)).rowcount == 0:
            raise RunStoreError(f"unknown run {run_id}")

    def finish_run(self, run_id: int, status: str, *, error: str | None = None) -> None:
        """End a run as completed, cancelled or failed (call it in the training thread's ``finally``).

        A run wrongly concluded ``crashed`` (e.g. a slow remote heartbeat) may still be finished.

        Raises:
            RunStoreError: unknown run, a status outside ``FINAL_STATUSES``, or a run already ended.
        """
        _check_status(status, FINAL_STATUSES)
        with self._write() as conn:
            row = self._require_row(conn, run_id)
            if row["status"] in FINAL_STATUSES:
                raise RunStoreError(f"run {run_id} is already {row['status']}")
            conn.execute(
                "UPDATE runs SET status=?, error=?, ended_at=? WHERE id=?", (status, error, time.time(), run_id)
            )
        self._register(run_id, None)

    def set_status(self, run_id: int, status: str, *, error: str | None = None) -> None:
        """Any other transition: e.g. queued -> cancelled, crashed -> queued (re-queue).

        ``queued`` makes the calling process the owner again; a final status (or ``crashed``) sets
        ``ended_at``. ``running`` is refused: ``start_run`` must be called by the thread that runs it.

        Raises:
            RunStoreError: unknown run or bad status name.
        """
        _check_status(status)
        if status == "running":
            raise RunStoreError(f"use start_run to start run {run_id} (from the thread that runs it)")
        # Re-queued: this process owns it again, and an old heartbeat must not make it look stale.
        owner = {**_owner(), "heartbeat_at": None} if status == "queued" else {}
        ended_at = None if status == "queued" else time.time()
        assignments = "".join(f", {column}=?" for column in owner)
        with self._write() as conn:
            self._require_row(conn, run_id)
            conn.execute(
                f"UPDATE runs SET status=?, error=?, ended_at=?{assignments} WHERE id=?",
                (status, error, ended_at, *owner.values(), run_id),
            )
        self._register(run_id, None)

    def describe(self, run_id: int, *, arch: str | None = None, config: dict | None = None,
                 threads: int | None = None, device: str | None = None, name: str | None = None) -> None:  # fmt: skip
        """Fill in what is known only once the run has started (e.g. ``auto`` resolved to an architecture).

        Raises:
            RunStoreError: unknown run.
        """
        values = {"arch": arch, "threads": threads, "device": device, "name": name,
                  "config": None if config is None else json.dumps(config, sort_keys=True, default=str)}  # fmt: skip
        given = {k: v for k, v in values.items() if v is not None}
        if not given:
            return
        with self._write() as conn:
            self._require_row(conn, run_id)
            conn.execute(f"UPDATE runs SET {', '.join(f'{k}=?' for k in given)} WHERE id=?", (*given.values(), run_id))

    def delete_run(self, run_id: int) -> list[str]:
        """Delete a run with its params, metrics and artifact rows (children keep their data).

        Returns:
            The artifact paths, so the caller can delete the files.

        Raises:
            RunStoreError: unknown run.
        """
        with self._write() as conn:
            self._require_row(conn, run_id)
            paths = [r["path"] for r in conn.execute("SELECT path FROM artifacts WHERE run_id=?", (run_id,))]
            conn.execute("DELETE FROM runs WHERE id=?", (run_id,))
        self._register(run_id, None)
        return paths

    # -- params, metrics, artifacts ------------------------------------------------------------

    def log_params(self, run_id: int, params: Mapping[str, object]) -> None:
        """Insert or replace params; values are stored as JSON (non-JSON values as their ``str``)."""
        rows = [(run_id, str(k), json.dumps(v, sort_keys=True, default=str)) for k, v in params.items()]
        with self._write() as conn:
            self._require_row(conn, run_id)
            conn.executemany(
                "INSERT INTO params(run_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT(run_id, key) DO UPDATE SET value=excluded.value",
                rows,
            )

    def params(self, run_id: int) -> dict:
        """The run's params, decoded from JSON."""
        rows = self._read("SELECT key, value FROM params WHERE run_id=? ORDER BY key", (run_id,))
        return {row["key"]: json.loads(row["value"]) for row in rows}

    def log_metrics(self, run_id: int, rows: Iterable[tuple[str, int, float]]) -> None:
        """Write a batch of (key, step, value) rows and the heartbeat in one transaction.

        Buffer rows in the training loop and flush every few steps / seconds: one transaction per
        row would cost a commit each. NaN is stored as NULL (reads back as NaN), +-inf as is; a
        (key, step) logged again replaces the earlier value.

        Raises:
            RunStoreError: unknown run, a value that is not a number, a step that is not an integer.
        """
        values = [_metric_row(run_id, row) for row in rows]
        with self._write() as conn:
            now = time.time()  # stamped under the write lock: commits are ordered by t
            self._touch(conn, run_id, now)
            conn.executemany(
                "INSERT INTO metrics(run_id, key, step, value, t) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(run_id, key, step) DO UPDATE SET value=excluded.value, t=excluded.t",
                [(*value, now) for value in values],
            )

    def metrics(
        self, run_id: int | Sequence[int], keys: Sequence[str] | None = None, *, since_t: float | None = None
    ) -> pd.DataFrame:
        """Metric rows of one or several runs, for live curves and comparisons.

        Args:
            run_id: a run id or several.
            keys: only these metric keys (default all).
            since_t: only rows written after this time: pass the largest ``t`` already seen to poll
                incrementally (a replaced step comes back with its new value; keep the last per step).

        Returns:
            DataFrame with columns run_id, key, step, value (NaN for NaN), t, sorted by run_id, key, step.
        """
        import pandas as pd

        ids = [run_id] if isinstance(run_id, int) else list(run_id)
        wanted = [keys] if isinstance(keys, str) else keys
        sql = f"SELECT run_id, key, step, value, t FROM metrics WHERE run_id IN ({', '.join('?' * len(ids))})"
        args: list[Any] = list(ids)
        if wanted is not None:
            sql += f" AND key IN ({', '.join('?' * len(wanted))})"
            args += list(wanted)
        if since_t is not None:
            sql += " AND t > ?"
            args.append(since_t)
        rows = [tuple(row) for row in self._read(sql + " ORDER BY run_id, key, step", args)]
        frame = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "t"])
        return frame.astype({"run_id": "int64", "key": "str", "step": "int64", "value": "float64", "t": "float64"})

    def latest_metrics(self, run_id: int) -> dict[str, float]:
        """The value at the last step of each key (NaN included: a diverged loss should show)."""
        # SQLite returns the bare column ``value`` from the row that holds max(step).
        rows = self._read("SELECT key, value, max(step) FROM metrics WHERE run_id=? GROUP BY key", (run_id,))
        return {row["key"]: math.nan if row["value"] is None else row["value"] for row in rows}

    def best_metric(self, run_id: int, key: str, mode: str = "max") -> float | None:
        """Best finite value of ``key`` (``mode`` ``max`` or ``min``); None if there is none."""
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        rows = self._read(
            f"SELECT {mode}(value) FROM metrics WHERE run_id=? AND key=? AND value BETWEEN ? AND ?",
            (run_id, key, -_FLOAT_MAX, _FLOAT_MAX),
        )
        return rows[0][0]

    def add_artifact(self, run_id: int, kind: str, path: str | os.PathLike, *, sha256: str | None = None) -> int:
        """Point the run at a file written beforehand (write it atomically first, then call this).

        The same path added again updates its row (e.g. a ``last`` checkpoint rewritten each epoch).

        Returns:
            The artifact row id.

        Raises:
            RunStoreError: unknown run, or the file does not exist.
        """
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise RunStoreError(f"artifact file {os.fspath(path)} cannot be read: {exc.strerror}") from None
        with self._write() as conn:
            self._require_row(conn, run_id)
            conn.execute(
                "INSERT INTO artifacts(run_id, kind, path, bytes, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(run_id, path) DO UPDATE SET kind=excluded.kind, bytes=excluded.bytes, "
                "sha256=excluded.sha256, created_at=excluded.created_at",
                (run_id, kind, os.fspath(path), size, sha256, time.time()),
            )
            row = conn.execute("SELECT id FROM artifacts WHERE run_id=? AND path=?", (run_id, os.fspath(path)))
            return row.fetchone()[0]

    def artifacts(self, run_id: int) -> list[dict]:
        """The run's artifacts (id, run_id, kind, path, bytes, sha256, created_at), oldest first."""
        rows = self._read(
            "SELECT id, run_id, kind, path, bytes, sha256, created_at FROM artifacts WHERE run_id=? "
            "ORDER BY created_at, id",
            (run_id,),
        )
        return [dict(row) for row in rows]

    # -- queries -------------------------------------------------------------------------------

    def get_run(self, run_id: int) -> RunRecord:
        """The run with its effective status (a dead owner's active run is crashed, and saved so).

        Raises:
            RunStoreError: ``unknown run N``.
        """
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id=?", (run_id,))
        if not rows:
            raise RunStoreError(f"unknown run {run_id}")
        return self._effective(rows)[0]

    def list_runs(
        self, *, status: str | None = None, kind: str | None = None, group: str | None = None
    ) -> list[RunRecord]:
        """Runs newest first, filtered on the effective status, kind and group.

        Raises:
            RunStoreError: bad status name.
        """
        where, args = [], []
        if status is not None:
            # A stored queued/running run may turn out crashed: fetch those too, filter after judging.
            stored = ("crashed", *ACTIVE_STATUSES) if status == "crashed" else (_check_status(status),)
            where.append(f"status IN ({', '.join('?' * len(stored))})")
            args += stored
        for column, value in (("kind", kind), ("run_group", group)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        sql = f"SELECT {_RUN_COLUMNS} FROM runs {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id DESC"
        records = self._effective(self._read(sql, args))
        return [r for r in records if status is None or r.status == status]

    def summary(self, run: RunRecord) -> dict:
        """The JSON row of ``python -m core runs --json`` for ``run``."""
        return {
            "run_id": run.run_id,
            "name": run.name,
            "kind": run.kind,
            "group": run.group,
            "status": run.status,
            "arch": run.arch,
            "dataset": run.dataset,
            "best_val_acc": self.best_metric(run.run_id, "val_acc"),
            "wall_s": run.wall_s,
            "created_at": run.created_at,
            "started_at": run.started_at,
            "ended_at": run.ended_at,
            "threads": run.threads,
            "processes": run.processes,
            "device": run.device,
            "host": run.host,
            "parent_id": run.parent_id,
            "error": run.error,
        }
