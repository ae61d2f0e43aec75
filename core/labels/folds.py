"""The folds of a thorough label check (``core.labels.thorough``): which fold holds out each labelled image, the
fold datasets' tables, and the held-out probabilities gathered back from the fold runs.

The folds are stratified (each class spread evenly over them) and seeded: a class's images are ordered by a hash of
their path and the seed, so a dataset gets the same folds every time, whatever order it is listed in (as
``core.train.splits`` orders its splits). A class with a single image cannot be held out (its fold would learn no
example of it): it trains in every fold and is listed as left out.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from core.common.workspace import Workspace
from core.datasets.layouts import UNLABELLED
from core.datasets.sources import DatasetRef
from core.labels.probabilities import LabelIssuesError
from core.store.records import RunRecord
from core.train.run_folder import checkpoint_path, run_dir, run_splits

FOLD_SEED = 0  # the same dataset always gets the same folds


def assign_folds(table: pd.DataFrame, folds: int, seed: int = FOLD_SEED) -> np.ndarray:
    """The fold (0..folds-1) of each row of ``table`` (``path``, ``label``): stratified and seeded.

    Each class's images, ordered by a seeded hash of their path, are dealt round the folds; each class starts where
    the previous one stopped, so the folds' sizes differ by at most one image and each class's by at most one too.
    """
    fold = np.zeros(len(table), dtype=np.int64)
    dealt = 0
    for _, rows in sorted(table.groupby("label", sort=False), key=lambda item: str(item[0])):
        order = sorted(rows.index, key=lambda i: _path_hash(str(table.at[i, "path"]), seed))
        fold[table.index.get_indexer(order)] = (dealt + np.arange(len(order))) % folds
        dealt += len(order)
    return fold


def _path_hash(path: str, seed: int) -> str:
    return hashlib.sha1(f"labels\0{seed}\0{path}".encode()).hexdigest()


def labelled_images(ref: DatasetRef, ws: Workspace) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """The dataset's labelled, readable images (``path, label``, by path) and the files the scan could not read
    (``path, reason``)."""
    from core.datasets.scan import scan_dataset

    scan = scan_dataset(ref, ws.cache)
    manifest = scan.manifest[scan.manifest["label"] != UNLABELLED]
    table = manifest[["path", "label"]].astype(str).sort_values("path", kind="stable").reset_index(drop=True)
    left_out = [{"path": str(r.path), "reason": str(r.reason)} for r in scan.unreadable.itertuples()]
    return table, left_out


def fold_tables(table: pd.DataFrame, folds: int, seed: int = FOLD_SEED) -> tuple[list[pd.DataFrame], list[dict]]:
    """One ``image,label,split`` table per fold (its held-out images ``test``, the rest ``train``), and the images
    never held out (``path, reason``: the single image of a class)."""
    counts = table["label"].value_counts()
    alone = table["label"].map(counts).eq(1).to_numpy()
    fold = np.full(len(table), -1)
    fold[~alone] = assign_folds(table[~alone], folds, seed)
    left_out = [{"path": p, "reason": f"the only image of class {label!r}: no fold could learn that class without it"}
                for p, label in zip(table["path"][alone], table["label"][alone], strict=True)]  # fmt: skip
    tables = [pd.DataFrame({"image": table["path"], "label": table["label"],
                            "split": np.where(fold == k, "test", "train")}) for k in range(folds)]  # fmt: skip
    return tables, left_out


# ---------------------------------------------------------------------------------------------------
# The held-out probabilities, back from the fold runs


def gather(ws: Workspace, runs: list[RunRecord]) -> tuple[pd.DataFrame, np.ndarray, list[str], list[dict]]:
    """Every fold run's held-out images (``path, label, fold``, by path), their probabilities (rows in that order,
    summing to 1), the classes (columns) and the held-out images no fold predicted (``path, reason``).

    Raises:
        LabelIssuesError: a fold has no stored split, an image is held out twice, or a fold predicted an image
            outside its test split (one it may have trained on).
    """
    parts = [held_out(ws, run, k) for k, run in enumerate(runs)]
    classes = parts[0][2]
    frame = pd.concat([p[0] for p in parts], ignore_index=True).sort_values("path", kind="stable")
    if frame["path"].duplicated().any():
        raise LabelIssuesError("an image was held out by two folds")
    probs = np.concatenate([_columns(p[1], p[2], classes) for p in parts])[frame.index.to_numpy()]
    predicted = set(frame["path"])
    missing = [{"path": p, "reason": f"could not be read when fold {k + 1} trained"}
               for k, part in enumerate(parts) for p in part[3] if p not in predicted]  # fmt: skip
    return frame.reset_index(drop=True), probs / probs.sum(1, keepdims=True), classes, missing


def held_out(ws: Workspace, run: RunRecord, fold: int) -> tuple[pd.DataFrame, np.ndarray, list[str], list[str]]:
    """A fold run's predicted held-out images (``path, label, fold``), their probabilities, the run's classes, and
    every image of its test split. From its end-of-training predictions, or from its best checkpoint when they
    lack the full probabilities (over ``FULL_PROBS_MAX_CLASSES`` classes) or are gone."""
    from core.train.predictions import PredictionsError, predictions_file, read_predictions

    splits = run_splits(ws, run.run_id)
    if splits is None:
        raise LabelIssuesError(f"run {run.run_id} (fold {fold + 1}) has no stored split")
    try:
        stored = read_predictions(predictions_file(run_dir(ws, run.run_id), "test"))
        paths, probs, classes = stored.frame["image"].astype(str).tolist(), stored.probs, stored.classes
    except PredictionsError:
        probs = None
    if probs is None:
        paths, probs, classes = _predict(ws, run, splits)
    held = splits.loc[splits["split"] == "test", "path"].tolist()
    if not set(paths) <= set(held):
        raise LabelIssuesError(f"run {run.run_id} (fold {fold + 1}) predicted images it may have trained on")
    label_of = dict(zip(splits["path"], splits["label"], strict=True))
    frame = pd.DataFrame({"path": paths, "label": [label_of[p] for p in paths], "fold": fold})
    return frame, np.asarray(probs, dtype=np.float64), [str(c) for c in classes], held


def _predict(ws: Workspace, run: RunRecord, splits: pd.DataFrame) -> tuple[list[str], np.ndarray, list[str]]:
    """The test images' full probabilities by the run's best checkpoint, decoded as its training decoded them (as
    ``core.train.predictions.predict_split`` does, whose stored form drops them past 100 classes)."""
    import torch

    from core.datasets.sources import resolve_dataset
    from core.train.batches import Batches
    from core.train.checkpoints import load_for_inference
    from core.train.loop import evaluate
    from core.train.tensors import load_tensors

    model = load_for_inference(checkpoint_path(ws, run.run_id, "best"))
    index_of = {c: i for i, c in enumerate(model.classes)}
    rows = splits[(splits["split"] == "test") & splits["label"].isin(index_of)]
    tensors = load_tensors(resolve_dataset(run.dataset, ws).root, list(rows["path"]), model.image_size,
                           cache_dir=ws.cache, in_place=True)  # fmt: skip
    label_of = dict(zip(rows["path"], rows["label"], strict=True))
    labels = torch.tensor([index_of[label_of[p]] for p in tensors.paths], dtype=torch.long)
    batches = Batches(tensors.images, tensors.spread(labels), tensors.positions, batch_size=128, mean=model.mean,
                      std=model.std, device=model.device)  # fmt: skip
    out = evaluate(model.model, batches, keep_predictions=True)
    return list(tensors.paths), np.asarray(out["probs"], dtype=np.float64), list(model.classes)


def _columns(probs: np.ndarray, have: list[str], want: list[str]) -> np.ndarray:
    """``probs`` (columns ``have``) with the columns ``want``; a class a fold does not know gets 0."""
    if have == want:
        return probs
    out = np.zeros((len(probs), len(want)))
    where = {c: i for i, c in enumerate(have)}
    for j, c in enumerate(want):
        if c in where:
            out[:, j] = probs[:, where[c]]
    return out
