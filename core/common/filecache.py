"""Per-file caches keyed by size and modification time, shared by the scan, the fingerprints and the tensors.

A row is reused only while its file's (size, mtime_ns) is unchanged; a file whose stat failed (size -1) is
always redone, so the opener reports its reason. Cache files are parquet tables written to a temp file and
renamed: readers see the old table or the new one, never half of one, and a damaged table is only a slower run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from core.common.atomic import write_atomic


def stale(row: dict | None, stat: tuple[int, int]) -> bool:
    """Whether ``row`` (with ``size``/``mtime_ns``) no longer describes a file whose stat is ``stat``."""
    return row is None or stat[0] < 0 or (row["size"], row["mtime_ns"]) != tuple(stat)


def read_rows(cache_file: Path | None, columns: Sequence[str]) -> dict[str, dict]:
    """path -> row of a cache table; empty when missing, unreadable, or written with other columns."""
    if cache_file is None or not cache_file.exists():
        return {}
    try:
        frame = pd.read_parquet(cache_file)
    except (OSError, ValueError):
        return {}
    if list(frame.columns) != list(columns):
        return {}
    return {row["path"]: row for row in frame.to_dict("records")}


def write_table(cache_file: Path, frame: pd.DataFrame) -> None:
    """Write a cache table atomically (not fsynced: a lost cache is rebuilt)."""
    write_atomic(cache_file, lambda fh: frame.to_parquet(fh, index=False), durable=False)
