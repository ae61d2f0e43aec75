"""Data preparation: scan the dataset, split it (or take a stored split), decode it once into tensors.

``prepare`` is the first half of a training run; ``core.train.fit`` the second. Both the command line and the
background job call it, and the time estimate reads its result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.common.errors import DatasetError
from core.common.workspace import Workspace
from core.datasets.sources import DatasetRef
from core.train.config import TrainConfig, resolve_config
from core.train.plan import image_facts
from core.train.splits import class_names, make_splits, split_indices
from core.train.tensors import Progress, TensorSet, channel_stats, load_tensors


@dataclass
class PreparedData:
    """A dataset ready to train on: the split, the decoded images and what was dropped, with the config that
    made them (its ``auto`` choices resolved)."""

    config: TrainConfig
    dataset: str
    root: Path
    splits: pd.DataFrame  # path, label, split: store it with the run so a resume uses exactly this split
    classes: list[str]
    tensors: TensorSet
    labels: torch.Tensor  # class index of each decoded image
    indices: dict[str, np.ndarray]  # split -> positions in tensors
    mean: list[float]  # of the training images, 0..1 units
    std: list[float]
    typical_side: int
    grayscale: bool
    dropped: pd.DataFrame  # path, reason: unreadable at scan time or at decode time
    seconds: float

    @property
    def image_size(self) -> int:
        return self.tensors.image_size

    def counts(self) -> dict[str, int]:
        return {s: len(i) for s, i in self.indices.items()}


def prepare(
    config: TrainConfig,
    ws: Workspace,
    *,
    progress: Progress | None = None,
    splits: pd.DataFrame | None = None,
    workers: int | None = None,
) -> PreparedData:
    """Scan ``config.dataset``, split it (or take ``splits``, e.g. a stored run's), and decode it once.

    Args:
        config: the run's config (validated here).
        ws: the workspace (its cache, and the folders the dataset may be read from).
        progress: called with (decoded, to decode) while images are decoded.
        splits: the ``path, label, split`` frame of an earlier run to reuse exactly (resume).
        workers: decoding threads (default: usable cores).

    Raises:
        DatasetError: the dataset cannot be read, has fewer than two classes or no training image.
    """
    from core.datasets.scan import require_labels, scan_dataset
    from core.datasets.sources import resolve_dataset

    started = time.perf_counter()
    config.validate()
    ref = resolve_dataset(config.dataset, ws)
    scan = scan_dataset(ref, ws.cache, workers=workers)
    require_labels(scan)  # a flat folder of photos has no classes: say so before the split finds "one class"
    if splits is None:
        splits = make_splits(scan.manifest, config.val_fraction, config.test_fraction, config.seed)
    side, gray = image_facts(scan.manifest, splits)
    resolved = resolve_config(config, side, gray)
    tensors = load_tensors(ref.root, list(splits["path"]), resolved.image_size, progress=progress,
                             workers=workers, cache_dir=ws.cache)  # fmt: skip
    return _assemble_prepared(resolved, ref, splits, tensors, scan.unreadable, side, gray, started)


def _assemble_prepared(
    config: TrainConfig,
    ref: DatasetRef,
    splits: pd.DataFrame,
    tensors: TensorSet,
    unreadable: pd.DataFrame,
    side: int,
    gray: bool,
    started: float,
) -> PreparedData:
    classes = class_names(splits)
    if len(classes) < 2:
        raise DatasetError(f"{config.dataset}: a classifier needs at least 2 classes, found {classes}")
    index_of = {c: i for i, c in enumerate(classes)}
    label_of = dict(zip(splits["path"], splits["label"], strict=True))
    labels = torch.tensor([index_of[label_of[p]] for p in tensors.paths], dtype=torch.long)
    indices = split_indices(splits, tensors.paths)
    if len(indices["train"]) < 2:
        raise DatasetError(f"{config.dataset}: {len(indices['train'])} readable training images; at least 2 needed")
    mean, std = channel_stats(tensors.images, indices["train"])
    dropped = pd.concat([unreadable, tensors.dropped], ignore_index=True).drop_duplicates("path", keep="last")
    return PreparedData(config, config.dataset, ref.root, splits, classes, tensors, labels, indices, mean, std,
                        side, gray, dropped, time.perf_counter() - started)  # fmt: skip
