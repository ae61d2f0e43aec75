"""Tests for core.samples: the built-in digits, written as real PNG files with a fixed split."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.common.errors import DatasetError
from core.common.workspace import Workspace
from core.datasets import samples
from core.datasets.sources import list_entries, resolve_dataset


def files_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha1 of every PNG under ``root``."""
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*.png")}


def test_digits_are_1797_images_in_10_classes_split_70_15_15(digits_ws: Workspace) -> None:
    entries, problems = list_entries(resolve_dataset("sample:digits", digits_ws))

    assert problems == [] and len(entries) == 1797
    assert {e.label for e in entries} == {str(d) for d in range(10)}
    counts = {split: sum(e.split == split for e in entries) for split in ("train", "val", "test")}
    assert counts == {"train": 1257, "val": 270, "test": 270}


def test_every_class_is_in_every_split(digits_ws: Workspace) -> None:
    entries, _ = list_entries(resolve_dataset("sample:digits", digits_ws))
    per_split = {split: {e.label for e in entries if e.split == split} for split in ("train", "val", "test")}
    assert all(len(labels) == 10 for labels in per_split.values())


def test_digits_are_8x8_grayscale_pngs_with_ink(digits_ws: Workspace) -> None:
    root = samples.sample_path("sample:digits", digits_ws.datasets)
    with Image.open(root / "train" / "0" / "digit_0000.png") as im:
        assert (im.format, im.mode, im.size) == ("PNG", "L", (8, 8))
        pixels = np.asarray(im)
    assert pixels.max() > 200 and pixels.min() == 0


def test_a_second_workspace_gets_the_same_files_replacing_a_half_written_copy(
    digits_ws: Workspace, ws: Workspace
) -> None:
    half_written = ws.datasets / "sample-digits"
    (half_written / "train" / "0").mkdir(parents=True)
    (half_written / "train" / "0" / "stray.png").write_bytes(b"left by a crash")

    root = samples.sample_path("sample:digits", ws.datasets)

    assert root == half_written and (root / ".complete").exists()
    assert files_digest(root) == files_digest(samples.sample_path("sample:digits", digits_ws.datasets))
    assert not [p for p in ws.datasets.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_a_complete_sample_is_not_written_again(digits_ws: Workspace) -> None:
    root = samples.sample_path("sample:digits", digits_ws.datasets)
    stamp = (root / ".complete").stat().st_mtime_ns
    assert samples.sample_path("sample:digits", digits_ws.datasets) == root
    assert (root / ".complete").stat().st_mtime_ns == stamp


def test_the_sample_ref_keeps_its_name_as_spec(digits_ws: Workspace) -> None:
    ref = resolve_dataset("sample:digits", digits_ws)
    assert (ref.spec, ref.kind, ref.display) == ("sample:digits", "folder", "sample:digits")


def test_an_unknown_sample_is_refused_naming_the_available_ones(ws: Workspace) -> None:
    with pytest.raises(DatasetError, match="unknown sample 'cifar'.*digits"):
        samples.sample_path("sample:cifar", ws.datasets)
    assert not list(ws.datasets.iterdir())


def test_a_copy_put_in_place_by_another_process_while_ours_was_renamed_is_kept(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two launchers of one run write the sample at once; the one that loses the rename must go on.

    The other process's rename is made to land just before ours, the moment the race CI met falls in.
    """
    real_rename = samples.os.rename

    def other_process_first(src: str, dst: str) -> None:
        if Path(dst).name == "sample-digits" and not Path(dst).exists():
            other = Path(dst).parent / ".other-process"
            (other / "train").mkdir(parents=True)
            (other / ".complete").write_text("ok\n")
            real_rename(other, dst)
        real_rename(src, dst)

    monkeypatch.setattr(samples.os, "rename", other_process_first)
    monkeypatch.setattr(samples.os, "replace", other_process_first)  # either way of renaming into place
    root = samples.sample_path("sample:digits", ws.datasets)

    assert (root / ".complete").exists() and (root / "train").is_dir()
    assert [p.name for p in ws.datasets.iterdir()] == ["sample-digits"]  # our temp copy is cleaned away


def test_a_failed_rename_with_no_complete_copy_in_place_is_an_error(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def blocked(src: str, dst: str) -> None:
        raise OSError(errno.ENOTEMPTY, "Directory not empty", dst)

    monkeypatch.setattr(samples.os, "rename", blocked)
    monkeypatch.setattr(samples.os, "replace", blocked)
    with pytest.raises(OSError, match="not empty"):
        samples.sample_path("sample:digits", ws.datasets)
    assert not list(ws.datasets.iterdir())
