"""Tests for core.images: real files of every kind, good and broken, written by tests/imagefactory.py."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.common.errors import ImageError
from core.images.opener import (
    ALLOWED_FORMATS,
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    ImageInfo,
    inspect_image,
    is_image_name,
    open_image,
    open_with_info,
    sniff_image,
    to_rgb,
)
from tests import imagefactory as factory
from tests.support import ROOT

WHITE = (255, 255, 255)


def near(pixel: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> bool:
    """JPEG moves colours a little; this says whether a pixel is the expected colour all the same."""
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def reason_of(call, *args, **kwargs) -> str:
    with pytest.raises(ImageError) as caught:
        call(*args, **kwargs)
    return caught.value.reason


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a.jpg",
        "A.JPG",
        "dir/b.Jpeg",
        "c.PNG",
        "d.webp",
        "e.bmp",
        "f.gif",
        "g.TIF",
        "h.tiff",
        "i.ppm",
        "j.PGM",
        "k.pbm",
        "l.pnm",
    ],
)
def test_is_image_name_accepts_image_extensions_in_any_case(name: str) -> None:
    assert is_image_name(name)


@pytest.mark.parametrize("name", ["labels.csv", "notes.txt", "jpg", "photo.jpg.zip", "x.ico", "x.heic", ""])
def test_is_image_name_rejects_other_names(name: str) -> None:
    assert not is_image_name(name)


def test_every_extension_is_lower_case_with_a_dot() -> None:
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)
    assert len(IMAGE_EXTENSIONS) == 12


# --- opening good images -------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "fmt"), [(".jpg", "JPEG"), (".png", "PNG"), (".webp", "WEBP"), (".bmp", "BMP"),
                                             (".gif", "GIF"), (".tif", "TIFF"), (".ppm", "PPM")])  # fmt: skip
def test_open_image_reads_each_allowed_format_as_rgb(tmp_path: Path, suffix: str, fmt: str) -> None:
    path = factory.write_rgb(tmp_path / f"pic{suffix}", size=(40, 30), color=(200, 30, 30))
    im = open_image(path)
    assert (im.mode, im.size) == ("RGB", (40, 30))
    assert near(im.getpixel((20, 29)), (200, 30, 30), tolerance=40)  # bottom row is away from the rectangle
    assert inspect_image(path).format == fmt


def test_open_image_returns_an_image_detached_from_the_file(tmp_path: Path) -> None:
    path = factory.write_rgb(tmp_path / "a.png")
    im = open_image(path)
    path.unlink()  # a lazy image would need the file to get its pixels
    assert np.asarray(im).shape == (32, 32, 3)


def test_open_image_reads_uppercase_extension_and_accented_name_with_spaces(tmp_path: Path) -> None:
    path = factory.write_rgb(tmp_path / "Été à la plage" / "Photo Numéro 1.JPG", fmt="JPEG")
    assert open_image(path).size == (32, 32)
    assert inspect_image(str(path)).format == "JPEG"


def test_open_image_accepts_bytes_bytearray_and_file_objects(tmp_path: Path) -> None:
    data = factory.write_rgb(tmp_path / "a.png", seed=3).read_bytes()
    expected = np.asarray(open_image(tmp_path / "a.png"))
    for source in (data, bytearray(data), io.BytesIO(data)):
        assert np.array_equal(np.asarray(open_image(source)), expected)


def test_open_image_reads_a_file_object_from_its_start_and_leaves_it_open(tmp_path: Path) -> None:
    stream = io.BytesIO(factory.write_rgb(tmp_path / "a.jpg").read_bytes())
    stream.seek(100)  # e.g. an upload that was already read once
    assert open_image(stream).size == (32, 32)
    assert not stream.closed


def test_open_image_reads_a_stream_that_cannot_seek(tmp_path: Path) -> None:
    class ReadOnly:  # like a socket or a pipe: read() and nothing else
        def __init__(self, data: bytes) -> None:
            self.read = io.BytesIO(data).read

    data = factory.write_rgb(tmp_path / "a.png").read_bytes()
    assert open_image(ReadOnly(data)).size == (32, 32)
    assert reason_of(open_image, ReadOnly(b"")) == "empty file"


def test_open_image_gives_the_same_pixels_from_many_threads_at_once(tmp_path: Path) -> None:
    paths = [factory.write_rgb(tmp_path / f"{i}.jpg", size=(64, 48), seed=i) for i in range(12)]
    serial = [np.asarray(open_image(path)) for path in paths]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda path: np.asarray(open_image(path)), paths * 3))
    assert all(np.array_equal(a, b) for a, b in zip(serial * 3, threaded, strict=True))


def test_open_image_names_an_uploads_file_in_its_error(tmp_path: Path) -> None:
    stream = io.BytesIO(b"not an image at all")
    stream.name = "holiday.jpg"
    with pytest.raises(ImageError) as caught:
        open_image(stream)
    assert caught.value.path == "holiday.jpg"
    assert caught.value.reason == "not an image (unrecognised format)"


def test_different_seeds_give_different_pictures(tmp_path: Path) -> None:
    first = np.asarray(open_image(factory.write_rgb(tmp_path / "a.png", seed=1)))
    second = np.asarray(open_image(factory.write_rgb(tmp_path / "b.png", seed=2)))
    assert not np.array_equal(first, second)


# --- mode conversion -----------------------------------------------------------------------------


def test_16bit_ramp_is_stretched_instead_of_clipped_to_white(tmp_path: Path) -> None:
    path = factory.write_16bit_png(tmp_path / "ramp.png", size=(64, 64))
    grey = np.asarray(open_image(path))[:, :, 0].astype(float)
    assert 110 < grey.mean() < 145 and grey.std() > 60  # a full ramp: dark to light, evenly
    assert (grey == 255).mean() < 0.02
    # What a plain convert gives, so this test would catch a regression to it:
    assert (np.asarray(Image.open(path).convert("RGB")) == 255).mean() > 0.9


def test_16bit_tiff_is_stretched_too(tmp_path: Path) -> None:
    path = factory.write_16bit_png(tmp_path / "ramp.tif")
    assert inspect_image(path).mode == "I;16"
    assert 110 < np.asarray(open_image(path)).mean() < 145


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (65535, 255), (32896, 128)])
def test_constant_16bit_image_keeps_its_level_without_dividing_by_zero(value: int, expected: int) -> None:
    im = Image.fromarray(np.full((8, 8), value, dtype=np.uint16))
    assert im.mode == "I;16"
    assert set(np.asarray(to_rgb(im)).ravel().tolist()) == {expected}


def test_16bit_image_with_one_bright_outlier_is_still_a_picture() -> None:
    values = np.full((20, 20), 1000, dtype=np.uint16)
    values[0, 0] = 60000
    rgb = np.asarray(to_rgb(Image.fromarray(values)))
    assert rgb[0, 0, 0] == 255 and rgb[5, 5, 0] == 0


def test_float_image_in_unit_range_is_not_black_and_nan_becomes_black() -> None:
    values = np.linspace(0.0, 1.0, 100, dtype=np.float32).reshape(10, 10)
    values[9, 9] = np.nan
    rgb = np.asarray(to_rgb(Image.fromarray(values)))  # mode F
    assert rgb[0, 0, 0] == 0 and rgb[9, 8, 0] == 255 and rgb[9, 9, 0] == 0
    assert 100 < rgb.mean() < 155


def test_int32_image_is_stretched() -> None:
    im = Image.fromarray(np.arange(-500, 500, dtype=np.int32).reshape(10, 100))
    assert im.mode == "I"
    rgb = np.asarray(to_rgb(im))
    assert rgb.min() == 0 and rgb.max() == 255


def test_transparent_palette_pixels_come_out_white_not_their_hidden_colour(tmp_path: Path) -> None:
    im = open_image(factory.write_palette_transparent_png(tmp_path / "p.png"))
    assert im.getpixel((2, 2)) == WHITE  # palette index 0 is red, but transparent
    assert im.getpixel((30, 2)) == factory.BLUE


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    im = open_image(factory.write_rgba_png(tmp_path / "rgba.png"))
    assert im.getpixel((2, 2)) == WHITE  # transparent red
    assert im.getpixel((30, 2)) == factory.BLUE


def test_half_transparent_rgba_is_blended_with_white() -> None:
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    assert near(to_rgb(im).getpixel((0, 0)), (127, 127, 127), tolerance=1)


def test_la_is_composited_on_white(tmp_path: Path) -> None:
    im = open_image(factory.write_la_png(tmp_path / "la.png"))
    assert im.getpixel((2, 2)) == WHITE
    assert im.getpixel((30, 2)) == (0, 0, 0)


@pytest.mark.parametrize("mode", ["PA", "RGBa", "La"])
def test_other_alpha_modes_are_composited_on_white(mode: str) -> None:
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0)).convert(mode if mode != "La" else "LA")
    if mode == "La":
        im = im.convert("La")
    assert to_rgb(im).getpixel((0, 0)) == WHITE


def test_cmyk_red_stays_red(tmp_path: Path) -> None:
    path = factory.write_cmyk_jpeg(tmp_path / "cmyk.jpg")
    assert inspect_image(path).mode == "CMYK"
    assert near(open_image(path).getpixel((16, 16)), factory.RED)


@pytest.mark.parametrize(("mode", "value", "expected"), [("1", 1, WHITE), ("L", 50, (50, 50, 50)),
                                                        ("YCbCr", (76, 85, 255), factory.RED)])  # fmt: skip
def test_plain_modes_convert_directly(mode: str, value, expected: tuple[int, int, int]) -> None:
    assert near(to_rgb(Image.new(mode, (2, 2), value)).getpixel((0, 0)), expected, tolerance=2)


def test_to_rgb_leaves_its_input_unchanged() -> None:
    im = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    out = to_rgb(im)
    assert out is not im and im.mode == "RGBA" and im.getpixel((0, 0)) == (255, 0, 0, 0)


# --- orientation and frames ----------------------------------------------------------------------


def test_inspect_image_reports_size_after_exif_orientation(tmp_path: Path) -> None:
    info = inspect_image(factory.write_exif_rotated_jpeg(tmp_path / "phone.jpg", size=(60, 20), orientation=6))
    assert (info.width, info.height) == (20, 60)


def test_open_image_rotates_pixels_by_exif_orientation(tmp_path: Path) -> None:
    im = open_image(factory.write_exif_rotated_jpeg(tmp_path / "phone.jpg", size=(60, 20), orientation=6))
    assert im.size == (20, 60)
    assert near(im.getpixel((10, 5)), factory.RED)  # the stored left third is on top once upright
    assert near(im.getpixel((10, 55)), factory.BLUE)


def test_orientation_without_rotation_keeps_size(tmp_path: Path) -> None:
    path = factory.write_exif_rotated_jpeg(tmp_path / "mirror.jpg", size=(60, 20), orientation=2)
    info = inspect_image(path)
    im = open_image(path)
    assert (info.width, info.height) == im.size == (60, 20)
    assert near(im.getpixel((55, 10)), factory.RED)  # 2 = mirrored: the red third is now on the right


def test_animated_gif_gives_frame_zero_and_counts_frames(tmp_path: Path) -> None:
    path = factory.write_animated_gif(tmp_path / "anim.gif", colors=(factory.RED, factory.GREEN, factory.BLUE))
    assert inspect_image(path).frames == 3
    assert open_image(path).getpixel((8, 8)) == factory.RED


def test_multi_picture_jpeg_from_a_phone_is_accepted_as_jpeg(tmp_path: Path) -> None:
    path = factory.write_mpo_jpeg(tmp_path / "phone.jpg")
    info = inspect_image(path)
    assert (info.format, info.frames) == ("MPO", 2)
    assert near(open_image(path).getpixel((5, 5)), factory.RED)


# --- inspect_image -------------------------------------------------------------------------------


@pytest.mark.parametrize(("write", "mode"), [(factory.write_16bit_png, "I;16"),
                                             (factory.write_palette_transparent_png, "P"),
                                             (factory.write_rgba_png, "RGBA"), (factory.write_la_png, "LA"),
                                             (factory.write_gray, "L")])  # fmt: skip
def test_inspect_image_reports_the_files_original_mode(tmp_path: Path, write, mode: str) -> None:
    assert inspect_image(write(tmp_path / "x.png")).mode == mode


def test_inspect_image_reports_full_size_of_a_jpeg_it_decoded_at_reduced_scale(tmp_path: Path) -> None:
    path = factory.write_rgb(tmp_path / "big.jpg", size=(400, 240))
    assert inspect_image(path) == ImageInfo(400, 240, "RGB", "JPEG", 1, path.stat().st_size)


def test_image_info_is_frozen_and_picklable_for_worker_processes(tmp_path: Path) -> None:
    info = inspect_image(factory.write_rgb(tmp_path / "a.png"))
    assert pickle.loads(pickle.dumps(info)) == info
    with pytest.raises(AttributeError):
        info.width = 1  # type: ignore[misc]


# --- broken and hostile files --------------------------------------------------------------------


def test_inspect_image_rejects_truncated_jpeg_that_verify_accepts(tmp_path: Path) -> None:
    path = factory.write_truncated_jpeg(tmp_path / "cut.jpg", size=(256, 256))
    Image.open(path).verify()  # raises nothing: why verify() is not enough
    assert "truncated" in reason_of(inspect_image, path)


def test_truncation_is_caught_even_though_inspect_decodes_jpeg_at_one_eighth_scale(tmp_path: Path) -> None:
    # 256 px is large enough for the 1/8 draft; the same file decoded at full scale fails the same way.
    path = factory.write_truncated_jpeg(tmp_path / "cut.jpg", size=(256, 256))
    drafted = Image.open(path)
    drafted.draft("L", (1, 1))
    assert drafted.size == (32, 32)
    assert reason_of(inspect_image, path).startswith("truncated or corrupt (image file is truncated")


def test_open_image_rejects_truncated_jpeg_even_with_a_draft_size(tmp_path: Path) -> None:
    path = factory.write_truncated_jpeg(tmp_path / "cut.jpg", size=(256, 256))
    assert "truncated" in reason_of(open_image, path, draft_size=(32, 32))


def test_truncated_png_is_refused(tmp_path: Path) -> None:
    path = factory.write_truncated_png(tmp_path / "cut.png")
    assert "truncated" in reason_of(inspect_image, path)
    assert "truncated" in reason_of(open_image, path)


def test_file_cut_inside_its_header_is_called_corrupt_not_a_non_image(tmp_path: Path) -> None:
    data = factory.write_rgb(tmp_path / "a.png").read_bytes()[:20]
    assert reason_of(open_image, data).startswith("truncated or corrupt")


@pytest.mark.parametrize("call", [inspect_image, open_image])
def test_empty_file_is_refused(tmp_path: Path, call) -> None:
    assert reason_of(call, factory.write_empty(tmp_path / "empty.jpg")) == "empty file"


@pytest.mark.parametrize("call", [inspect_image, open_image])
def test_text_named_jpg_is_refused_as_not_an_image(tmp_path: Path, call) -> None:
    assert reason_of(call, factory.write_text_as_image(tmp_path / "notes.jpg")) == "not an image (unrecognised format)"


@pytest.mark.parametrize("call", [inspect_image, open_image])
def test_icon_named_png_is_refused_by_its_real_format(tmp_path: Path, call) -> None:
    path = factory.write_ico(tmp_path / "x.png")
    assert Image.open(path).format == "ICO"  # Pillow would happily read it
    assert reason_of(call, path) == "format ICO not allowed"
    assert "ICO" not in ALLOWED_FORMATS


def test_decompression_bomb_is_refused_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = factory.write_bomb_png(tmp_path / "bomb.png", size=(30000, 30000))
    assert path.stat().st_size < 1000
    decoded: list[tuple[int, int]] = []  # a spy on Pillow's decoder entry: the real load still runs if reached
    real_load = ImageFile.ImageFile.load

    def counting_load(im: ImageFile.ImageFile):
        decoded.append(im.size)
        return real_load(im)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    for call in (inspect_image, open_image):
        reason = reason_of(call, path)
        assert reason.startswith("too large: 900 MP") and "decompression bomb" in reason
    assert decoded == []  # refused from the header: 900 MP would take seconds and gigabytes to decode
    inspect_image(factory.write_rgb(tmp_path / "small.png", size=(8, 8)))
    assert decoded and set(decoded) == {(8, 8)}  # the spy does see a real decode


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_between_pillows_warning_and_error_limits_is_refused_by_our_own_check(tmp_path: Path) -> None:
    path = factory.write_bomb_png(tmp_path / "bomb.png", size=(10000, 10000))  # 100 MP: Pillow only warns
    reason = reason_of(inspect_image, path)
    assert reason == "too large: 10000x10000 px (limit 89 MP), possible decompression bomb"


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    path = factory.write_rgb(tmp_path / "a.png", size=(100, 100))
    assert reason_of(open_image, path, max_pixels=9_999) == (
        "too large: 100x100 px (limit 9999 px), possible decompression bomb"
    )
    assert open_image(path, max_pixels=10_000).size == (100, 100)
    assert MAX_PIXELS == Image.MAX_IMAGE_PIXELS


def test_missing_file_and_directory_are_refused_with_their_path(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as caught:
        inspect_image(tmp_path / "missing.jpg")
    assert (caught.value.reason, caught.value.path) == ("file not found", str(tmp_path / "missing.jpg"))
    assert reason_of(open_image, tmp_path) == "is a directory"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_is_refused_instead_of_blocking_the_scan(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    assert reason_of(inspect_image, pipe) == "not a regular file"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_refused_as_permission_denied(tmp_path: Path) -> None:
    path = factory.write_rgb(tmp_path / "secret.png")
    path.chmod(0)
    assert reason_of(inspect_image, path) == "permission denied"


def test_reasons_are_short_enough_for_a_table_cell(tmp_path: Path) -> None:
    broken = [factory.write_truncated_jpeg(tmp_path / "a.jpg"), factory.write_bomb_png(tmp_path / "b.png"),
              factory.write_ico(tmp_path / "c.png"), factory.write_truncated_png(tmp_path / "d.png")]  # fmt: skip
    assert all(len(reason_of(inspect_image, path)) <= 100 for path in broken)


# --- draft_size ----------------------------------------------------------------------------------


def test_draft_size_decodes_a_large_jpeg_smaller_keeping_its_aspect(tmp_path: Path) -> None:
    path = factory.write_rgb(tmp_path / "big.jpg", size=(800, 400))
    small = open_image(path, draft_size=(64, 64))
    assert small.size == (200, 100)  # 1/4 scale: the smallest that keeps both sides >= 64
    assert open_image(path).size == (800, 400)


def test_draft_size_is_ignored_for_formats_without_draft(tmp_path: Path) -> None:
    path = factory.write_rgb(tmp_path / "big.png", size=(200, 100))
    assert open_image(path, draft_size=(16, 16)).size == (200, 100)


def test_draft_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="draft_size"):
        open_image(factory.write_rgb(tmp_path / "a.jpg"), draft_size=(0, 10))


# --- PNM, sniffing, one decode for facts and pixels, no warnings on stderr ------------------------------------


@pytest.mark.parametrize(("name", "mode"), [("gray.pgm", "L"), ("bits.pbm", "1"), ("deep.pgm", "I;16")])
def test_pnm_gray_and_bitmap_files_are_read(tmp_path: Path, name: str, mode: str) -> None:
    ramp = np.arange(48 * 32).reshape(32, 48)
    picture = (
        Image.fromarray((ramp * 40).astype(np.uint16)) if mode == "I;16" else Image.fromarray(ramp.astype(np.uint8))
    )
    picture.convert(mode).save(tmp_path / name) if mode != "I;16" else picture.save(tmp_path / name)
    info = inspect_image(tmp_path / name)
    assert (info.format, info.width, info.height) == ("PPM", 48, 32)
    assert open_image(tmp_path / name).mode == "RGB"


def test_sniff_image_names_an_image_whatever_its_extension(tmp_path: Path) -> None:
    jpeg = factory.write_rgb(tmp_path / "photo.jpg", fmt="JPEG")
    (tmp_path / "photo.svg").write_bytes(jpeg.read_bytes())
    (tmp_path / "notes.txt").write_text("hello")
    factory.write_ico(tmp_path / "icon.ico")
    assert sniff_image(tmp_path / "photo.svg") == "JPEG"
    assert sniff_image(tmp_path / "notes.txt") is None and sniff_image(tmp_path / "icon.ico") is None
    assert sniff_image(tmp_path / "missing") is None


def test_open_with_info_gives_the_scan_facts_and_the_upright_picture_from_one_decode(tmp_path: Path) -> None:
    path = factory.write_exif_rotated_jpeg(tmp_path / "r.jpg", size=(60, 20))
    info, im = open_with_info(path.read_bytes(), draft_size=(8, 8))
    assert info == inspect_image(path)
    assert im.mode == "RGB" and im.height > im.width  # turned upright, decoded at reduced scale


def test_no_pillow_warning_reaches_stderr_for_an_image_between_its_limits(tmp_path: Path) -> None:
    path = factory.write_bomb_png(tmp_path / "bomb.png", size=(10000, 10000))
    code = f"from core.images.opener import inspect_image\ntry:\n    inspect_image({str(path)!r})\nexcept Exception as e:\n    print(e)"
    done = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "too large" in done.stdout and done.stderr == ""
