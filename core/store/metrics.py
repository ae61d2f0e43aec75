"""What a run records besides its row: parameters, per-step metrics and artifact pointers.

Metric values: NaN is stored as NULL (SQLite turns NaN into NULL anyway; a NULL value means NaN and
nothing else, so no flag column is needed) and reads back as NaN; +-inf are kept as REAL. ``best_metric``
ignores NaN and +-inf; ``latest_metrics`` reports them as they are (a diverged loss should show).
Re-logging the same (run, key, step) replaces the value: a resumed run replays the steps after its
last checkpoint. ``t`` is stamped inside the write lock, so ``metrics(..., since_t=max_t_seen)`` is a
gap-free incremental poll.

``RunTables`` is a part of ``RunStore`` (a mixin): the same object and connection, its methods grouped by
the tables they use.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from core.common.errors import RunStoreError
from core.store.records import metric_row

if TYPE_CHECKING:  # pandas is imported inside metrics() so that importing the store stays fast
    import pandas as pd

_FLOAT_MAX = 1.7976931348623157e308  # finite bounds: best_metric skips +-inf


class RunTables:
    """Params, metrics and artifacts of runs; needs the store's ``_write``, ``_read``, ``_require_row`` and
    ``_touch``."""

    if TYPE_CHECKING:

        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]: ...
        def _require_row(self, conn: sqlite3.Connection, run_id: int) -> sqlite3.Row: ...
        def _touch(self, conn: sqlite3.Connection, run_id: int, now: float) -> None: ...

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
        values = [metric_row(run_id, row) for row in rows]
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
