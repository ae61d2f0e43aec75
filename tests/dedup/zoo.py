"""The zoo: a small real dataset holding every kind of duplicate once, written by one function for the dedup tests
and the ``dedup`` command-line tests."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from core.datasets.sources import DatasetRef
from tests import imagefactory as f


@dataclass
class Zoo:
    ref: DatasetRef
    groups: dict[str, set[str]]  # name -> the files that must form one group
    flats: set[str]
    broken: str


def make_zoo(root: Path) -> Zoo:
    """train/val/test folders per class: each duplicate kind once, flat images, distinct photos, a broken file."""
    t = root / "train"
    f.write_photo(t / "cat/a.jpg", 1, (120, 90))
    shutil.copy(t / "cat/a.jpg", t / "cat/a_copy.jpg")  # byte copy
    (t / "dog").mkdir(parents=True)
    f.photo(2, (100, 100)).save(t / "dog/p.png")
    f.photo(2, (100, 100)).save(t / "dog/p.bmp")  # the same pixels, another format
    f.write_photo(t / "cat/r.jpg", 3, (120, 90))
    f.write_copy(t / "cat/r.jpg", root / "val/cat/r_q60.jpg", quality=60)  # re-encoded, leaked into val
    f.write_photo(t / "bird/s.jpg", 4, (160, 120))
    f.write_copy(t / "bird/s.jpg", root / "test/bird/s_half.png", scale=0.5)  # resized, leaked into test
    f.write_photo(t / "cat/b.jpg", 5, (120, 90))
    f.write_copy(t / "cat/b.jpg", t / "dog/b_bright.jpg", brightness=1.15)  # brightened, filed as a dog
    f.write_photo(t / "cat/d.jpg", 6, (90, 70))
    f.write_copy(t / "cat/d.jpg", t / "cat/e_big.png", scale=2.0)  # larger copy, later in path order
    flats = {"red": (220, 30, 30), "blue": (30, 30, 220), "gray": (128, 128, 128), "white": (250, 250, 250)}
    for name, colour in flats.items():
        f.write_flat(t / f"flat/{name}.png", colour)
    for k in range(12):
        f.write_photo(t / f"{['cat', 'dog', 'bird'][k % 3]}/x{k}.jpg", 100 + k, (110, 80))
    f.write_truncated_jpeg(t / "cat/broken.jpg")
    groups = {
        "exact_bytes": {"train/cat/a.jpg", "train/cat/a_copy.jpg"},
        "exact_formats": {"train/dog/p.png", "train/dog/p.bmp"},
        "reencode_leak": {"train/cat/r.jpg", "val/cat/r_q60.jpg"},
        "resize_leak": {"train/bird/s.jpg", "test/bird/s_half.png"},
        "bright_conflict": {"train/cat/b.jpg", "train/dog/b_bright.jpg"},
        "bigger": {"train/cat/d.jpg", "train/cat/e_big.png"},
    }
    return Zoo(
        DatasetRef("folder", root, name="zoo"), groups, {f"train/flat/{n}.png" for n in flats}, "train/cat/broken.jpg"
    )
