"""core.common.filecache: the size+mtime rule and the damaged-table fallback shared by every per-file cache."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.common import filecache


def test_a_row_is_stale_when_its_file_changed_or_cannot_be_read() -> None:
    row = {"path": "a.png", "size": 10, "mtime_ns": 5}
    assert not filecache.stale(row, (10, 5))
    assert filecache.stale(row, (11, 5)) and filecache.stale(row, (10, 6))
    assert filecache.stale(row, (-1, -1))  # stat failed: redo, so the opener reports why
    assert filecache.stale(None, (10, 5))


def test_tables_round_trip_and_a_bad_one_is_just_empty(tmp_path: Path) -> None:
    file = tmp_path / "c" / "t.parquet"
    filecache.write_table(file, pd.DataFrame([{"path": "a.png", "size": 1, "mtime_ns": 2}]))
    assert filecache.read_rows(file, ["path", "size", "mtime_ns"])["a.png"]["size"] == 1
    assert filecache.read_rows(file, ["path", "size"]) == {}  # written with other columns
    assert list(file.parent.iterdir()) == [file]  # no temp file left behind
    file.write_bytes(b"not parquet")
    assert filecache.read_rows(file, ["path", "size", "mtime_ns"]) == {}
    assert filecache.read_rows(tmp_path / "missing.parquet", ["path"]) == {}
