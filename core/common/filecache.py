"""Per-file caches keyed by size and modification time, shared by the scan, the fingerprints and the tensors.

A row is reused only while its file's (size, mtime_ns) is unchanged; a file whose stat failed (size -1) is
always redone, so the opener reports its reason. Cache files are parquet tables written to a temp file and
renamed: readers see the old table or the new one, never half of one, and a damaged table is only a slower run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.common.atomic import write_atomic

ROW_GROUP = 16384  # rows converted and written at a time


def stale(row: dict | None, stat: tuple[int, int]) -> bool:
    """Whether ``row`` (with ``size``/``mtime_ns``) no longer describes a file whose stat is ``stat``."""
    return row is None or stat[0] < 0 or (row["size"], row["mtime_ns"]) != tuple(stat)


def write_table(cache_file: Path, frame: pd.DataFrame) -> None:
    """Write a cache table atomically (not fsynced: a lost cache is rebuilt), ROW_GROUP rows at a time.

    Converting a 200,000-row table to Arrow at once holds a second copy of it (measured: +75 MB for the scan's
    cache); a row group at a time holds a slice. One schema serves every group: a column that is empty in one
    group (every file of it failed) takes the type the others give it.
    """
    starts = range(0, max(len(frame), 1), ROW_GROUP)
    groups = [frame.iloc[i : i + ROW_GROUP] for i in starts]
    schema = pa.unify_schemas([pa.Schema.from_pandas(g, preserve_index=False) for g in groups],
                              promote_options="permissive")  # fmt: skip

    def write(fh: BinaryIO) -> None:
        with pq.ParquetWriter(fh, schema) as writer:
            for group in groups:
                writer.write_table(pa.Table.from_pandas(group, schema=schema, preserve_index=False))

    write_atomic(cache_file, write, durable=False)


def read_table(cache_file: Path | None, columns: Sequence[str], *, skip: Sequence[str] = ()) -> pd.DataFrame | None:
    """A cache table as written, less the ``skip`` columns; None when missing, unreadable, or written with other
    columns.

    Columnar: a 200,000-row table is tens of MB as a table and over 1 GB as a dict per row.
    """
    if cache_file is None or not cache_file.exists():
        return None
    try:
        if pq.read_schema(cache_file).names != list(columns):
            return None
        return pd.read_parquet(cache_file, columns=[c for c in columns if c not in skip])
    except (OSError, ValueError):
        return None


def match(table: pd.DataFrame | None, paths: Sequence[str], sizes: np.ndarray, mtimes: np.ndarray) -> np.ndarray:
    """For each of ``paths``, the position of its still-valid row in ``table``, or -1 where it must be redone.

    Redone: the table has no row for the path, the file's (size, mtime_ns) differs from the row's, or its stat
    failed (size -1): the rule of ``stale``, vectorised. Sizes and times are compared as int64 (a float64 loses
    the nanoseconds of a modification time). A table with a path twice is not ours: everything is redone.
    """
    n = len(paths)
    if table is None or not table["path"].is_unique:
        return np.full(n, -1, np.int64)
    pos = pd.Index(table["path"]).get_indexer(pd.Index(np.asarray(paths, dtype=object)))
    found = pos >= 0
    row_sizes = table["size"].to_numpy(np.int64)[pos[found]]
    row_mtimes = table["mtime_ns"].to_numpy(np.int64)[pos[found]]
    valid = np.zeros(n, bool)
    valid[found] = (row_sizes == np.asarray(sizes)[found]) & (row_mtimes == np.asarray(mtimes)[found])
    valid &= np.asarray(sizes) >= 0
    return np.where(valid, pos, -1).astype(np.int64)


def rows_where(frame: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """``frame``'s rows where ``keep``, indexed from 0; ``frame`` itself when that is every row (no copy: a
    fingerprint table of 200,000 images is ~100 MB)."""
    return frame.reset_index(drop=True) if keep.all() else frame[keep].reset_index(drop=True)


def unique_rows(frame: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """``rows_where(frame, keep)`` without a second row for a path (a cache has one row per file)."""
    kept = rows_where(frame, keep)
    repeated = kept["path"].duplicated().to_numpy()
    return rows_where(kept, ~repeated)


def placed(rows: np.ndarray, where: np.ndarray, n: int) -> np.ndarray:
    """A length-``n`` array of table rows: ``rows[k]`` at position ``where[k]``, -1 elsewhere."""
    out = np.full(n, -1, np.int64)
    out[where] = rows
    return out


def gather(sources: Sequence[tuple[pd.DataFrame | None, np.ndarray]], columns: Sequence[str], n: int) -> pd.DataFrame:
    """``n`` rows of ``columns``: row k from the source (table, rows) whose ``rows[k]`` is >= 0 (one source each).

    The sources are a cache (``match``), the files opened now and what another pass already computed. A source
    that gives every row in its own order (nothing changed since the cache; a first run) is used as it is: taking
    its rows would copy ~0.5 KB an image.
    """
    parts = []
    for table, rows in sources:
        have = rows >= 0
        if table is None or not have.any():
            continue
        if len(table) == n and np.array_equal(rows, np.arange(n)):
            return table[list(columns)].reset_index(drop=True)
        parts.append(table[list(columns)].iloc[rows[have]].set_axis(np.flatnonzero(have)))
    if not parts:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(parts).sort_index().reset_index(drop=True)
