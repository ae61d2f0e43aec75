"""The leakage-honest score: a test photo with a copy among the training photos measures memory, not learning.

The whale report scored 0.99 MAP@5 on validation and 0.44 on Kaggle's test: duplicates of its training photos
sat in its validation split. Here the duplicates engine (``core.dedup.find_duplicates``: perceptual hashes,
every match verified on pixels) groups the copies of the run's dataset, and each image of the evaluated split
whose group holds an image the run *trained on* (by the split stored with the run, ``splits.csv``) is a leak.
The score is then given twice: on all the split's images and on those without a copy in train.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.common.workspace import Workspace
from core.evaluate.metrics import map_at_5

# How a score looks for copies, as the Evaluate and Compare pages and the command line ask for it: ``compute`` finds
# them now (fingerprinting the dataset once, cached), ``cached`` only where the fingerprints are cached already (a
# page must not start a pass over every image on its own), ``skip`` never.
LEAK_CHECKS: tuple[str, ...] = ("compute", "cached", "skip")


@dataclass
class LeakCheck:
    """Which images of ``split`` have a copy among the run's training images (path -> one such copy)."""

    split: str
    leaking: dict[str, str] = field(default_factory=dict)
    method: str = "phash"
    threshold: int = 8  # hash bits

    @property
    def n_leaking(self) -> int:
        return len(self.leaking)


@dataclass
class HonestScore:
    """Accuracy and MAP@5 on all images, and on the images with no copy in train."""

    n_all: int
    n_leaking: int
    accuracy_all: float
    map5_all: float
    accuracy_clean: float | None  # None when every image has a copy in train
    map5_clean: float | None
    leaking_right: int  # of the leaking images, how many the model got right

    @property
    def n_clean(self) -> int:
        return self.n_all - self.n_leaking

    @property
    def gap(self) -> float | None:
        """Accuracy on all images minus accuracy without the leaks (points of score that came from copies)."""
        return None if self.accuracy_clean is None else self.accuracy_all - self.accuracy_clean

    def to_json(self) -> dict[str, Any]:
        return {"checked": True, "n_leaking": self.n_leaking, "n_without_leaks": self.n_clean,
                "accuracy_all": _r(self.accuracy_all), "accuracy_without_leaks": _r(self.accuracy_clean),
                "map5_all": _r(self.map5_all), "map5_without_leaks": _r(self.map5_clean),
                "gap": _r(self.gap)}  # fmt: skip


def _r(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def fingerprints_ready(ws: Workspace, dataset: str) -> bool:
    """Whether the dataset's fingerprints are cached: then a leak check takes a moment, not a pass over every image."""
    from core.common.errors import CoreError
    from core.datasets.sources import resolve_dataset
    from core.dedup.fingerprints import fingerprint_cache

    try:
        return fingerprint_cache(resolve_dataset(dataset, ws), ws.cache).is_file()
    except CoreError:  # the dataset is gone: nothing is cached for it
        return False


def find_leaks(ws: Workspace, dataset: str, splits: pd.DataFrame, split: str = "test") -> LeakCheck:
    """The images of ``split`` (by the run's stored ``splits``) with a copy among its training images.

    Fingerprints every image of the dataset once (cached in the workspace, so the next check only groups).

    Raises:
        DatasetError: the run's dataset cannot be opened any more.
    """
    from core.datasets.sources import resolve_dataset
    from core.dedup.groups import DedupConfig, find_duplicates

    config = DedupConfig()
    result = find_duplicates(resolve_dataset(dataset, ws), ws.cache, config)
    return leaks_from_groups(result.members[["group", "path"]], splits, split, config.method, int(config.threshold))


def leaks_from_groups(members: pd.DataFrame, splits: pd.DataFrame, split: str, method: str = "phash",
                      threshold: int = 8) -> LeakCheck:  # fmt: skip
    """The leak check from duplicate groups (``group, path`` rows) and the run's ``path, split`` rows."""
    where = pd.Series(splits["split"].to_numpy(), index=splits["path"])  # not a dict: 200,000 paths are 20 MB as one
    rows = members.assign(run_split=members["path"].map(where[~where.index.duplicated(keep="last")]))
    trained = rows[rows["run_split"] == "train"].groupby("group")["path"].first()
    leaking = rows[(rows["run_split"] == split) & rows["group"].isin(trained.index)]
    copies = dict(zip(leaking["path"], leaking["group"].map(trained), strict=True))
    return LeakCheck(split, copies, method, threshold)


def honest_score(frame: pd.DataFrame, check: LeakCheck) -> HonestScore:
    """Scores of the stored predictions ``frame`` on all images and on those without a copy in train."""
    right = (frame["pred1"] == frame["label"]).to_numpy()
    rank = frame["rank"].to_numpy()
    leaks = frame["image"].isin(set(check.leaking)).to_numpy()
    clean = ~leaks
    return HonestScore(
        n_all=len(frame), n_leaking=int(leaks.sum()), accuracy_all=float(right.mean()) if len(right) else float("nan"),
        map5_all=map_at_5(rank), accuracy_clean=float(right[clean].mean()) if clean.any() else None,
        map5_clean=map_at_5(rank[clean]) if clean.any() else None, leaking_right=int(right[leaks].sum()),
    )  # fmt: skip


DATASET_GONE = "The dataset is no longer where the run found it."


def locate_dataset(ws: Workspace, dataset: str) -> tuple[Path | None, str]:
    """(the folder the run's image paths are relative to, ""), or (None, why its images cannot be read: one
    sentence that never repeats a server path)."""
    from core.common.errors import CoreError, PathNotAllowedError
    from core.datasets.sources import resolve_dataset

    try:
        return resolve_dataset(dataset, ws).root, ""
    except PathNotAllowedError as exc:  # still there, but the folders this studio may read changed since the run
        return None, f"The run's images cannot be read here: {exc}."
    except CoreError:
        return None, DATASET_GONE
