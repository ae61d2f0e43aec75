"""Thorough out-of-sample probabilities: K-fold cross-training, each fold an ordinary training run.

Every labelled image of the dataset is dealt into one of K folds (stratified and seeded: ``core.labels.folds``). Fold
k is an ordinary CSV dataset written beside the label check's record (``checkpoints/run-<group>/label-check-folds/
fold-<k>-of-<K>.csv``, columns ``image,label,split``, the images read from the dataset's own folder): its ``test``
rows are the held-out fold, every other image is ``train``, and the run carves its validation images out of those
as any run does (``core.train.splits`` keeps a CSV's split column). So a fold's network never sees its test images,
and the run's own end-of-training predictions of its test split (``test_predictions.parquet``) are the held-out
probabilities, scaled by the one temperature that undoes the recipe's label smoothing
(``core.labels.temperature``: squeezed below ~0.91, the folds' answers made confident learning count fewer wrong labels
than there were).

Why every labelled image, the run's test images included, rather than its training images only: a wrong label among
the test images misleads a score most, and the Evaluate page asks which of its mistakes are suspects.

Each fold trains with the chosen run's plan (``stored_plan``: every automatic choice as that run decided it), from a
fresh network: a run that started from another run's weights (``from_run``) gets a fresh network of the same kind,
since those weights may have seen the held-out images.

In the run store the label check is a run of kind ``label-check`` (its config the :class:`ThoroughSpec`, its parent
the chosen run): ``running`` while a thread of the process that queued it watches its folds, then ``completed``
(the probabilities collected and saved), ``cancelled`` or ``failed``; ``crashed`` when that process died. Its folds
are training runs on the job registry in group ``labels-<id>`` (as a search's trials are in ``search-<id>``), with
the param ``label_fold`` (0-based). Cancel and resume act on the folds: a stopped fold continues from its checkpoint
(same run), one that never started is queued again.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from core.common.atomic import write_atomic
from core.common.errors import CoreError, RunStoreError
from core.common.workspace import Workspace
from core.datasets.sources import DatasetRef
from core.labels.folds import FOLD_SEED, fold_tables, gather, labelled_images
from core.labels.probabilities import LabelIssuesError, OutOfSample, load_out_of_sample, save_out_of_sample
from core.labels.temperature import undo_smoothing
from core.store.records import ACTIVE_STATUSES, RunRecord
from core.store.runs import RunStore
from core.train.jobs import JobRegistry
from core.train.run_folder import checkpoint_path, run_dir

RUN_KIND = "label-check"  # the label check's own record (``runs`` prints "(label-check)")
GROUP_KIND = "labels"  # its folds' group: "labels-<id>", the form RunGroup prints
FOLD_PARAM = "label_fold"  # a fold run's param: which fold (0-based) it holds out
DEFAULT_FOLDS = 5
MAX_FOLDS = 20  # each fold is a whole training run
POLL_S = 0.5  # how often the watching thread reads its folds' statuses
FOLDS_FOLDER = "label-check-folds"
_DRIVERS: dict[tuple[str, int], threading.Thread] = {}
_DRIVERS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ThoroughSpec:
    """One label check: the dataset (its spec), the run whose settings every fold trains with, K, the fold seed."""

    dataset: str
    run_id: int
    folds: int = DEFAULT_FOLDS
    seed: int = FOLD_SEED

    @classmethod
    def from_dict(cls, values: dict) -> ThoroughSpec:
        return cls(str(values["dataset"]), int(values["run_id"]), int(values["folds"]), int(values["seed"]))


def thorough_group(group: int) -> str:
    """The run-store group of a label check's fold runs: ``labels-12``."""
    return f"{GROUP_KIND}-{int(group)}"


# ---------------------------------------------------------------------------------------------------
# Queueing, watching, cancelling, resuming


def _check(ws: Workspace, store: RunStore, ref: DatasetRef, run_id: int, folds: int) -> tuple:
    """The run's plan, the fold tables and the files left out; LabelIssuesError in words when it cannot be done."""
    from core.train.checkpoints import stored_plan

    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= MAX_FOLDS:
        raise LabelIssuesError(f"folds {folds!r}: expected a whole number from 2 to {MAX_FOLDS}")
    plan = stored_plan(store, ws, store.get_run(run_id))
    if plan is None:
        raise LabelIssuesError(f"run {run_id} has no settings to train with yet (it has not started)")
    table, unreadable = labelled_images(ref, ws)
    if table["label"].nunique() < 2:
        raise LabelIssuesError("label issues need labelled images of at least two classes")
    tables, alone = fold_tables(table, folds, FOLD_SEED)
    if min((t["split"] == "test").sum() for t in tables) == 0:
        raise LabelIssuesError(f"{len(table) - len(alone)} images cannot fill {folds} folds; choose fewer folds")
    return plan, tables, unreadable + alone


def submit_thorough(registry: JobRegistry, ws: Workspace, store: RunStore, dataset_ref: DatasetRef, run_id: int,
                    folds: int = DEFAULT_FOLDS) -> int:  # fmt: skip
    """Queue a label check: ``folds`` training runs with run ``run_id``'s settings on ``dataset_ref``'s images, each
    holding one fold out; returns the label check's id (its group) at once. A thread of this process watches the
    folds and saves the probabilities when the last one completes (:func:`collect_thorough`).

    Raises:
        LabelIssuesError: bad ``folds``, a run with no settings yet, too few images. RunStoreError: no such run.
        RunTooBigError: a fold does not fit this machine (nothing stays queued then).
    """
    plan, tables, left_out = _check(ws, store, dataset_ref, run_id, folds)
    spec = ThoroughSpec(dataset_ref.spec, run_id, folds, FOLD_SEED)
    group = store.create_run(dataset=spec.dataset, kind=RUN_KIND, config=asdict(spec), parent_id=run_id)
    store.log_params(group, {"left_out": left_out})
    try:
        bases = [_write_fold(ws, dataset_ref, group, k, folds, t) for k, t in enumerate(tables)]
        config = replace(plan.config, from_run=0)  # a fresh network: the run's parent may have seen any image
        store.log_params(group, {"fold_plan": replace(plan, config=config).to_dict(), "fold_datasets": bases})
        for k in range(folds):
            _submit_fold(registry, ws, store, group, k)
    except BaseException as exc:
        cancel_thorough(registry, store, group)
        store.set_status(group, "failed", error=str(exc) if isinstance(exc, CoreError) else type(exc).__name__)
        raise
    _watch(ws, store, group)
    return group


def _write_fold(ws: Workspace, ref: DatasetRef, group: int, k: int, folds: int, table: pd.DataFrame) -> str:
    """Write fold ``k``'s CSV; returns its dataset spec (the images are read from ``ref``'s own folder)."""
    from core.datasets.sources import csv_ref

    path = run_dir(ws, group) / FOLDS_FOLDER / f"fold-{k + 1}-of-{folds}.csv"
    write_atomic(path, table.to_csv(index=False, lineterminator="\n"))
    return csv_ref(path, ws, images=ref.root).spec


def _submit_fold(registry: JobRegistry, ws: Workspace, store: RunStore, group: int, k: int) -> int:
    from core.train.runner import submit_training
    from core.train.runplan import RunPlan

    params = store.params(group)
    base = RunPlan.from_dict(params["fold_plan"])
    plan = replace(base, config=replace(base.config, dataset=params["fold_datasets"][k]))
    run_id = submit_training(registry, ws, plan, group=thorough_group(group))
    store.log_params(run_id, {FOLD_PARAM: k})
    store.describe(run_id, name=f"label check {group}, fold {k + 1} of {len(params['fold_datasets'])}")
    return run_id


def fold_runs(store: RunStore, group: int) -> dict[int, RunRecord]:
    """Fold -> its training run (the newest, should a fold have been queued again)."""
    found: dict[int, RunRecord] = {}
    for run in sorted(store.list_runs(kind="train", group=thorough_group(group)), key=lambda r: r.run_id):
        fold = store.params(run.run_id).get(FOLD_PARAM)
        if isinstance(fold, int):
            found[fold] = run
    return found


def thorough_spec(store: RunStore, group: int) -> ThoroughSpec:
    """The label check's spec. Raises RunStoreError: no such run, or not a label check."""
    run = store.get_run(group)
    if run.kind != RUN_KIND:
        raise RunStoreError(f"run {group} is a {run.kind} run, not a label check")
    return ThoroughSpec.from_dict(run.config)


def thorough_progress(store: RunStore, group: int) -> tuple[int, int, int]:
    """(folds completed, folds in all, folds that stopped without completing: failed, cancelled or crashed)."""
    spec = thorough_spec(store, group)
    runs = fold_runs(store, group).values()
    done = sum(r.status == "completed" for r in runs)
    stopped = sum(r.status not in (*ACTIVE_STATUSES, "completed") for r in runs)
    return done, spec.folds, stopped


def find_thorough(store: RunStore, dataset: str, run_id: int) -> int | None:
    """The newest label check of ``dataset`` (a spec) with run ``run_id``'s settings; None when there is none."""
    for run in store.list_runs(kind=RUN_KIND):  # newest first
        if run.config.get("dataset") == dataset and run.config.get("run_id") == run_id:
            return run.run_id
    return None


def cancel_thorough(registry: JobRegistry, store: RunStore, group: int) -> int:
    """Cancel the label check's queued and running folds (a running one keeps its checkpoint, so it can be resumed);
    returns how many were asked to stop. Folds another process trains are that process's to stop."""
    return sum(registry.cancel(run.run_id) for run in fold_runs(store, group).values() if run.status in ACTIVE_STATUSES)


def resume_thorough(registry: JobRegistry, ws: Workspace, store: RunStore, group: int) -> list[int]:
    """Continue a label check's stopped folds: each from its checkpoint (same run), a fold that never started (or
    whose run was deleted) queued again; returns the fold runs queued. Its other folds may still be training (one
    was cancelled on the Runs page); a label check nobody watches any more is watched again.

    Raises:
        RunStoreError: not a label check, or one already completed. RunTooBigError: a fold no longer fits.
    """
    from core.train.run_folder import delete_run
    from core.train.runner import RESUMABLE, resume_training

    spec, record = thorough_spec(store, group), store.get_run(group)
    if record.status == "completed":
        raise RunStoreError(f"label check {group} is completed; there is nothing to resume")
    runs, queued = fold_runs(store, group), []
    for k in range(spec.folds):
        run = runs.get(k)
        if run is not None and run.status in (*ACTIVE_STATUSES, "completed"):
            continue
        if run is not None and run.status in RESUMABLE and checkpoint_path(ws, run.run_id, "last").is_file():
            resume_training(registry, ws, run.run_id)
            queued.append(run.run_id)
            continue
        if run is not None:  # stopped before its first epoch: nothing to continue from
            delete_run(store, ws, run.run_id)
        queued.append(_submit_fold(registry, ws, store, group, k))
    # Watched already (here, or by the live process that queued it): that thread sees the folds queued again.
    if not _driven(store, group) and store.get_run(group).status not in ACTIVE_STATUSES:
        store.set_status(group, "queued")
        _watch(ws, store, group)
    return queued


def _watch(ws: Workspace, store: RunStore, group: int) -> None:
    """Start the thread that owns the label check's record while its folds train."""
    thread = threading.Thread(target=_drive, args=(ws, store, group), name=f"studio-labels-{group}", daemon=True)
    with _DRIVERS_LOCK:
        _DRIVERS[(str(store.path.resolve()), group)] = thread
    thread.start()


def _driven(store: RunStore, group: int) -> bool:
    with _DRIVERS_LOCK:
        thread = _DRIVERS.get((str(store.path.resolve()), group))
    return thread is not None and thread.is_alive()


def _drive(ws: Workspace, store: RunStore, group: int) -> None:
    status, error = "failed", None
    try:
        store.start_run(group)  # this thread owns the record: if the process dies, the label check is crashed
        spec = thorough_spec(store, group)
        runs = fold_runs(store, group)
        while any(r.status in ACTIVE_STATUSES for r in runs.values()):
            store.heartbeat(group)
            time.sleep(POLL_S)
            runs = fold_runs(store, group)
        status, error = _ending(runs, spec.folds)
        if status == "completed" and _collect(ws, store, group) is None:
            status, error = "failed", "a fold's run was deleted before its probabilities were collected"
    except CoreError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - the label check must end recorded, whatever broke
        error = f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(RunStoreError):
            store.finish_run(group, status, error=error)


def _ending(runs: dict[int, RunRecord], folds: int) -> tuple[str, str | None]:
    """How the label check ended once none of its folds is active: completed, failed (a fold failed, crashed or is
    missing, named) or cancelled."""
    broken = [f"fold {k + 1} (run {r.run_id}) {r.status}" + (f": {r.error}" if r.error else "")
              for k, r in sorted(runs.items()) if r.status in ("failed", "crashed")]  # fmt: skip
    missing = [f"fold {k + 1} has no run" for k in range(folds) if k not in runs]
    if broken or missing:
        return "failed", "; ".join(broken + missing)
    if all(r.status == "completed" for r in runs.values()):
        return "completed", None
    return "cancelled", None


def wait_thorough(store: RunStore, group: int, timeout: float | None = None) -> bool:
    """Block until this process's watching thread of the label check has ended; False on timeout."""
    with _DRIVERS_LOCK:
        thread = _DRIVERS.get((str(store.path.resolve()), group))
    if thread is not None:
        thread.join(timeout)
        return not thread.is_alive()
    return True


def thorough_and_wait(ws: Workspace, store: RunStore, dataset_ref: DatasetRef, run_id: int,
                      folds: int = DEFAULT_FOLDS, on_wait: Callable[[int], None] | None = None) -> OutOfSample:  # fmt: skip
    """:func:`submit_thorough`, its folds trained in this process and waited for (the command line); Ctrl-C cancels
    the folds as the page's Cancel does. ``on_wait(group)`` is called about once a second.

    Raises:
        LabelIssuesError: a fold did not complete (why, in words), and what submit_thorough raises.
    """
    registry = JobRegistry(store)
    group = submit_thorough(registry, ws, store, dataset_ref, run_id, folds)
    try:
        while not wait_thorough(store, group, 1.0):
            if on_wait is not None:
                on_wait(group)
    except KeyboardInterrupt:
        cancel_thorough(registry, store, group)
        wait_thorough(store, group)
    found = collect_thorough(ws, store, group)
    if found is None:
        record = store.get_run(group)
        raise LabelIssuesError(f"label check {group} ended {record.status}" + (f": {record.error}" if record.error
                                                                                else "; resume it to finish"))  # fmt: skip
    return found


# ---------------------------------------------------------------------------------------------------
# Collecting the held-out probabilities


def collect_thorough(ws: Workspace, store: RunStore, group: int) -> OutOfSample | None:
    """The label check's out-of-sample probabilities once every fold completed (saved, and read back from the cache
    the next time); None while a fold is queued, training or stopped. A label check whose folds were resumed one by
    one is recorded completed here.

    Raises:
        LabelIssuesError: a fold's predictions cannot be read, or an image was predicted by a fold that trained on it.
    """
    found = _collect(ws, store, group)
    if found is not None and store.get_run(group).status != "completed" and not _driven(store, group):
        store.set_status(group, "completed")
    return found


def _collect(ws: Workspace, store: RunStore, group: int) -> OutOfSample | None:
    from core.train.checkpoints import stored_plan

    spec = thorough_spec(store, group)
    runs = fold_runs(store, group)
    if sorted(runs) != list(range(spec.folds)) or any(r.status != "completed" for r in runs.values()):
        return None
    ids = [runs[k].run_id for k in range(spec.folds)]
    kept = load_out_of_sample(ws, spec.dataset, spec.run_id, "thorough")
    if kept is not None and kept.fold_runs == ids:
        return kept
    frame, probs, classes, missing = gather(ws, [runs[k] for k in range(spec.folds)])
    index = {c: i for i, c in enumerate(classes)}
    given = np.fromiter((index[g] for g in frame["label"]), dtype=np.int64, count=len(frame))
    plan = stored_plan(store, ws, runs[0])  # every fold trains with the same plan
    probs, temperature = undo_smoothing(probs, given, plan.settings.label_smoothing if plan else 0.0)
    left_out = list(store.params(group).get("left_out", [])) + missing
    ran = [r for r in runs.values() if r.started_at is not None and r.ended_at is not None]
    seconds = {"training": sum(r.wall_s or 0.0 for r in ran),  # the folds' own times, and first start to last end
               "wall": max(r.ended_at for r in ran) - min(r.started_at for r in ran) if ran else 0.0}  # fmt: skip
    oos = OutOfSample(spec.dataset, spec.run_id, "thorough", spec.folds, classes, frame["path"].tolist(),
                      frame["label"].tolist(), probs, frame["fold"].to_numpy(), ids, left_out, seconds,
                      temperature)  # fmt: skip
    save_out_of_sample(ws, oos)
    return oos
