"""core.common.filecache: the size+mtime rule and the damaged-table fallback shared by every per-file cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from core.common import filecache


def test_a_row_is_stale_when_its_file_changed_or_cannot_be_read() -> None:
    row = {"path": "a.png", "size": 10, "mtime_ns": 5}
    assert not filecache.stale(row, (10, 5))
    assert filecache.stale(row, (11, 5)) and filecache.stale(row, (10, 6))
    assert filecache.stale(row, (-1, -1))  # stat failed: redo, so the opener reports why
    assert filecache.stale(None, (10, 5))


def test_tables_round_trip_and_a_bad_one_is_just_missing(tmp_path: Path) -> None:
    file = tmp_path / "c" / "t.parquet"
    filecache.write_table(file, pd.DataFrame([{"path": "a.png", "size": 1, "mtime_ns": 2}]))
    assert filecache.read_table(file, ["path", "size", "mtime_ns"])["size"].tolist() == [1]
    assert filecache.read_table(file, ["path", "size"]) is None  # written with other columns
    assert list(file.parent.iterdir()) == [file]  # no temp file left behind
    file.write_bytes(b"not parquet")
    assert filecache.read_table(file, ["path", "size", "mtime_ns"]) is None
    assert filecache.read_table(tmp_path / "missing.parquet", ["path"]) is None


def test_match_keeps_only_rows_whose_file_is_unchanged() -> None:
    # Modification times in nanoseconds need 61 bits: compared as float64, these two would be equal.
    t = 1_765_000_000_123_456_789
    table = pd.DataFrame({"path": ["a", "b", "c", "d"], "size": [1, 2, 3, 4], "mtime_ns": [t, t, t, t]})
    paths = ["d", "a", "b", "c", "new"]
    rows = filecache.match(table, paths, np.array([4, 1, 2, 30, 5]), np.array([t, t + 1, t, t, t]))
    assert rows.tolist() == [3, -1, 1, -1, -1]  # a: touched 1 ns later; c: another size; new: not in the table
    assert filecache.match(table, ["a"], np.array([-1]), np.array([-1])).tolist() == [-1]  # stat failed: redo
    assert filecache.match(None, ["a", "b"], np.array([1, 2]), np.array([t, t])).tolist() == [-1, -1]
    twice = pd.concat([table, table])  # not a table this studio wrote: nothing in it is trusted
    assert filecache.match(twice, ["a"], np.array([1]), np.array([t])).tolist() == [-1]


def test_a_large_table_is_written_in_row_groups_with_one_schema(tmp_path: Path) -> None:
    n = filecache.ROW_GROUP + 10
    # The first row group's "mode" is all missing (every file failed): the later group gives the column its type.
    frame = pd.DataFrame({"path": [f"p{k}" for k in range(n)], "mode": [None] * filecache.ROW_GROUP + ["RGB"] * 10,
                          "hash": pd.array([None] * filecache.ROW_GROUP + [2**62 + 1] * 10, dtype="Int64")})  # fmt: skip
    file = tmp_path / "t.parquet"
    filecache.write_table(file, frame)
    assert pq.ParquetFile(file).num_row_groups == 2
    back = filecache.read_table(file, ["path", "mode", "hash"])
    pd.testing.assert_frame_equal(back, frame)
    assert back["hash"].iloc[-1] == 2**62 + 1  # 64-bit values survive (not through float64)
