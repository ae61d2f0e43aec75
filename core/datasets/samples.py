"""Built-in sample datasets that ship inside installed packages, so the studio shows real data offline.

``sample:digits`` is scikit-learn's copy of the UCI handwritten digits: 1,797 real 8x8 scans of digits
written by 43 people, 10 classes. It is written once into the workspace as PNG files under
``train/val/test/<digit>/`` with a fixed, stratified split, so every page and command sees the same files.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.common.errors import DatasetError

SAMPLE_PREFIX = "sample:"
SPLIT_SEED = 0
# 70/15/15 keeps >= 26 test images per class for the digits, enough for per-class accuracy.
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15


@dataclass(frozen=True)
class Sample:
    name: str
    title: str  # what people call it ("Handwritten digits"): pages show this, not "sample:digits"
    description: str
    build: Callable[[Path], None]


def _build_digits(dest: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Values are 0..16 ink counts; scale to 0..255 and invert nothing: white digit on black, as scanned.
    pixels = np.clip(digits.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    labels = digits.target
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
    val_share = VAL_FRACTION / (1.0 - TEST_FRACTION)
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=SPLIT_SEED)
    for split, ids in (("train", train), ("val", val), ("test", test)):
        for i in sorted(ids):
            folder = dest / split / str(labels[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[i], mode="L").save(folder / f"digit_{i:04d}.png")


SAMPLES: dict[str, Sample] = {
    "digits": Sample(
        "digits",
        "Handwritten digits",
        "1,797 real handwritten digits (8x8 px, 10 classes) from scikit-learn, split 70/15/15",
        _build_digits,
    ),
}


def is_sample_ref(ref: str) -> bool:
    return ref.startswith(SAMPLE_PREFIX)


def sample_path(ref: str, datasets_dir: Path) -> Path:
    """Folder of the sample named by ``ref`` (``sample:digits``), written on first use.

    Raises:
        DatasetError: the name is not a known sample.
    """
    name = ref.removeprefix(SAMPLE_PREFIX)
    if name not in SAMPLES:
        raise DatasetError(f"unknown sample {name!r}; available: {', '.join(sorted(SAMPLES))}")
    dest = datasets_dir / f"sample-{name}"
    if not (dest / ".complete").exists():
        _materialise(SAMPLES[name], dest)
    return dest


def _materialise(sample: Sample, dest: Path) -> None:
    # Built in a temp folder and renamed into place, so a crash half-way never leaves a half-written sample.
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        sample.build(tmp)
        (tmp / ".complete").write_text("ok\n")
        if dest.exists() and not (dest / ".complete").exists():
            _discard(dest)  # an incomplete copy from an older version
        _put_in_place(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _put_in_place(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; when another process got there first, keep its copy.

    Two launchers of one run on one host write the sample at the same moment: checking ``dest.exists()``
    and then renaming leaves a window in which the other's rename lands, and ours fails "Directory not
    empty". Every copy is identical (fixed seed), so losing that race is fine once the winner's is complete.
    """
    try:
        os.rename(tmp, dest)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (dest / ".complete").exists():
            raise


def _discard(folder: Path) -> None:
    # Renamed aside first so only one process removes it and none deletes a copy another has just put there.
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}-old-", dir=folder.parent))
    try:
        os.rename(folder, aside / folder.name)
    except FileNotFoundError:
        pass  # another process discarded it first
    shutil.rmtree(aside, ignore_errors=True)
