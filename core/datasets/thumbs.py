"""Thumbnails for the sample grid, made lazily (only for images a page shows) and cached on disk.

A page of 100 thumbnails from a 100k-image dataset costs 100 small decodes the first time and 100 file
reads after that. Cache entries are keyed by the image's path, size and modification time, so an edited
image gets a new thumbnail and a stale one is never shown.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from core.common.atomic import write_atomic
from core.common.errors import ImageError
from core.images.opener import open_image

THUMB_SIZE = 128


def thumbnail_file(image: Path, cache_dir: Path, size: int = THUMB_SIZE) -> Path:
    """Path of a cached thumbnail of ``image`` whose longer side is about ``size`` px, made if missing.

    Tiny images (the 8x8 digits) are enlarged by a whole factor with nearest-neighbour sampling, so each
    pixel stays a crisp square instead of a blur.

    Raises:
        ImageError: the image cannot be opened.
    """
    try:
        st = image.stat()
    except OSError as exc:
        raise ImageError("file not found" if isinstance(exc, FileNotFoundError) else "cannot read", str(image)) from exc
    key = hashlib.sha1(f"{image.resolve()}|{st.st_size}|{st.st_mtime_ns}|{size}".encode()).hexdigest()
    target = cache_dir / "thumbs" / key[:2] / f"{key}.png"
    if not target.exists():
        _write_png(make_thumbnail(image, size), target)
    return target


def make_thumbnail(source: Path | bytes, size: int = THUMB_SIZE) -> Image.Image:
    """An RGB thumbnail of ``source`` (see ``thumbnail_file``), not cached."""
    im = open_image(source, draft_size=(size, size))
    longest = max(im.size)
    if longest * 2 <= size:
        factor = size // longest
        return im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    return im


def thumbnail_files(images: Sequence[Path], cache_dir: Path, size: int = THUMB_SIZE) -> list[Path | ImageError]:
    """``thumbnail_file`` for many images; a bad image gives its ImageError in its place, the rest go on."""
    out: list[Path | ImageError] = []
    for image in images:
        try:
            out.append(thumbnail_file(image, cache_dir, size))
        except ImageError as exc:
            out.append(exc)
    return out


def _write_png(im: Image.Image, target: Path) -> None:
    write_atomic(target, lambda fh: im.save(fh, format="PNG", optimize=False), durable=False)  # a cache
