"""The run store: one SQLite file holding runs, their params, per-step metrics and artifact pointers.

Writers are training threads (in the Streamlit process and in CLI processes) and torchrun workers;
readers are the dashboard (polling every 1-2 s) and ``python -m core runs``. The design:

- WAL journal (readers and the single writer never block each other), ``synchronous=NORMAL``; a new file
  is prepared under a lock, safe for any number of simultaneous openers (``core.store.schema``).
- One connection per thread (``threading.local``), opened lazily; a ``RunStore`` object can be shared
  by every thread of a process (e.g. in ``st.cache_resource``) and several processes can use one file.
- Every write is one ``BEGIN IMMEDIATE ... COMMIT``: the write lock is taken first, so the busy timeout
  applies and a read-then-write never fails with ``SQLITE_BUSY_SNAPSHOT``. Reads use ``fetchall()``
  outside any transaction so they never hold a snapshot that blocks WAL checkpoints.
- A run whose owner is gone is reported, and persisted, as ``crashed`` (``core.store.liveness``).
- Params, metrics and artifacts: ``core.store.metrics`` (a part of this class).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.common.diskspace import DiskFullError, disk_full_message, is_disk_full
from core.common.errors import RunStoreError
from core.common.words import SPLITS
from core.store.liveness import Liveness, find_thread, owner_columns
from core.store.metrics import RunTables
from core.store.records import ACTIVE_STATUSES, FINAL_STATUSES, RunRecord, check_status, crashed_record, record
from core.store.schema import SELECT_RUNS, connect, prepare_file

if TYPE_CHECKING:
    from core.store.records import RunGroup

# Connections inherited through fork(): SQLite must not use (nor close) them in the child.
_FORKED_CONNECTIONS: list[sqlite3.Connection] = []
# The JSON row of ``python -m core runs --json``: these record fields, plus best_val_acc, test_accuracy (None
# until the run has a test score), wall_s and splits (images per split, once the run has started).
SUMMARY_FIELDS = ("run_id", "name", "kind", "group", "status", "arch", "dataset", "created_at", "started_at",
                  "ended_at", "threads", "processes", "device", "host", "parent_id", "error")  # fmt: skip


class RunStoreFullError(RunStoreError, DiskFullError):
    """A write to the run store refused for want of space: ``disk full: N MB free in DIR``; nothing changed."""


class RunStore(RunTables):
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
        self._liveness = Liveness(str(self.path.resolve()), stale_after_s)
        self.read_only = False  # True when a full disk left only a read-only view (see _open_read_only)
        try:
            prepare_file(self._conn(), self.path)
        except sqlite3.DatabaseError as exc:
            if not (self.path.is_file() and is_disk_full(exc, self.path.parent)):
                raise RunStoreError(f"cannot open run store {self.path}: {exc}") from None
            self._open_read_only()

    def _open_read_only(self) -> None:
        """At 0 bytes free SQLite cannot even create its shared-memory file to read: read the file as it is, so
        ``runs`` and the pages still list what is stored (writes then say "disk full")."""
        self.close()
        self.read_only = True
        self._conn()

    # -- connections ---------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and again in a forked child)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        if conn is not None:  # inherited through fork: keep it referenced, never touch it
            _FORKED_CONNECTIONS.append(conn)
        conn = connect(self.path, read_only=getattr(self, "read_only", False))
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
            # SQLITE_FULL, or an I/O error (growing the -wal or -shm file) while the disk has no room left.
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or is_disk_full(exc, self.path.parent):
                raise self._disk_full_error() from exc
            raise

    def _disk_full_error(self) -> RunStoreFullError:
        return RunStoreFullError(disk_full_message(self.path.parent, "the run store was not changed"))

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        # fetchall() so no cursor keeps a read snapshot open (that would stall WAL checkpoints).
        return self._conn().execute(sql, args).fetchall()

    # -- crash detection -----------------------------------------------------------------------

    def _effective(self, rows: list[sqlite3.Row]) -> list[RunRecord]:
        """Records with dead owners' runs turned ``crashed``, persisted in one write."""
        now = time.time()
        judged = [(row, self._liveness.crash_reason(row, now)) for row in rows]
        crashed = [(row, reason) for row, reason in judged if reason]
        try:
            changed = self._persist_crashes(crashed, now) if crashed and not self.read_only else set()
        except RunStoreFullError:  # shown as crashed all the same; recorded by the next reader with room to write
            changed = set()
        records = []
        for row, reason in judged:
            if row["id"] in changed:  # someone (the owner, a resume) wrote it meanwhile: reread
                fresh = self._read(f"{SELECT_RUNS} WHERE id=?", (row["id"],))
                records.extend(record(r) for r in fresh)
            else:
                records.append(crashed_record(row, reason, now) if reason else record(row))
        return records

    def _persist_crashes(self, crashed: list[tuple[sqlite3.Row, str]], now: float) -> set[int]:
        """Mark runs crashed unless their row changed since it was judged; returns the changed ids."""
        changed = set()
        with self._write() as conn:
            for row, reason in crashed:
                cursor = conn.execute(
                    "UPDATE runs SET status='crashed', error=?, ended_at=? WHERE id=? AND status=? "
                    "AND pid IS ? AND instance IS ? AND thread IS ? AND heartbeat_at IS ?",
                    (reason, crashed_record(row, reason, now).ended_at, row["id"], row["status"], row["pid"])
                    + (row["instance"], row["thread"], row["heartbeat_at"]),
                )
                if cursor.rowcount == 0:
                    changed.add(row["id"])
        for row, _ in crashed:
            if row["id"] not in changed:
                self._liveness.register(row["id"], None)
        return changed

    # -- lifecycle -----------------------------------------------------------------------------

    def _require_row(self, conn: sqlite3.Connection, run_id: int) -> sqlite3.Row:
        row = conn.execute(f"{SELECT_RUNS} WHERE id=?", (run_id,)).fetchone()
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
        group: RunGroup | str | None = None,
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
        check_status(status)
        now = time.time()
        running = status == "running"
        columns = {
            "kind": kind,
            "run_group": None if group is None else str(group),
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
            **owner_columns(thread=threading.current_thread().name if running else None),
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
            self._liveness.register(run_id, threading.current_thread())
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
        owner = owner_columns(pid=pid, thread=thread_name)
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
            self._liveness.register(run_id, find_thread(thread) if thread else current)

    def _check_startable(self, row: sqlite3.Row, owner: dict[str, Any], now: float) -> None:
        status = "crashed" if self._liveness.crash_reason(row, now) else row["status"]
        same_owner = all(row[column] == owner[column] for column in ("host", "pid", "instance", "thread"))
        if status == "running" and not same_owner:
            raise RunStoreError(f"run {row['id']} is already running (started from another tab or command)")
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
        check_status(status, FINAL_STATUSES)
        with self._write() as conn:
            row = self._require_row(conn, run_id)
            if row["status"] in FINAL_STATUSES:
                raise RunStoreError(f"run {run_id} is already {row['status']}")
            conn.execute(
                "UPDATE runs SET status=?, error=?, ended_at=? WHERE id=?", (status, error, time.time(), run_id)
            )
        self._liveness.register(run_id, None)

    def set_status(self, run_id: int, status: str, *, error: str | None = None) -> None:
        """Any other transition: e.g. queued -> cancelled, crashed -> queued (re-queue).

        ``queued`` makes the calling process the owner again; a final status (or ``crashed``) sets
        ``ended_at``. ``running`` is refused: ``start_run`` must be called by the thread that runs it.

        Raises:
            RunStoreError: unknown run or bad status name.
        """
        check_status(status)
        if status == "running":
            raise RunStoreError(f"use start_run to start run {run_id} (from the thread that runs it)")
        # Re-queued: this process owns it again, and an old heartbeat must not make it look stale.
        owner = {**owner_columns(), "heartbeat_at": None} if status == "queued" else {}
        ended_at = None if status == "queued" else time.time()
        assignments = "".join(f", {column}=?" for column in owner)
        with self._write() as conn:
            self._require_row(conn, run_id)
            conn.execute(
                f"UPDATE runs SET status=?, error=?, ended_at=?{assignments} WHERE id=?",
                (status, error, ended_at, *owner.values(), run_id),
            )
        self._liveness.register(run_id, None)

    def describe(self, run_id: int, *, arch: str | None = None, config: dict | None = None,
                 threads: int | None = None, device: str | None = None, name: str | None = None,
                 processes: int | None = None) -> None:  # fmt: skip
        """Fill in what is known only once the run has started (e.g. ``auto`` resolved to an architecture).

        Raises:
            RunStoreError: unknown run.
        """
        values = {"arch": arch, "threads": threads, "device": device, "name": name, "processes": processes,
                  "config": None if config is None else json.dumps(config, sort_keys=True, default=str)}  # fmt: skip
        given = {k: v for k, v in values.items() if v is not None}
        if not given:
            return
        with self._write() as conn:
            self._require_row(conn, run_id)
            conn.execute(f"UPDATE runs SET {', '.join(f'{k}=?' for k in given)} WHERE id=?", (*given.values(), run_id))

    def delete_run(self, run_id: int) -> list[str]:
        """Delete a run with its params, metrics and artifact rows (children keep their data).

        The status is read in the same transaction as the delete: a run that another tab or process queued or
        started since the caller looked (a resume) is refused, never deleted under its job.

        Returns:
            The artifact paths, so the caller can delete the files.

        Raises:
            RunStoreError: unknown run, or a queued or running run whose owner is alive.
        """
        with self._write() as conn:
            row = self._require_row(conn, run_id)
            if row["status"] in ACTIVE_STATUSES and not self._liveness.crash_reason(row, time.time()):
                raise RunStoreError(f"run {run_id} is {row['status']}; cancel it, or wait for it to end, before "
                                    "deleting it")  # fmt: skip
            paths = [r["path"] for r in conn.execute("SELECT path FROM artifacts WHERE run_id=?", (run_id,))]
            conn.execute("DELETE FROM runs WHERE id=?", (run_id,))
        self._liveness.register(run_id, None)
        return paths

    # -- queries -------------------------------------------------------------------------------

    def get_run(self, run_id: int) -> RunRecord:
        """The run with its effective status (a dead owner's active run is crashed, and saved so).

        Raises:
            RunStoreError: ``unknown run N``.
        """
        rows = self._read(f"{SELECT_RUNS} WHERE id=?", (run_id,))
        if not rows:
            raise RunStoreError(f"unknown run {run_id}")
        return self._effective(rows)[0]

    def list_runs(
        self, *, status: str | None = None, kind: str | None = None, group: RunGroup | str | None = None
    ) -> list[RunRecord]:
        """Runs newest first, filtered on the effective status, kind and group.

        Raises:
            RunStoreError: bad status name (``records.StatusError``, a ``ChoiceError``).
        """
        where, args = [], []
        if status is not None:
            # A stored queued/running run may turn out crashed: fetch those too, filter after judging.
            stored = ("crashed", *ACTIVE_STATUSES) if status == "crashed" else (check_status(status),)
            where.append(f"status IN ({', '.join('?' * len(stored))})")
            args += stored
        for column, value in (("kind", kind), ("run_group", None if group is None else str(group))):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        sql = f"{SELECT_RUNS} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id DESC"
        records = self._effective(self._read(sql, args))
        return [r for r in records if status is None or r.status == status]

    def summary(self, run: RunRecord) -> dict:
        """The JSON row of ``python -m core runs --json`` for ``run``."""
        params = self.params(run.run_id)
        return {**{f: getattr(run, f) for f in SUMMARY_FIELDS}, "best_val_acc": self.best_metric(run.run_id, "val_acc"),
                "test_accuracy": self.latest_metrics(run.run_id).get("test_accuracy"), "wall_s": run.wall_s,
                "splits": {s: params[f"n_{s}"] for s in SPLITS if f"n_{s}" in params}}  # fmt: skip
