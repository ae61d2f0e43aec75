"""Tests for core.thumbs: lazy, cached thumbnails of real images, and bad files that do not stop a page."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.common.errors import ImageError
from core.common.workspace import Workspace
from core.datasets.samples import sample_path
from core.datasets.thumbs import THUMB_SIZE, make_thumbnail, thumbnail_file, thumbnail_files
from tests import imagefactory as f


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_thumbnails_are_made_only_when_asked_for(class_folder: Path, ws: Workspace) -> None:
    assert not (ws.cache / "thumbs").exists()
    thumb = thumbnail_file(class_folder / "cat" / "0.png", ws.cache)

    assert thumb.is_file() and thumb.is_relative_to(ws.cache / "thumbs")
    assert len(list((ws.cache / "thumbs").rglob("*.png"))) == 1


def test_a_second_request_reuses_the_cached_file(class_folder: Path, ws: Workspace) -> None:
    first = thumbnail_file(class_folder / "cat" / "0.png", ws.cache)
    written = first.stat().st_mtime_ns
    os.utime(first, ns=(written - 10**9, written - 10**9))  # so a rewrite would show

    again = thumbnail_file(class_folder / "cat" / "0.png", ws.cache)
    assert again == first and again.stat().st_mtime_ns == written - 10**9


def test_a_changed_image_gets_a_new_thumbnail(class_folder: Path, ws: Workspace) -> None:
    image = class_folder / "cat" / "0.png"
    old = thumbnail_file(image, ws.cache)
    f.write_rgb(image, size=(8, 8), color=(0, 0, 250))
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a different mtime even on a coarse clock
    new = thumbnail_file(image, ws.cache)

    assert new != old
    assert pixels(new)[..., 2].mean() > pixels(old)[..., 2].mean() + 100


def test_an_8x8_digit_is_enlarged_in_crisp_whole_pixel_blocks(digits_ws: Workspace) -> None:
    digit = sample_path("sample:digits", digits_ws.datasets) / "train" / "0" / "digit_0000.png"
    thumb = pixels(thumbnail_file(digit, digits_ws.cache))
    original = pixels(digit)
    factor = THUMB_SIZE // 8

    assert thumb.shape == (THUMB_SIZE, THUMB_SIZE, 3)
    np.testing.assert_array_equal(thumb, original.repeat(factor, axis=0).repeat(factor, axis=1))
    assert len(np.unique(thumb[..., 0])) > 2  # not a blur: the same few grey levels as the digit, but not flat


def test_a_large_image_shrinks_to_fit_keeping_its_shape(tmp_path: Path) -> None:
    thumb = make_thumbnail(f.write_rgb(tmp_path / "wide.jpg", size=(400, 200)))
    assert thumb.size == (THUMB_SIZE, THUMB_SIZE // 2) and thumb.mode == "RGB"


def test_a_rotated_photo_gets_an_upright_thumbnail(tmp_path: Path) -> None:
    thumb = make_thumbnail(f.write_exif_rotated_jpeg(tmp_path / "phone.jpg", size=(60, 20)), size=40)
    assert thumb.width < thumb.height
    top, bottom = np.asarray(thumb)[2, thumb.width // 2], np.asarray(thumb)[-3, thumb.width // 2]
    assert top[0] > 200 and bottom[2] > 200  # red on top, blue below, as a viewer shows it


def test_bad_files_give_their_error_in_place_and_the_rest_go_on(odd_folder, ws: Workspace) -> None:
    root = odd_folder.root
    images = [root / "plain" / "0.jpg", root / "broken" / "truncated.jpg", root / "broken" / "missing.jpg",
              root / "broken" / "bomb.png", root / "odd" / "sixteen.png"]  # fmt: skip
    out = thumbnail_files(images, ws.cache, size=32)

    assert isinstance(out[0], Path) and isinstance(out[4], Path)
    assert [type(item) for item in out[1:4]] == [ImageError] * 3
    assert "truncated" in out[1].reason and out[2].reason == "file not found" and "bomb" in out[3].reason
    assert len(list((ws.cache / "thumbs").rglob("*.png"))) == 2


def test_a_single_bad_file_raises_image_error(odd_folder, ws: Workspace) -> None:
    with pytest.raises(ImageError, match="empty"):
        thumbnail_file(odd_folder.root / "broken" / "empty.jpg", ws.cache)
