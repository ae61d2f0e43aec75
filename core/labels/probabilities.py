"""Out-of-sample predicted probabilities: for every labelled image of a dataset, the class probabilities given by a
model that never saw that image (the input confident learning needs), and where they are kept.

They are stored per (dataset, run, mode) under ``<workspace>/cache/labels/`` as one ``.npz`` (the arrays, and the
names as UTF-8 JSON inside it: no pickle, so a file someone else left in the cache cannot run code), written
atomically, so a page that asks a second time opens at once.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.common.atomic import write_atomic
from core.common.errors import CoreError
from core.common.workspace import Workspace

MODES = ("quick", "thorough")
# Bump when the stored layout or meaning changes: older files are then ignored (they are made again). 2: thorough
# probabilities are stored after the temperature that undoes label smoothing (``core.labels.temperature``).
FORMAT = 2


class LabelIssuesError(CoreError):
    """Label issues cannot be looked for as asked (no trained run, too few images of a class, ...)."""


@dataclass
class OutOfSample:
    """Out-of-sample predicted probabilities for every labelled image of a dataset."""

    dataset: str  # the dataset's spec (DatasetRef.spec)
    run_id: int  # the run whose network (quick) or settings (thorough) made them
    mode: str  # "quick" | "thorough"
    folds: int
    classes: list[str]  # column order of probs (the run's classes)
    paths: list[str]  # image paths relative to the dataset root, as in the run's splits.csv / the scan manifest
    given: list[str]  # the label each image carries
    probs: np.ndarray  # (n, len(classes)) float32, rows sum to 1; row i predicted by a model that never saw image i
    fold_of: np.ndarray  # (n,) int, the fold each image was held out in
    fold_runs: list[int]  # thorough: the run id of each fold's training; quick: []
    # Labelled images that got no probabilities, each with why (unreadable, a class too small to hold out):
    # listed, never silently lost. Dicts of {"path", "reason"}.
    left_out: list[dict[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # how long each part took (quick: features, regression)
    temperature: float = 1.0  # what ``probs`` were scaled by (thorough, to undo label smoothing); 1: as predicted

    def __post_init__(self) -> None:
        self.probs = np.asarray(self.probs, dtype=np.float32)
        self.fold_of = np.asarray(self.fold_of, dtype=np.int64)
        n, k = len(self.paths), len(self.classes)
        if self.probs.shape != (n, k) or len(self.given) != n or self.fold_of.shape != (n,):
            raise ValueError(f"out-of-sample shapes disagree: probs {self.probs.shape}, {n} paths, "
                             f"{len(self.given)} labels, {k} classes, fold_of {self.fold_of.shape}")  # fmt: skip
        unknown = sorted(set(self.given) - set(self.classes))
        if unknown:
            raise ValueError(f"labels outside the classes: {unknown[:5]}")

    @property
    def labels(self) -> np.ndarray:
        """The given labels as column indices of ``probs``."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.fromiter((index[g] for g in self.given), dtype=np.int64, count=len(self.given))


def out_of_sample_file(ws: Workspace, dataset: str, run_id: int, mode: str) -> Path:
    """Where the probabilities of (``dataset``, ``run_id``, ``mode``) are kept (the spec hashed: it holds paths)."""
    return ws.cache / "labels" / f"{_dataset_key(dataset)}-run{int(run_id)}-{mode}.npz"


def stored_checks(ws: Workspace, dataset: str) -> list[tuple[int, str, Path]]:
    """(run id, mode, file) of every check kept for ``dataset``, newest first (a thorough one first among equals)."""
    key = _dataset_key(dataset)
    found = []
    for path in (ws.cache / "labels").glob(f"{key}-run*-*.npz"):
        run_part, _, mode = path.stem.removeprefix(f"{key}-run").partition("-")
        if mode in MODES and run_part.isdigit():
            found.append((int(run_part), mode, path))
    return sorted(found, key=lambda f: (f[2].stat().st_mtime_ns, f[1] == "thorough"), reverse=True)


def _dataset_key(dataset: str) -> str:
    return hashlib.sha1(dataset.encode()).hexdigest()[:16]


def save_out_of_sample(ws: Workspace, oos: OutOfSample) -> Path:
    """Keep ``oos`` (atomically; an earlier result of the same dataset, run and mode is replaced)."""
    meta = {"format": FORMAT, "dataset": oos.dataset, "run_id": oos.run_id, "mode": oos.mode, "folds": oos.folds,
            "classes": oos.classes, "paths": oos.paths, "given": oos.given, "fold_runs": oos.fold_runs,
            "left_out": oos.left_out, "seconds": oos.seconds, "temperature": oos.temperature}  # fmt: skip
    buffer = io.BytesIO()
    np.savez_compressed(buffer, probs=oos.probs, fold_of=oos.fold_of,
                        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))  # fmt: skip
    target = out_of_sample_file(ws, oos.dataset, oos.run_id, oos.mode)
    write_atomic(target, buffer.getvalue())
    return target


def load_out_of_sample(ws: Workspace, dataset: str, run_id: int, mode: str) -> OutOfSample | None:
    """The kept probabilities of (``dataset``, ``run_id``, ``mode``); None when there are none, or the file is
    damaged or of an older layout (they are made again, never half read)."""
    path = out_of_sample_file(ws, dataset, run_id, mode)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(saved["meta"].tobytes().decode())
            probs, fold_of = saved["probs"], saved["fold_of"]
        if meta.get("format") != FORMAT or meta["dataset"] != dataset or meta["run_id"] != run_id:
            return None  # another layout, or (a hash collision) another dataset's file
        return OutOfSample(meta["dataset"], int(meta["run_id"]), meta["mode"], int(meta["folds"]), meta["classes"],
                           meta["paths"], meta["given"], probs, fold_of, [int(r) for r in meta["fold_runs"]],
                           meta.get("left_out", []), meta.get("seconds", {}), float(meta.get("temperature", 1.0)))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
