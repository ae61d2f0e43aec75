"""The comparison table of runs: the table the reports built by hand (CIFAR: LeNet / ResNet-34 / MobileNetV2 x SGD /
Adam / Adadelta at two rates), for any set of stored runs, and how the runs are related.

One row per run, numbers kept as numbers (the page formats them, sorts them, and writes them to CSV):
architecture, optimizer, learning rate, images per step, epochs trained, frozen layers, input size, augmentation,
best validation accuracy, test accuracy, the test accuracy without the test images that have a copy among the
run's training images (``core.evaluate.leakage``: the whale report's 0.99 against 0.44), time and training images
per second. The settings are what the run actually used: its plan, every automatic choice decided
(``core.train.checkpoints.stored_plan``, which reads older runs' records too); a run without one (queued before its
data could be read) shows its settings as given, automatic ones empty. The epochs are the run's ``epochs_trained``
(``core.train.runner.epochs_trained``). Related runs are named: a search's trials (``search 12 · trial 3``), and a child started from another
run's weights (``from run 5``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.common.errors import check_choice
from core.common.words import metric_word
from core.common.workspace import Workspace
from core.evaluate.leakage import LEAK_CHECKS
from core.store.records import RunRecord
from core.store.runs import RunStore
from core.train.config import label_of

# Column -> what a person calls it (the page's headers and the CSV's): the settings by the Train page's names, the
# scores by the names the Evaluate page and the report give them.
COLUMNS = {
    "run_id": "Run", "name": "Name", "status": "Status", "family": "Part of", "dataset": "Dataset",
    **{k: label_of(k) for k in ("arch", "optimizer", "lr", "batch_size")}, "epochs": "Epochs trained",
    **{k: label_of(k) for k in ("freeze", "image_size", "augment")},
    **{k: metric_word(k) for k in ("best_val_acc", "test_accuracy", "test_accuracy_clean")},
    "n_leaking": "Leaking test images", "wall_s": "Time (s)", "images_per_s": "Training images per second",
}  # fmt: skip
SETTINGS = ("optimizer", "lr", "batch_size", "freeze", "image_size", "augment")
RESULTS = ("best_val_acc", "test_accuracy", "test_accuracy_clean", "wall_s", "images_per_s")


def compare_table(store: RunStore, ws: Workspace, runs: list[RunRecord], *, leaks: str = "cached") -> pd.DataFrame:
    """The comparison rows of ``runs`` (training runs), in the given order; unknown values are NaN or None.

    Args:
        leaks: ``cached`` checks test images for copies in train only where the dataset's fingerprints are cached
            (a page must not start a pass over every image by itself), ``compute`` fingerprints them (once per
            dataset, cached), ``skip`` never checks.
    """
    columns = [*COLUMNS, "parent_id", "search_id", "trial"]
    if not runs:
        return pd.DataFrame(columns=columns)
    ids = [r.run_id for r in runs]
    frame = store.metrics(ids, ["val_acc", "images_per_s", "test_accuracy"])
    honest = _honest_scores(store, ws, runs, leaks)
    rows = [_row(store, ws, run, frame[frame["run_id"] == run.run_id], honest.get(run.run_id)) for run in runs]
    return pd.DataFrame(rows, columns=columns)


def _row(store: RunStore, ws: Workspace, run: RunRecord, metrics: pd.DataFrame,
         honest: tuple[float | None, int] | None) -> dict:  # fmt: skip
    from core.train.checkpoints import stored_plan
    from core.train.runner import epochs_trained

    params = store.params(run.run_id)
    plan = stored_plan(store, ws, run)
    settings = plan.settings.to_dict() if plan is not None else run.config
    values = {k: metrics.loc[metrics["key"] == k, "value"].dropna() for k in ("val_acc", "images_per_s")}
    test = metrics.loc[metrics["key"] == "test_accuracy", "value"].dropna()
    return {
        "run_id": run.run_id, "name": run.name, "status": _status(run, params), "family": family(run, params),
        "dataset": run.dataset, "arch": run.arch or _given(settings.get("arch")),
        **{k: _given(settings.get(k)) for k in SETTINGS},
        "epochs": epochs_trained(store, run.run_id) or None,
        "best_val_acc": values["val_acc"].max() if len(values["val_acc"]) else np.nan,
        "test_accuracy": float(test.iloc[-1]) if len(test) else np.nan,
        "test_accuracy_clean": _clean(honest), "n_leaking": honest[1] if honest else None,
        "wall_s": run.wall_s, "images_per_s": values["images_per_s"].median() if len(values["images_per_s"]) else np.nan,
        "parent_id": run.parent_id, "search_id": run.in_group("search"), "trial": params.get("search_trial"),
    }  # fmt: skip


def _given(value: Any) -> Any:
    """A setting as given: 0 and ``auto`` mean "chosen when the run starts", shown empty for old runs."""
    return None if value in (0, 0.0, "auto", None) else value


def _clean(honest: tuple[float | None, int] | None) -> float:
    return honest[0] if honest is not None and honest[0] is not None else np.nan


def _status(run: RunRecord, params: dict) -> str:
    return "pruned" if run.status == "cancelled" and params.get("search_outcome") == "pruned" else run.status


def family(run: RunRecord, params: dict | None = None) -> str:
    """How a run is related to others, in words: ``search 12 · trial 3``, ``from run 5``, both, or ""."""
    parts = []
    search = run.in_group("search")
    if search is not None:
        trial = (params or {}).get("search_trial")
        parts.append(f"search {search}" + (f" · trial {trial + 1}" if isinstance(trial, int) else ""))
    parent = run.config.get("from_run") or (run.parent_id if search is None else None)
    if parent:
        parts.append(f"from run {parent}")
    return " · ".join(parts)


def _honest_scores(store: RunStore, ws: Workspace, runs: list[RunRecord], mode: str) -> dict[int, tuple]:
    """run id -> (test accuracy without leaking images or None, leaking images) for the completed runs with stored
    test predictions whose leak check ``mode`` allows; the duplicate groups are found once per dataset."""
    from core.train.predictions import predictions_file
    from core.train.run_folder import run_dir

    check_choice("leaks", mode, LEAK_CHECKS)
    out: dict[int, tuple] = {}
    groups: dict[str, pd.DataFrame | None] = {}
    for run in runs:
        file = predictions_file(run_dir(ws, run.run_id), "test")
        if mode == "skip" or run.status != "completed" or not file.is_file():
            continue
        if run.dataset not in groups:
            groups[run.dataset] = _duplicate_groups(ws, run.dataset, mode)
        if groups[run.dataset] is not None:
            out[run.run_id] = _honest(ws, run, file, groups[run.dataset])
    return out


def _duplicate_groups(ws: Workspace, dataset: str, mode: str) -> pd.DataFrame | None:
    """The dataset's duplicate groups (group, path), or None when it is gone or (``cached``) not fingerprinted."""
    from core.common.errors import CoreError
    from core.datasets.sources import resolve_dataset
    from core.dedup.groups import DedupConfig, find_duplicates
    from core.evaluate.leakage import fingerprints_ready

    if mode == "cached" and not fingerprints_ready(ws, dataset):
        return None
    try:
        return find_duplicates(resolve_dataset(dataset, ws), ws.cache, DedupConfig()).members[["group", "path"]]
    except CoreError:  # the dataset moved or was deleted: its runs are compared without the check
        return None


def _honest(ws: Workspace, run: RunRecord, file: Any, members: pd.DataFrame) -> tuple[float | None, int] | None:
    from core.evaluate.leakage import honest_score, leaks_from_groups
    from core.train.predictions import read_predictions
    from core.train.run_folder import run_splits

    splits = run_splits(ws, run.run_id)
    if splits is None:
        return None
    score = honest_score(read_predictions(file).frame, leaks_from_groups(members, splits, "test"))
    return score.accuracy_clean, score.n_leaking


def checkable_datasets(ws: Workspace, runs: list[RunRecord]) -> list[str]:
    """The datasets of completed ``runs`` whose test images have not been checked for copies (no fingerprints)."""
    from core.evaluate.leakage import fingerprints_ready

    datasets = dict.fromkeys(r.dataset for r in runs if r.status == "completed")
    return [d for d in datasets if not fingerprints_ready(ws, d)]
