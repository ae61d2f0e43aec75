"""The bad-file corpus: every odd and broken input the studio must take without crashing, made by the tests.

``write_corpus(root)`` writes a folder per class (``a/``, ``b/``: enough plain pictures to train on) and, in
``a/``, one file of each kind below. ``CORPUS`` says, for each, whether it is a usable image and the words its
reason must contain when it is not: the tests run it through ``scan``, ``dedup``, ``train``, ``predict``,
``evaluate`` and the endpoint, and print what a user sees for each (the report's table).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests import imagefactory as f

SYSTEM_FILE = Path("/etc/passwd")


@dataclass(frozen=True)
class Kind:
    name: str  # file name inside a/
    what: str  # the input, in words
    good: bool  # a usable image
    reason: str = ""  # words the reason must contain (bad files)


CORPUS = [
    Kind("empty.jpg", "empty file", False, "empty file"),
    Kind("text.jpg", "text named as an image", False, "not an image"),
    Kind("truncated.jpg", "JPEG cut in half", False, "truncated or corrupt"),
    Kind("truncated.png", "PNG cut in half", False, "truncated or corrupt"),
    Kind("bomb.png", "PNG header claiming 30000x30000 px", False, "decompression bomb"),
    Kind("bomb100.png", "PNG header claiming 10000x10000 px (between Pillow's warning and error)", False, "too large"),
    Kind("icon.png", "Windows icon named .png", False, "format ICO not allowed"),
    Kind("link-out.jpg", "symlink to a file outside the dataset", False, "outside the dataset"),
    Kind("folder.jpg", "a directory named like an image", False, "a folder named like an image"),
    Kind("notes.txt", "a text file", False, "not an image"),
    Kind("sixteen.png", "16-bit grayscale PNG", True),
    Kind("cmyk.jpg", "CMYK JPEG", True),
    Kind("palette-alpha.png", "palette PNG with a transparent colour", True),
    Kind("rgba.png", "RGBA PNG", True),
    Kind("animated.gif", "animated GIF", True),
    Kind("rotated.jpg", "JPEG with EXIF orientation 6", True),
    Kind("one-pixel.png", "1x1 PNG", True),
    Kind("strip.png", "20000x10 PNG", True),
    Kind("with space.jpg", "name with a space", True),
    Kind("café crème.png", "name with accents", True),
    Kind("new\nline.png", "name with a newline", True),
    Kind("photo.ppm", "PPM (PNM, colour)", True),
    Kind("gray.pgm", "PGM (PNM, gray)", True),
    Kind("bits.pbm", "PBM (PNM, 1-bit)", True),
    Kind("photo.webp", "WebP", True),
    Kind("photo.tif", "TIFF", True),
    Kind("jpeg-named.svg", "a JPEG named .svg", True),
]
GOOD_PER_CLASS = 12


def write_corpus(root: Path) -> Path:
    """``root/a`` and ``root/b`` with GOOD_PER_CLASS plain pictures each, and every CORPUS file in ``root/a``."""
    for label, colour in (("a", (220, 40, 40)), ("b", (40, 60, 220))):
        for i in range(GOOD_PER_CLASS):
            f.write_rgb(root / label / f"{i}.png", size=(16, 12), color=colour, seed=i)
    a = root / "a"
    f.write_empty(a / "empty.jpg")
    f.write_text_as_image(a / "text.jpg")
    f.write_truncated_jpeg(a / "truncated.jpg", size=(64, 64))
    f.write_truncated_png(a / "truncated.png", size=(32, 32))
    f.write_bomb_png(a / "bomb.png")
    f.write_bomb_png(a / "bomb100.png", size=(10000, 10000))
    f.write_ico(a / "icon.png", size=(16, 16))
    (a / "link-out.jpg").symlink_to(SYSTEM_FILE)
    (a / "folder.jpg").mkdir()
    (a / "notes.txt").write_text("taken on a holiday\n")
    f.write_16bit_png(a / "sixteen.png", size=(16, 12))
    f.write_cmyk_jpeg(a / "cmyk.jpg", size=(16, 12))
    f.write_palette_transparent_png(a / "palette-alpha.png", size=(16, 12))
    f.write_rgba_png(a / "rgba.png", size=(16, 12))
    f.write_animated_gif(a / "animated.gif", size=(16, 12))
    f.write_exif_rotated_jpeg(a / "rotated.jpg", size=(24, 12))
    f.write_rgb(a / "one-pixel.png", size=(1, 1))
    Image.fromarray(np.tile(np.arange(20000, dtype=np.uint16) % 251, (10, 1)).astype(np.uint8)).save(a / "strip.png")
    for name, seed in (("with space.jpg", 20), ("café crème.png", 21), ("new\nline.png", 22), ("photo.tif", 23)):
        f.write_rgb(a / name, size=(16, 12), color=(220, 40, 40), seed=seed)
    picture = f.photo(30, (16, 12))
    picture.save(a / "photo.ppm")
    picture.convert("L").save(a / "gray.pgm")
    picture.convert("1").save(a / "bits.pbm")
    picture.save(a / "photo.webp")
    jpeg = f.write_rgb(root / "scratch.jpg", size=(16, 12), color=(220, 40, 40), seed=24, fmt="JPEG")
    os.replace(jpeg, a / "jpeg-named.svg")
    return root
