"""The duplicate search on data no one here made: real photos (tests.realphotos) and the built-in digits.

A copy is the same picture re-encoded, resized, turned gray, given an alpha channel or saved as PNM; a mirror
image is another picture; two people's handwritten "1"s are look-alikes, never copies nor leaks.
"""

from __future__ import annotations

import io
import itertools
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli.main import main
from core.common.workspace import Workspace
from core.datasets.scan import scan_dataset
from core.datasets.sources import resolve_dataset
from core.dedup.groups import find_duplicates
from tests.realphotos import PhotoFolder, photo_files, write_photo_folder

# "The same picture" for the 8x8 digits: pixels that differ by under a quarter of an ink level (16 levels of 255).
SAME_PICTURE_MEAN_DIFF = 255 / 16 / 4


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> PhotoFolder:
    return write_photo_folder(tmp_path_factory.mktemp("real") / "photos")


def test_real_photos_are_available_offline() -> None:
    assert len(photo_files()) >= 3


def test_a_flat_folder_of_real_photos_is_scanned_with_every_file_accounted_for(photos: PhotoFolder, ws) -> None:
    (photos.root / "notes.txt").write_text("taken on holiday\n")
    (photos.root / "jpeg-named.svg").write_bytes((photos.root / next(iter(photos.truth))).read_bytes())
    try:
        scan = scan_dataset(resolve_dataset(str(photos.root), ws.with_roots(photos.root)), None)
    finally:
        (photos.root / "notes.txt").unlink()
        (photos.root / "jpeg-named.svg").unlink()
    on_disk = {p.name for p in photos.root.iterdir()} | {"notes.txt", "jpeg-named.svg"}
    listed = set(scan.manifest["path"]) | set(scan.unreadable["path"])
    assert listed == on_disk
    assert set(scan.unreadable["path"]) == {"notes.txt"} and "not an image" in scan.unreadable["reason"][0]
    assert set(scan.manifest["label"]) == {""} and scan.classes == {} and scan.n_unlabelled == len(on_disk) - 1
    assert {"PPM", "PNG", "JPEG"} <= set(scan.manifest["format"])


def test_copies_of_real_photos_are_grouped_and_mirror_images_are_not(photos: PhotoFolder, tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws").with_roots(photos.root)
    result = find_duplicates(resolve_dataset(str(photos.root), ws), tmp_path / "c")
    found = {frozenset(m["path"]) for _, m in result.members.groupby("group")}
    assert found == photos.copy_groups()
    assert not set(result.members["path"]) & photos.flips
    gray_copies = {name for name in photos.truth if "_gray" in name}
    assert gray_copies <= set(result.members["path"])  # a grayscale copy is the same picture
    assert all(g["splits"] == ["unsplit"] and not g["leak"] for g in result.summary()["groups"])


def _digits_cli(ws: Workspace) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["dedup", "sample:digits", "--json", "--workspace", str(ws.root)]) == 0
    return json.loads(out.getvalue())


def test_the_digits_sample_has_no_leak_and_only_same_picture_groups(digits_ws: Workspace) -> None:
    summary = _digits_cli(digits_ws)
    root = resolve_dataset("sample:digits", digits_ws).root
    assert summary["n_images"] == 1797
    assert summary["n_leaks"] == 0 and all(v["n_images"] == 0 for v in summary["leakage"].values())
    for group in summary["groups"]:
        pixels = [np.asarray(Image.open(root / p), np.float32) for p in group["files"]]
        for a, b in itertools.combinations(pixels, 2):
            assert np.abs(a - b).mean() < SAME_PICTURE_MEAN_DIFF, group["files"]
    # Handwriting that merely looks alike is named, not hidden and not counted.
    assert summary["n_look_alikes"] > 100 and len(summary["look_alikes"]) == summary["n_look_alikes"]
    assert all(pair["correlation"] >= 0.9 for pair in summary["look_alikes"])


def test_a_cleaned_copy_of_a_flat_folder_keeps_its_images_unlabelled(photos: PhotoFolder, tmp_path: Path) -> None:
    from core.datasets.scan import scan_dataset
    from core.dedup.cleaning import clean_dataset

    ws = Workspace.open(tmp_path / "ws").with_roots(photos.root)
    result = find_duplicates(resolve_dataset(str(photos.root), ws), ws.cache)
    _, cleaned = clean_dataset(result, ["keep-one"], ws)
    scan = scan_dataset(cleaned, ws.cache)
    assert len(scan.manifest) == len(result.hashes.table) - result.n_redundant and scan.unreadable.empty
    assert scan.n_unlabelled == len(scan.manifest)
