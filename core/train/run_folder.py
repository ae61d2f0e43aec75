"""What a run keeps in the workspace, and the rules for touching it: ``checkpoints/run-<id>/`` with ``last.pt`` and
``best.pt`` (state dicts, written atomically), ``splits.csv`` (the split, made once: a resumed run trains on exactly
the same images) and ``test_predictions.parquet``; where each lives, how a run's files are deleted, and the
half-written files a killed process leaves behind.

Nothing here deletes what a live job or process may still write: the store refuses to delete a queued or running
run, and the processes of a distributed run say they live through their lock (``core.train.lifeline``).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pandas as pd

from core.common.atomic import PARTIAL_SUFFIX, write_atomic
from core.common.errors import RunStoreError
from core.common.words import SPLITS
from core.common.workspace import Workspace
from core.store.records import ACTIVE_STATUSES
from core.store.runs import RunStore
from core.train.lifeline import processes_alive

SPLIT_NAMES = SPLITS  # the one list (core.common.words)
SPLITS_FILE = "splits.csv"


def run_dir(ws: Workspace, run_id: int) -> Path:
    return ws.checkpoints / f"run-{run_id}"


def checkpoint_path(ws: Workspace, run_id: int, kind: str = "best") -> Path:
    """``kind`` is ``best`` (by the run's chosen metric) or ``last`` (where it stopped, mid-epoch after a cancel)."""
    return run_dir(ws, run_id) / f"{kind}.pt"


def delete_run(store: RunStore, ws: Workspace, run_id: int) -> None:
    """Delete the run's record, metrics and its checkpoint folder (only ever inside the workspace).

    Raises:
        RunStoreError: unknown run, a queued or running one (``RunStore.delete_run``), or one whose distributed
            processes still live on this machine (they would write into a folder that is gone).
    """
    folder = run_dir(ws, run_id)
    if processes_alive(folder):
        raise RunStoreError(f"run {run_id} still has processes training on this machine; delete it once they have "
                            "stopped")  # fmt: skip
    store.delete_run(run_id)
    if folder.is_dir() and folder.resolve().is_relative_to(ws.checkpoints.resolve()):
        shutil.rmtree(folder, ignore_errors=True)


def remove_partials(folder: Path) -> int:
    """Delete writes a killed process left half done (``.last.pt.<random>.partial``, tens of MB each); returns how
    many. Call it only where no job or process of the run can be writing (its own job, as it starts)."""
    removed = 0
    for leftover in folder.glob(f".*{PARTIAL_SUFFIX}"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            removed += 1
    return removed


def remove_stale_partials(ws: Workspace, store: RunStore) -> int:
    """Delete the half-written files of every run that nothing is writing (queued and running runs, and runs
    whose processes still live, keep theirs); returns how many went. A kill during a run's first checkpoint
    leaves one that the run's own job never gets to remove (with no ``last.pt`` it cannot resume): the dashboard
    and ``train`` sweep them as they start."""
    removed = 0
    for folder in ws.checkpoints.glob("run-*"):
        run_id = folder.name.removeprefix("run-")
        if not run_id.isdecimal() or _is_active(store, int(run_id)) or processes_alive(folder):
            continue
        removed += remove_partials(folder)
    return removed


def _is_active(store: RunStore, run_id: int) -> bool:
    try:
        return store.get_run(run_id).status in ACTIVE_STATUSES
    except RunStoreError:  # a folder whose run was deleted from the store: no job of it is left
        return False


def split_sizes(store: RunStore, ws: Workspace | None, run_id: int) -> dict[str, int]:
    """Images per split of a run: as it recorded them when it started, else (a run from before they were
    recorded) counted from its ``splits.csv``; empty when neither exists yet."""
    params = store.params(run_id)
    if all(f"n_{s}" in params for s in SPLIT_NAMES):
        return {s: int(params[f"n_{s}"]) for s in SPLIT_NAMES}
    frame = load_splits(run_dir(ws, run_id)) if ws is not None else None
    return {s: int((frame["split"] == s).sum()) for s in SPLIT_NAMES} if frame is not None else {}


def save_splits(folder: Path, splits: pd.DataFrame) -> Path:
    write_atomic(folder / SPLITS_FILE, splits.to_csv(index=False))
    return folder / SPLITS_FILE


def run_splits(ws: Workspace, run_id: int) -> pd.DataFrame | None:
    """The run's stored ``path, label, split`` rows (``splits.csv``), or None when it has none."""
    return load_splits(run_dir(ws, run_id))


def load_splits(folder: Path) -> pd.DataFrame | None:
    file = folder / SPLITS_FILE
    return pd.read_csv(file, dtype=str, keep_default_na=False) if file.is_file() else None
