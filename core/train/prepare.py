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
from core.train import runplan
from core.train.config import TrainConfig
from core.train.memory import decode_chunk_bytes, stats_chunk_bytes, working_bytes
from core.train.plan import image_facts
from core.train.runplan import RunPlan
from core.train.splits import class_names, make_splits, split_indices
from core.train.tensors import Progress, TensorSet, channel_stats, load_tensors


@dataclass
class PreparedData:
    """A dataset ready to train on: the run's plan, the split, the decoded images (at the plan's input size) and
    what was dropped."""

    plan: RunPlan
    root: Path
    splits: pd.DataFrame  # path, label, split: store it with the run so a resume uses exactly this split
    classes: list[str]
    tensors: TensorSet
    labels: torch.Tensor  # class index of each row of tensors.images (-1 for a row that is no image of the run)
    indices: dict[str, np.ndarray]  # split -> rows of tensors.images
    mean: list[float]  # of the training images, 0..1 units (what the inputs are scaled by: plan.scaling)
    std: list[float]
    dropped: pd.DataFrame  # path, reason: unreadable at scan time or at decode time
    seconds: float

    @property
    def config(self) -> TrainConfig:
        """The settings the run uses (the plan's config with every automatic choice decided)."""
        return self.plan.settings

    @property
    def dataset(self) -> str:
        return self.plan.config.dataset

    @property
    def image_size(self) -> int:
        return self.tensors.image_size

    def scaling(self) -> tuple[list[float], list[float]]:
        """(mean, std) the inputs are scaled by (:meth:`RunPlan.scaling`)."""
        return self.plan.scaling(self.mean, self.std)

    def counts(self) -> dict[str, int]:
        return {s: len(i) for s, i in self.indices.items()}


def prepare(
    source: TrainConfig | RunPlan,
    ws: Workspace,
    *,
    progress: Progress | None = None,
    splits: pd.DataFrame | None = None,
    workers: int | None = None,
) -> PreparedData:
    """Scan the dataset, split it (or take ``splits``, e.g. a stored run's), and decode it once for the run's plan.

    Args:
        source: the run's plan (made once, before the run queued; a resume's stored plan), or a config, which is
            resolved into its plan here (validated first).
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
    config = source.config if isinstance(source, RunPlan) else source.validate()
    ref = resolve_dataset(config.dataset, ws)
    scan = scan_dataset(ref, ws.cache, workers=workers)
    require_labels(scan)  # a flat folder of photos has no classes: say so before the split finds "one class"
    if splits is None:
        splits = make_splits(scan.manifest, config.val_fraction, config.test_fraction, config.seed)
    plan = source if isinstance(source, RunPlan) else runplan.resolve(config, image_facts(scan.manifest, splits))
    budget = working_bytes(plan.settings)  # the same numbers the run's memory estimate used
    tensors = load_tensors(ref.root, list(splits["path"]), plan.image_size, progress=progress, workers=workers,
                           cache_dir=ws.cache, in_place=True, chunk_bytes=decode_chunk_bytes(budget))  # fmt: skip
    return _assemble_prepared(plan, ref, splits, tensors, scan.unreadable, started, stats_chunk_bytes(budget))


def _assemble_prepared(plan: RunPlan, ref: DatasetRef, splits: pd.DataFrame, tensors: TensorSet,
                       unreadable: pd.DataFrame, started: float, stats_bytes: int | None = None) -> PreparedData:  # fmt: skip
    classes = class_names(splits)
    dataset = plan.config.dataset
    if len(classes) < 2:
        raise DatasetError(f"{dataset}: a classifier needs at least 2 classes, found {classes}")
    index_of = {c: i for i, c in enumerate(classes)}
    label_of = dict(zip(splits["path"], splits["label"], strict=True))
    labels = tensors.spread(torch.tensor([index_of[label_of[p]] for p in tensors.paths], dtype=torch.long))
    # Rows of tensors.images: the images' own positions, or (in_place: images left out of a dataset since its cache
    # was made) their rows in the cache file, never a copy in RAM of the rest.
    indices = {k: tensors.positions[v] for k, v in split_indices(splits, tensors.paths).items()}
    if len(indices["train"]) < 2:
        raise DatasetError(f"{dataset}: {len(indices['train'])} readable training images; at least 2 needed")
    mean, std = channel_stats(tensors.images, indices["train"], stats_bytes)
    dropped = pd.concat([unreadable, tensors.dropped], ignore_index=True).drop_duplicates("path", keep="last")
    return PreparedData(plan, ref.root, splits, classes, tensors, labels, indices, mean, std, dropped,
                        time.perf_counter() - started)  # fmt: skip
