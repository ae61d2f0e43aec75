"""The one safe way to open an image: every page, scan, training run and prediction goes through here.

Image files come from users, so each one is treated as hostile until proven otherwise:

* only an allowlist of decoders is tried (``ALLOWED_FORMATS``), whatever the file extension says;
* the pixel count from the header is checked *before* anything is decoded (decompression bombs);
* the pixels are really decoded (``load()``), because ``verify()`` passes a JPEG cut in half;
* EXIF orientation is applied, so a phone photo is upright;
* every mode becomes RGB the right way: alpha composited on white, 16-bit and float stretched.

Every failure is an :class:`~core.common.errors.ImageError` whose ``reason`` fits in a table cell; no raw
Pillow exception escapes, and no Pillow warning reaches stderr (its ``DecompressionBombWarning``, printed for
images between its limit and twice it, is silenced once at import: the pixel check here refuses those files
with a reason instead). Nothing here changes Pillow's settings, so the functions are safe in threads and
worker processes.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core.common.errors import ImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
                                              ".ppm", ".pgm", ".pbm", ".pnm"})  # fmt: skip
# "PPM" is Pillow's name for the whole PNM family (PBM, PGM, PPM): plain headers, no compression, read safely.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
MAX_PIXELS = 89_478_485  # Pillow's own default limit, Image.MAX_IMAGE_PIXELS.

# Pillow warns (on stderr, from inside Image.open) for images between its limit and twice it; _open_checked refuses
# every image over MAX_PIXELS with a reason, so the warning only adds noise to the command line's output.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Pillow reports a JPEG that holds several pictures (phones, 3-D cameras) as "MPO", even when it was
# opened with formats=("JPEG",); its first frame is an ordinary JPEG, so it is accepted as one.
_JPEG_VARIANTS = ("MPO",)
# EXIF orientations 5..8 are rotations by 90 degrees: the displayed image swaps width and height.
_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = frozenset({5, 6, 7, 8})
# Modes whose values do not fit 0..255; Pillow's convert("RGB") clips them (a 16-bit photo comes out white).
_FULL_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}
_ALPHA_MODES = frozenset({"LA", "La", "RGBA", "RGBa", "PA"})
# What a malformed file can make Pillow raise while decoding (its own open() catches the last four).
_DECODE_ERRORS = (OSError, ValueError, EOFError, zlib.error, SyntaxError, IndexError, TypeError, struct.error)
_MAX_DETAIL = 80  # characters of a Pillow message kept in a reason: it must fit a table cell

Source = str | os.PathLike[str] | bytes | BinaryIO


@dataclass(frozen=True)
class ImageInfo:
    """What a dataset scan records about one image file.

    Attributes:
        width: Width in pixels as displayed, i.e. after EXIF orientation.
        height: Height in pixels as displayed, i.e. after EXIF orientation.
        mode: The file's own Pillow mode ("RGB", "P", "I;16", "CMYK", ...), before any conversion.
        format: The decoder that read it ("JPEG", "PNG", ..., or "MPO" for a multi-picture JPEG).
        frames: Number of frames (1 unless animated or multi-page).
        bytes: Size of the file on disk.
    """

    width: int
    height: int
    mode: str
    format: str
    frames: int
    bytes: int


def is_image_name(name: str) -> bool:
    """Tell whether a file name has one of the image extensions, ignoring case ("A.JPG" is one).

    Args:
        name: A file name or path.

    Returns:
        True when the extension is in ``IMAGE_EXTENSIONS``.
    """
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def inspect_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Read the facts a scan needs, decoding the pixels so that broken files fail here.

    Fast enough for 100k files: a JPEG is decoded at 1/8 scale (``draft``), which still entropy-decodes
    the whole file, so a truncated JPEG is still caught.

    Args:
        path: The image file.
        max_pixels: Refuse images whose header declares more pixels than this.

    Returns:
        The image's size (after EXIF orientation), original mode, format, frame count and file size.

    Raises:
        ImageError: The file is missing, empty, not an allowed image, too large, truncated or corrupt.
    """
    label = os.fspath(path)
    with _binary_stream(path, label) as fp, _decode_errors(label):
        n_bytes = os.fstat(fp.fileno()).st_size
        im = _open_checked(fp, label, max_pixels)
        # Record what the file holds before draft() changes size and mode to the reduced decode.
        width, height, mode, fmt = im.width, im.height, im.mode, im.format or ""
        im.draft("L", (1, 1))  # no-op for anything but JPEG
        im.load()
        if _orientation(im) in _SWAPS_AXES:
            width, height = height, width
        frames = int(getattr(im, "n_frames", 1))
    return ImageInfo(width=width, height=height, mode=mode, format=fmt, frames=frames, bytes=n_bytes)


def open_image(
    source: Source,
    *,
    max_pixels: int = MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Open an image and return it fully loaded, upright and in RGB.

    Args:
        source: A path, the file's bytes, or a binary file object (read from its start, left open).
        max_pixels: Refuse images whose header declares more pixels than this.
        draft_size: Optional hint for callers that only need a small image (thumbnails, hashing): a
            JPEG is decoded at 1/2, 1/4 or 1/8 scale while staying at least ``max(draft_size)`` pixels
            on each side. Other formats ignore it; the aspect ratio is always kept.

    Returns:
        A detached RGB image: frame 0 of an animation, EXIF orientation applied, alpha composited on
        white, 16-bit and float values stretched to 0..255.

    Raises:
        ImageError: The source is missing, empty, not an allowed image, too large, truncated or corrupt.
        ValueError: ``draft_size`` is not positive (a bug in the caller, not bad input).
    """
    return open_with_info(source, max_pixels=max_pixels, draft_size=draft_size)[1]


def open_with_info(
    source: Source,
    *,
    max_pixels: int = MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> tuple[ImageInfo, Image.Image]:
    """``inspect_image`` and ``open_image`` from one decode: the scan's facts and the upright RGB picture.

    The duplicate search uses it so that a dataset seen for the first time is decoded once, not once for the
    scan and again for the fingerprints. Arguments, result and errors as in ``open_image``; ``bytes`` is the
    size of the file (or of the bytes given).
    """
    if draft_size is not None and min(draft_size) < 1:
        raise ValueError(f"draft_size must be positive, got {draft_size}")
    label = _label(source)
    with _binary_stream(source, label) as fp, _decode_errors(label):
        n_bytes = _stream_size(fp)
        im = _open_checked(fp, label, max_pixels)
        width, height, mode, fmt = im.width, im.height, im.mode, im.format or ""
        if draft_size is not None:
            # A square request: the orientation is not known yet, and either side may end up the width.
            side = max(draft_size)
            im.draft(None, (side, side))
        im.load()
        if _orientation(im) in _SWAPS_AXES:
            width, height = height, width
        info = ImageInfo(width, height, mode, fmt, int(getattr(im, "n_frames", 1)), n_bytes)
        ImageOps.exif_transpose(im, in_place=True)  # the image is this function's own: no copy needed
        return info, to_rgb(im)


def sniff_image(path: str | os.PathLike[str]) -> str | None:
    """The allowed image format whose magic bytes start the file (a JPEG named ``.svg``), else None: reads 16 bytes."""
    try:
        with open(path, "rb") as fp:
            prefix = fp.read(16)
    except OSError:
        return None
    fmt = _sniff_format(prefix) if prefix else None
    return fmt if fmt in ALLOWED_FORMATS else None


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB without losing the picture.

    ``convert("RGB")`` alone drops alpha (transparent pixels show their hidden colour) and clips 16-bit
    and float values at 255, so those modes are handled here first.

    Args:
        im: A loaded image in any mode.

    Returns:
        A new RGB image; ``im`` is left unchanged.

    Raises:
        ImageError: Pillow has no conversion from this mode to RGB.
    """
    if im.mode in _FULL_SCALE:
        return _stretch_to_rgb(im)
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return _composite_on_white(im)
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise ImageError(f"unsupported mode {im.mode}") from exc


# --- opening -------------------------------------------------------------------------------------


def _label(source: Source) -> str | None:
    """The name to put in an error: the path, an upload's file name, or nothing for raw bytes."""
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else None


@contextmanager
def _binary_stream(source: Source, label: str | None) -> Iterator[BinaryIO]:
    """Yield a seekable binary stream over ``source``; close it only if it was opened here."""
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        with _open_file(source, label) as fp:
            yield fp
    elif not getattr(source, "seekable", lambda: False)():
        # Pillow (and the format sniffing below) seek back to the start.
        yield io.BytesIO(source.read())
    else:
        yield source


def _stream_size(fp: BinaryIO) -> int:
    """Bytes in the stream: the file's size, or the length of an in-memory buffer."""
    try:
        return os.fstat(fp.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        here = fp.tell()
        size = fp.seek(0, io.SEEK_END)
        fp.seek(here)
        return size


def _open_file(path: str | os.PathLike[str], label: str | None) -> BinaryIO:
    """Open a regular file for reading, turning the usual failures into short reasons."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError("is a directory", label)
        if not stat.S_ISREG(mode):  # a FIFO would block open() forever, /dev/zero never ends
            raise ImageError("not a regular file", label)
        return open(path, "rb")  # closed by the caller's with-block
    except FileNotFoundError as exc:
        raise ImageError("file not found", label) from exc
    except PermissionError as exc:
        raise ImageError("permission denied", label) from exc
    except OSError as exc:
        raise ImageError(f"cannot read ({_shorten(exc.strerror or str(exc))})", label) from exc


def _open_checked(fp: BinaryIO, label: str | None, max_pixels: int) -> ImageFile.ImageFile:
    """Identify the image with the allowed decoders only and check its size; decodes nothing."""
    try:
        im = Image.open(fp, formats=ALLOWED_FORMATS)
    except UnidentifiedImageError as exc:
        raise ImageError(_unidentified_reason(fp), label) from exc
    if im.format not in ALLOWED_FORMATS + _JPEG_VARIANTS:  # defence in depth: never trust the plugin list
        raise ImageError(f"format {im.format} not allowed", label)
    # Pillow itself only *warns* between MAX_IMAGE_PIXELS and twice that; this check needs no warning filter.
    if im.width * im.height > max_pixels:
        raise ImageError(_too_large(f"{im.width}x{im.height} px", max_pixels), label)
    return im


def _unidentified_reason(fp: BinaryIO) -> str:
    """Say why no allowed decoder took the file: empty, another image format, or not an image at all."""
    fp.seek(0)
    prefix = fp.read(16)  # what Pillow's format checks look at
    if not prefix:
        return "empty file"
    fmt = _sniff_format(prefix)
    if fmt is None:
        return "not an image (unrecognised format)"
    if fmt in ALLOWED_FORMATS:
        return f"truncated or corrupt ({fmt} header unreadable)"
    return f"format {fmt} not allowed"


def _sniff_format(prefix: bytes) -> str | None:
    """Name the format whose magic bytes start ``prefix``, using Pillow's checks (nothing is parsed)."""
    Image.init()  # registers every plugin; Image.open(formats=...) does the same
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        if accept is None:  # such plugins would have to parse the file to decide: not tried
            continue
        try:
            if accept(prefix):
                return fmt
        except (IndexError, TypeError, ValueError, struct.error):
            continue
    return None


@contextmanager
def _decode_errors(label: str | None) -> Iterator[None]:
    """Turn whatever Pillow raises on a bad file into an ImageError with a short reason."""
    try:
        yield
    except ImageError as exc:
        if exc.path is not None or label is None:
            raise
        raise ImageError(exc.reason, label) from exc  # to_rgb does not know the path
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Raised by Pillow above twice its limit (or above it when warnings are errors), and for GIF frames.
        raise ImageError(_bomb_reason(exc), label) from exc
    except _DECODE_ERRORS as exc:
        detail = str(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        raise ImageError(f"truncated or corrupt ({_shorten(detail)})", label) from exc


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright when absent)."""
    return int(im.getexif().get(_ORIENTATION_TAG, 1) or 1)


# --- reasons -------------------------------------------------------------------------------------


def _too_large(what: str, max_pixels: int) -> str:
    return f"too large: {what} (limit {_megapixels(max_pixels)}), possible decompression bomb"


def _bomb_reason(exc: Exception) -> str:
    """Reason for Pillow's own bomb check, whose message gives the pixel count but not the size."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    what = _megapixels(int(found.group(1))) if found else "over the pixel limit"
    return _too_large(what, MAX_PIXELS)


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f} MP" if pixels >= 1_000_000 else f"{pixels} px"


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


# --- mode conversion -----------------------------------------------------------------------------


def _composite_on_white(im: Image.Image) -> Image.Image:
    """Flatten alpha (or a transparent palette index / colour key) onto a white background."""
    if im.mode == "La":  # Pillow converts premultiplied LA to RGBA only through LA
        im = im.convert("LA")
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _stretch_to_rgb(im: Image.Image) -> Image.Image:
    """Map 16-bit / int32 / float values to 0..255 by a robust per-image stretch."""
    values = np.asarray(im).astype(np.float32)
    lo, hi = _robust_range(values)
    if hi > lo:
        scaled = (values - lo) * np.float32(255.0 / (hi - lo))
    else:
        # Nothing to stretch: show the single value at its place in the mode's nominal range.
        scaled = np.full(values.shape, lo * 255.0 / _FULL_SCALE[im.mode], dtype=np.float32)
    grey = np.nan_to_num(np.clip(scaled, 0.0, 255.0), nan=0.0)
    return Image.fromarray(np.rint(grey).astype(np.uint8)).convert("RGB")


def _robust_range(values: np.ndarray) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles of the finite values (min and max when those coincide)."""
    # Percentiles of a strided sample of ~250k values: exact enough, and fast on a 20 MP scan.
    step_y = max(1, values.shape[0] // 512)
    step_x = max(1, values.shape[1] // 512)
    sample = values[::step_y, ::step_x]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    if hi <= lo:  # mostly one value: stretch what little range there is, or report a constant
        lo, hi = finite.min(), finite.max()
    return float(lo), float(hi)
