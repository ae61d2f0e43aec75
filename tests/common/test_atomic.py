"""core.common.atomic: the old file or the whole new one, never a part, and no leftovers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.common.atomic import PARTIAL_SUFFIX, write_atomic


@pytest.mark.parametrize("content", [b"\x00bytes\xff", "text é", lambda fh: fh.write(b"from a writer")])
@pytest.mark.parametrize("durable", [True, False])
def test_every_kind_of_content_lands_whole(tmp_path: Path, content, durable: bool) -> None:
    target = tmp_path / "new" / "folder" / "file.bin"
    write_atomic(target, content, durable=durable)
    expected = (
        content if isinstance(content, bytes) else content.encode() if isinstance(content, str) else b"from a writer"
    )
    assert target.read_bytes() == expected
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]  # no temporary file left


def test_a_failing_writer_leaves_the_old_file_and_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old and whole")

    def half_then_fail(fh) -> None:
        fh.write(b"half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"old and whole"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(PARTIAL_SUFFIX)]


def test_a_reader_never_sees_a_half_written_file(tmp_path: Path) -> None:
    """The new content is invisible under the target's name until it is complete: the rename is the switch."""
    target = tmp_path / "table.parquet"
    target.write_bytes(b"A" * 1000)
    seen = []

    def slow_writer(fh) -> None:
        fh.write(b"B" * 500)
        seen.append(target.read_bytes())  # mid-write, the name still holds the old content
        fh.write(b"B" * 500)

    write_atomic(target, slow_writer)
    assert seen == [b"A" * 1000] and target.read_bytes() == b"B" * 1000


def test_the_temporary_file_is_in_the_target_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same folder, same file system: os.replace is then an atomic rename, never a copy."""
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append((Path(a), Path(b))), real_replace(a, b)))
    write_atomic(tmp_path / "x.json", "{}")
    [(source, dest)] = renamed
    assert source.parent == dest.parent == tmp_path and source.name.startswith(".x.json.")
