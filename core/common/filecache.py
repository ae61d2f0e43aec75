"""Per-file caches keyed by size and modification time, shared by the scan, the fingerprints and the tensors.

A row is reused only while its file's (size, mtime_ns) is unchanged; a file whose stat failed (size -1) is
always redone, so the opener reports its reason. Cache files are parquet tables written to a temp file and
renamed: readers see the old table or the new one, never half of one, and a damaged table is only a slower run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd


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
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, cache_file)
