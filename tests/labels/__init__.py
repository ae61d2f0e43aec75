"""Tests of core.labels. ``plant_flips`` makes the datasets with known wrong labels that every label-issue test (quick
and thorough) measures against."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.datasets.layouts import UNLABELLED
from core.datasets.scan import scan_dataset
from core.datasets.sources import DatasetRef

FLIP_SHARE = 0.05  # the planted noise: 5% of the images, chosen at random across classes


@dataclass(frozen=True)
class Flipped:
    """A folder-per-class copy of a dataset with some images moved into another class's folder."""

    root: Path
    flips: dict[str, tuple[str, str]]  # path in the copy (label/name) -> (true label, the wrong label it now has)
    n_images: int

    def scores(self, suspects: list[str]) -> tuple[float, float]:
        """(precision, recall) of ``suspects`` (paths in the copy) against the planted flips."""
        found = len(set(suspects) & set(self.flips))
        return (found / len(suspects) if suspects else 0.0), found / len(self.flips)


def plant_flips(source: Path, dest: Path, share: float = FLIP_SHARE, seed: int = 0) -> Flipped:
    """Copy the labelled images of the folder dataset ``source`` (splits folded away) to ``dest/<label>/<name>``,
    ``share`` of them (random across classes, fixed ``seed``) into a uniformly drawn *other* class's folder. Each
    copy's name is its number in the source's path order, then its own name."""
    manifest = scan_dataset(DatasetRef("folder", Path(source))).manifest
    manifest = manifest[manifest["label"] != UNLABELLED].sort_values("path").reset_index(drop=True)
    classes = sorted(set(manifest["label"]))
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(len(manifest), size=round(share * len(manifest)), replace=False).tolist())
    flips: dict[str, tuple[str, str]] = {}
    for i, row in enumerate(manifest.itertuples()):
        label = row.label
        if i in chosen:
            label = str(rng.choice([c for c in classes if c != row.label]))
        target = dest / label / f"{i:05d}-{Path(row.path).name}"  # numbered: classes may share file names
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(source) / row.path, target)
        if i in chosen:
            flips[f"{label}/{target.name}"] = (row.label, label)
    return Flipped(dest, flips, len(manifest))
