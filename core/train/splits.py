"""Train/val/test splits: stratified, deterministic per (seed, path), and the class order.

A split is made once per run and stored with it (``splits.csv``): a resumed run trains on exactly the same
images, and test scores are always on images the run never trained on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.common.errors import DatasetError
from core.common.naming import natural_sorted
from core.common.words import SPLITS
from core.train.config import TEST_FRACTION, VAL_FRACTION


def make_splits(
    manifest: pd.DataFrame, val_fraction: float = VAL_FRACTION, test_fraction: float = TEST_FRACTION, seed: int = 0
) -> pd.DataFrame:
    """Assign every image to train, val or test.

    Split folders (or a CSV split column) are kept as they are. Where the data has none, each class is split
    on its own (stratified): its images are ordered by a seeded hash of their path, the first
    ``n * test_fraction`` (rounded half up) go to test, the next ``round(n * val_fraction)`` to val, the rest to train.
    Ordering by hash rather than by a shuffled row order makes the split independent of listing order, and
    adding images to a folder moves no other image between splits. A class always keeps at least one training
    image, so a class of one or two images is train-only (it cannot be measured, but it can be learned).
    When the data has a train folder but no val (or no test) folder, the missing split is carved out of the
    training images the same way; images outside every split folder count as training images.

    Args:
        manifest: the scan's manifest (``path``, ``label``, ``split`` with "" or ``unsplit`` for none).
        val_fraction: share of each class for validation when the data has no val split.
        test_fraction: share of each class for the test when the data has no test split.
        seed: changes which images land where; the same seed always gives the same split.

    Returns:
        A frame ``path, label, split`` (strings; split is train/val/test), sorted by path.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise DatasetError(f"val_fraction {val_fraction} + test_fraction {test_fraction} must be >= 0 and < 1")
    frame = manifest[["path", "label", "split"]].astype(str).copy()
    frame["split"] = frame["split"].where(frame["split"].isin(SPLITS), "train")
    present = set(frame["split"])
    carve = {"test": 0.0 if "test" in present else test_fraction, "val": 0.0 if "val" in present else val_fraction}
    if carve["test"] or carve["val"]:
        train = frame["split"] == "train"
        frame.loc[train, "split"] = _stratified(frame[train], carve["val"], carve["test"], seed)
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


def _stratified(frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    split = pd.Series("train", index=frame.index)
    for _, group in frame.groupby("label", sort=False):
        order = sorted(group.index, key=lambda i: _path_hash(group.at[i, "path"], seed))
        n_test, n_val = _class_shares(len(order), val_fraction, test_fraction)
        split[order[:n_test]] = "test"
        split[order[n_test : n_test + n_val]] = "val"
    return split


def _class_shares(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(test, val) counts for a class of n images, leaving at least one image for training."""
    n_test = min(_half_up(n * test_fraction), max(0, n - 1))
    n_val = min(_half_up(n * val_fraction), max(0, n - 1 - n_test))
    return n_test, n_val


def _half_up(x: float) -> int:
    # round() rounds halves to even (1.5 -> 2 but 2.5 -> 2); shares should grow steadily with the class size.
    return math.floor(x + 0.5 + 1e-9)


def _path_hash(path: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}\0{path}".encode()).hexdigest()


def split_indices(splits: pd.DataFrame, paths: Sequence[str]) -> dict[str, np.ndarray]:
    """Positions in ``paths`` (e.g. a ``TensorSet``'s kept images) of each split's images."""
    where = dict(zip(splits["path"], splits["split"], strict=True))
    kinds = np.array([where.get(p, "") for p in paths])
    return {s: np.flatnonzero(kinds == s) for s in SPLITS}


def class_names(splits: pd.DataFrame) -> list[str]:
    """The classes in reading order ("2" before "10"); a label's position is its class index."""
    return natural_sorted(splits["label"].unique())
