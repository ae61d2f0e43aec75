"""The run store's file: its schema (with migrations), how a connection is opened, and how a new file is made
safe to open from any number of processes at once.

Columns of the ``runs`` table are listed once, in ``RUN_COLUMNS``; the record, the queries and the inserts
all derive from it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from core.common.errors import RunStoreError

BUSY_TIMEOUT_S = 10.0
# Switching a new file to WAL needs a moment alone with it; SQLite answers SQLITE_BUSY at once (the busy
# handler is not consulted for the journal switch). Retried this long, with backoff, under a file lock.
OPEN_DEADLINE_S = 30.0

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


# The ``runs`` table's columns, in table order: the one list the queries, the record and the inserts use.
RUN_COLUMNS: tuple[str, ...] = (
    "id", "name", "kind", "run_group", "status", "dataset", "arch", "config", "created_at", "started_at", "ended_at",
    "heartbeat_at", "host", "pid", "pid_start", "instance", "thread", "cpu_model", "cpu_count", "threads",
    "processes", "device", "error", "parent_id",
)  # fmt: skip
SELECT_RUNS = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection with the store's settings: rows by name, autocommit (explicit transactions), busy timeout,
    ``synchronous=NORMAL`` (in WAL never corrupts; no fsync per commit), foreign keys on (for cascades).

    ``read_only``: the file as it is on disk, without the WAL's shared memory (which a full disk cannot give):
    only for listing what is stored when nothing can be written.
    """
    if read_only:
        uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro&immutable=1"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def prepare_file(conn: sqlite3.Connection, path: Path) -> None:
    """Make the file a current run store: WAL journal, tables migrated to ``SCHEMA_VERSION``.

    Safe when many processes open a new file at once (two dashboards, a dashboard and a CLI command): the
    work happens under an exclusive lock on ``<file>.lock``, and a busy answer is retried with backoff.

    Raises:
        RunStoreError: the file was written by a newer schema, or stayed locked past ``OPEN_DEADLINE_S``.
    """
    with _file_lock(path):
        _retry_busy(lambda: _switch_to_wal(conn), path)
        _retry_busy(lambda: _migrate(conn, path), path)


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode=WAL").fetchall()  # persistent: set once per file


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RunStoreError(
                f"run store {path} has schema version {version}; this code knows up to {SCHEMA_VERSION}"
            )
        for migration in _MIGRATIONS[version:]:
            for statement in migration:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _retry_busy(step, path: Path) -> None:
    deadline = time.monotonic() + OPEN_DEADLINE_S
    delay = 0.005
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in str(exc)
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(delay * (1 + random.random()))  # jitter: openers released together must not retry together
        delay = min(delay * 2, 0.5)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<file>.lock`` beside the store (released when the process dies)."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only folder: opening still works for readers; SQLite's own locks remain
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
