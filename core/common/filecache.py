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


def open_table(cache_file: Path | None, columns: Sequence[str]) -> pq.ParquetFile | None:
    """A cache file opened for reading, when it was written with ``columns``; None when missing or unreadable.

    Reads through it see this version of the file even when a writer replaces it meanwhile (an atomic rename),
    so a caller may read a few columns, decide, then read others, and still read one table.
    """
    if cache_file is None or not cache_file.exists():
        return None
    try:
        source = pq.ParquetFile(cache_file)
    except (OSError, ValueError):
        return None
    return source if source.schema_arrow.names == list(columns) else None


def read_columns(source: pq.ParquetFile, columns: Sequence[str]) -> pd.DataFrame | None:
    """``columns`` of an opened cache (as ``pd.read_parquet`` gives them); None when the file is damaged."""
    try:
        return source.read(columns=list(columns)).to_pandas()
    except (OSError, ValueError):
        return None


def read_table(cache_file: Path | None, columns: Sequence[str]) -> pd.DataFrame | None:
    """A cache table as written; None when missing, unreadable, or written with other columns.

    Columnar: a 200,000-row table is tens of MB as a table and over 1 GB as a dict per row.
    """
    source = open_table(cache_file, columns)
    return None if source is None else read_columns(source, columns)


def match(table: pd.DataFrame | None, paths: Sequence[str], sizes: np.ndarray, mtimes: np.ndarray) -> np.ndarray:
    """For each of ``paths``, the position of its still-valid row in ``table``, or -1 where it must be redone.

    Redone: the table has no row for the path, the file's (size, mtime_ns) differs from the row's, or its stat
    failed (size -1): the rule of ``stale``, vectorised. Sizes and times are compared as int64 (a float64 loses
    the nanoseconds of a modification time). A table with a path twice is not ours: everything is redone.
    """
    n = len(paths)
    if table is None or not table["path"].is_unique:
        return np.full(n, -1, np.int64)
    pos = pd.Index(table["path"]).get_indexer(pd.Index(paths))
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


def save_rows(cache_file: Path, columns: Sequence[str], paths: pd.Series, sizes: np.ndarray, mtimes: np.ndarray,
              values: pd.DataFrame) -> None:  # fmt: skip
    """Write a cache: per file its path, stat and ``values`` (one row per path, in order), as ``columns``.

    A file whose stat failed (size -1) is left out (its row could never be reused), as is a second row for a path.
    """
    frame = pd.concat([pd.DataFrame({"path": paths.reset_index(drop=True), "size": sizes, "mtime_ns": mtimes}),
                       values.reset_index(drop=True)], axis=1)  # fmt: skip
    frame = rows_where(frame, sizes >= 0)
    write_table(cache_file, rows_where(frame, ~frame["path"].duplicated().to_numpy())[list(columns)])


def with_values(left: pd.DataFrame, values: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``left``'s rows beside their ``values`` (one row each, in order) where ``values["error"]`` is empty, and
    the others as (path, reason) rows: the images a pass could use, and why it could not use the rest."""
    errors = values["error"].fillna("").astype(str)
    good = (errors == "").to_numpy()
    joined = pd.concat([rows_where(left, good), rows_where(values.drop(columns="error"), good)], axis=1)
    failed = pd.DataFrame({"path": left["path"].to_numpy()[~good], "reason": errors.to_numpy()[~good]})
    return joined, failed


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
