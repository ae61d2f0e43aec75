"""The per-image predictions of a run, kept beside its checkpoints, so evaluation never retrains or re-predicts.

``checkpoints/run-<id>/<split>_predictions.parquet``, one row per image of the split, made by the best
checkpoint (at the end of a completed run, or later, once, by :func:`predict_split` for a run finished before
predictions were kept):

    image (path relative to the dataset root), label, target (class index), pred1..pred5, p1..p5 (the top-5
    classes and their probabilities; "" and NaN past the number of classes), rank (of the true class: 1..5, 0
    beyond the top 5), p_true (probability of the true class), loss (plain cross-entropy, -ln p_true),
    probs (the whole probability vector as a fixed-size list, only when the model has at most
    ``FULL_PROBS_MAX_CLASSES`` classes; read back as one N x C array, not as a table column)

Why these columns: every metric of the Evaluate page needs only the top-5, the true class's rank and its
probability (accuracy, top-k, precision/recall/F1, the confusion matrix, MAP@5, log loss, calibration), so
the file stays small at any class count (the whale data has 4,251 ids: a full vector per image would be
17 kB). The full vector is kept where it is small, for anything computed later (any top-k, per-class curves).
Parquet (pyarrow, installed with Streamlit and pandas' own engine): typed columns, compressed, one read; the
class list, the split and the checkpoint's epoch travel in the file's own metadata.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.common.atomic import write_atomic
from core.common.errors import CoreError

TOP_K = 5
FULL_PROBS_MAX_CLASSES = 100
FILE_FORMAT = 1
_META_KEY = b"studio.predictions"


class PredictionsError(CoreError):
    """No predictions can be made or read for a run's split (no checkpoint, no such images, a damaged file)."""


@dataclass
class StoredPredictions:
    """One split's predictions: the table, the class order, where they came from, and the full probabilities
    (N x classes, kept up to ``FULL_PROBS_MAX_CLASSES`` classes; None beyond)."""

    frame: pd.DataFrame
    classes: list[str]
    split: str
    meta: dict[str, Any] = field(default_factory=dict)  # epoch, made ("at the end of training" / "later, ...")
    probs: np.ndarray | None = None

    @property
    def full_probs(self) -> np.ndarray | None:
        """N x classes probabilities (float64) when kept, else None."""
        return None if self.probs is None or not len(self.frame) else self.probs.astype(np.float64)


def predictions_file(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}_predictions.parquet"


def from_probabilities(paths: Sequence[str], targets: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                       split: str = "test", **meta: Any) -> StoredPredictions:  # fmt: skip
    """The stored form of softmax ``probs`` (N x C) for images ``paths`` whose true class indices are ``targets``."""
    probs = np.asarray(probs, dtype=np.float32)
    frame = predictions_frame(paths, targets, probs, classes)
    kept = probs if len(classes) <= FULL_PROBS_MAX_CLASSES else None
    return StoredPredictions(frame, [str(c) for c in classes], split, meta, kept)


def predictions_frame(paths: Sequence[str], targets: np.ndarray, probs: np.ndarray,
                      classes: Sequence[str]) -> pd.DataFrame:  # fmt: skip
    """The table for images ``paths`` with true class indices ``targets`` and softmax ``probs`` (N x C)."""
    probs = np.asarray(probs, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    n, n_classes = probs.shape if probs.ndim == 2 else (0, len(classes))
    names = np.asarray([str(c) for c in classes] + [""], dtype=object)  # index -1: no such class
    # Stable sort of the negated probabilities: ties keep the lower class index first, as argmax does.
    order = np.argsort(-probs, axis=1, kind="stable")[:, :TOP_K] if n else np.zeros((0, 0), np.int64)
    frame = pd.DataFrame({"image": [str(p) for p in paths], "label": names[targets] if n else [],
                          "target": targets})  # fmt: skip
    for k in range(TOP_K):
        has = k < n_classes
        frame[f"pred{k + 1}"] = names[order[:, k]] if has else ""
        frame[f"p{k + 1}"] = np.take_along_axis(probs, order[:, k : k + 1], 1)[:, 0] if has else np.nan
    hits = order == targets[:, None]
    frame["rank"] = np.where(hits.any(1), hits.argmax(1) + 1, 0) if n else np.zeros(0, np.int64)
    p_true = probs[np.arange(n), targets].astype(np.float64) if n else np.zeros(0)
    frame["p_true"] = p_true
    frame["loss"] = -np.log(np.clip(p_true, np.finfo(np.float64).eps, 1.0))
    return frame


def write_predictions(path: Path, stored: StoredPredictions) -> Path:
    """Write ``stored`` atomically as one parquet file, with the class order, the split and ``meta`` inside."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(stored.frame, preserve_index=False)
    if stored.probs is not None:
        flat = pa.array(np.ascontiguousarray(stored.probs, dtype=np.float32).ravel())
        table = table.append_column("probs", pa.FixedSizeListArray.from_arrays(flat, len(stored.classes)))
    doc = {"format": FILE_FORMAT, "classes": stored.classes, "split": stored.split, **stored.meta}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(doc).encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    write_atomic(Path(path), buffer.getvalue())
    return Path(path)


def read_predictions(path: Path) -> StoredPredictions:
    """What :func:`write_predictions` wrote.

    Raises:
        PredictionsError: the file is missing, damaged or not a predictions file.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
        doc = json.loads((table.schema.metadata or {})[_META_KEY])
    except (OSError, KeyError, ValueError) as exc:  # pyarrow's errors subclass these
        raise PredictionsError(f"{path.name} cannot be read as stored predictions ({type(exc).__name__})") from exc
    if doc.get("format") != FILE_FORMAT:
        raise PredictionsError(f"{path.name} has predictions format {doc.get('format')!r}; this version reads "
                               f"{FILE_FORMAT}")  # fmt: skip
    classes = list(doc["classes"])
    probs = None
    if "probs" in table.column_names:  # one N x C array straight from arrow's buffer (no per-row objects)
        probs = table.column("probs").combine_chunks().values.to_numpy().reshape(-1, len(classes))
        table = table.drop_columns(["probs"])
    meta = {k: v for k, v in doc.items() if k not in ("format", "classes", "split")}
    return StoredPredictions(table.to_pandas(), classes, str(doc["split"]), meta, probs)


# ---------------------------------------------------------------------------------------------------
# Predicting a split from the best checkpoint (runs finished before predictions were kept, or --split val)


def predict_split(checkpoint: Path, dataset: str, splits: pd.DataFrame, split: str,
                  ws: Any) -> StoredPredictions:  # fmt: skip
    """The predictions of ``split``'s images (rows of the run's stored ``splits``) by ``checkpoint``.

    The images are decoded as training decoded them (``core.train.tensors``, from the workspace's cache when the
    run left one) and run through the model in eval mode (``core.train.loop.evaluate``), so the numbers are
    those the run itself would have stored. Images whose class the model does not know are left out.

    Raises:
        PredictionsError: no image of ``split`` can be read.
    """
    import torch

    from core.datasets.sources import resolve_dataset
    from core.train.batches import Batches
    from core.train.checkpoints import load_for_inference
    from core.train.loop import evaluate
    from core.train.tensors import load_tensors

    model = load_for_inference(checkpoint)
    index_of = {c: i for i, c in enumerate(model.classes)}
    rows = splits[(splits["split"] == split) & splits["label"].isin(index_of)]
    if rows.empty:
        raise PredictionsError(f"the run has no {split} images of the classes its model knows")
    ref = resolve_dataset(dataset, ws)
    tensors = load_tensors(ref.root, list(rows["path"]), model.image_size, cache_dir=ws.cache, in_place=True)
    if not tensors.paths:
        raise PredictionsError(f"none of the run's {len(rows)} {split} images can be read any more")
    label_of = dict(zip(rows["path"], rows["label"], strict=True))
    labels = torch.tensor([index_of[label_of[p]] for p in tensors.paths], dtype=torch.long)
    batches = Batches(tensors.images, tensors.spread(labels), tensors.positions, batch_size=128, mean=model.mean,
                      std=model.std, device=model.device)  # fmt: skip
    out = evaluate(model.model, batches, keep_predictions=True)
    return from_probabilities(tensors.paths, out["targets"], out["probs"], model.classes, split,
                              epoch=model.info.get("epoch"), made="later, from best.pt")  # fmt: skip
