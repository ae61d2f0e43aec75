"""One run evaluated: which run, its stored predictions, the metrics, the leakage-honest score, the JSON object.

The Evaluate page, ``python -m core evaluate`` and the HTML report all come here. Predictions are read from the
file the run stored (``core.train.predictions``); a run finished before that file existed, or the val split,
is predicted once from its best checkpoint and stored the same way (:func:`load_predictions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.common.errors import ChoiceError, CoreError, check_choice
from core.common.words import SCORED_SPLITS
from core.common.workspace import Workspace
from core.evaluate.leakage import (
    LEAK_CHECKS,
    HonestScore,
    LeakCheck,
    find_leaks,
    fingerprints_ready,
    honest_score,
    locate_dataset,
)
from core.evaluate.metrics import Metrics, compute_metrics
from core.store.records import ACTIVE_STATUSES, RunRecord
from core.store.runs import RunStore
from core.train.predictions import TOP_K, StoredPredictions, read_predictions

SPLITS = SCORED_SPLITS
ACTIVE = ACTIVE_STATUSES


class EvaluateError(CoreError):
    """A run that cannot be evaluated (still training, stopped early, no images in the split asked for)."""


class EvaluateChoiceError(EvaluateError, ChoiceError):
    """A split or leak check that is not one of the allowed ones."""


class EmptySplitError(EvaluateError):
    """A run that kept no images aside for ``split`` (its share was 0): a page offers the other split."""

    def __init__(self, run_id: int, split: str) -> None:
        self.run_id, self.split = run_id, split
        purpose = "the final test" if split == "test" else "validation"
        super().__init__(f"run {run_id} has no {split} images: its dataset kept none aside for {purpose}; train again "
                         f"with a {split} share above 0")  # fmt: skip


@dataclass
class Evaluation:
    """Everything the page, the command line and the report show about one run's split."""

    run: RunRecord
    split: str
    predictions: StoredPredictions
    metrics: Metrics
    leaks: LeakCheck | None  # None: not checked (fingerprints not cached on the page, or the dataset is gone)
    honest: HonestScore | None
    root: Path | None  # the dataset folder the image paths are relative to; None when it cannot be read
    root_problem: str  # why it cannot be read, one sentence for people; "" with a root
    splits: pd.DataFrame  # the run's stored path, label, split

    @property
    def frame(self) -> pd.DataFrame:
        return self.predictions.frame

    def split_counts(self) -> dict[str, int]:
        return {s: int(n) for s, n in self.splits["split"].value_counts().items()}


def latest_completed(store: RunStore) -> RunRecord | None:
    """The newest completed training run, if any."""
    runs = store.list_runs(status="completed", kind="train")
    return runs[0] if runs else None


def check_evaluable(ws: Workspace, run: RunRecord, split: str) -> pd.DataFrame:
    """The run's stored split when ``split`` of ``run`` can be evaluated; otherwise an :class:`EvaluateError`
    that says what to do."""
    from core.train.run_folder import run_splits

    check_choice("split", split, SPLITS, EvaluateChoiceError)
    if run.kind != "train":
        raise EvaluateError(f"run {run.run_id} is a {run.kind} run, not a training run")
    if run.status in ACTIVE:
        raise EvaluateError(f"run {run.run_id} is still training ({run.status}); evaluate it once it has finished")
    if run.status != "completed":
        raise EvaluateError(f"run {run.run_id} stopped before the end ({run.status}); resume it to the end, then "
                            "evaluate it")  # fmt: skip
    splits = run_splits(ws, run.run_id)
    if splits is None:
        raise EvaluateError(f"run {run.run_id} has no record of which images it kept aside (its splits.csv)")
    if not (splits["split"] == split).any():
        raise EmptySplitError(run.run_id, split)
    return splits


def load_predictions(ws: Workspace, store: RunStore, run: RunRecord, split: str) -> StoredPredictions:
    """The stored predictions of ``run``'s ``split``: the file the run wrote at its end, or, for a run finished
    before predictions were kept (and for the val split, which training does not store), made once from its
    best checkpoint and stored the same way beside the checkpoints.

    Raises:
        RunStoreError: no best checkpoint or stored split. PredictionsError: no image of the split can be read.
    """
    from core.common.errors import RunStoreError
    from core.train.predictions import predict_split, predictions_file, write_predictions
    from core.train.run_folder import checkpoint_path, run_dir, run_splits

    target = predictions_file(run_dir(ws, run.run_id), split)
    if not target.is_file():
        best, splits = checkpoint_path(ws, run.run_id, "best"), run_splits(ws, run.run_id)
        if not best.is_file() or splits is None:
            raise RunStoreError(f"run {run.run_id} has no best checkpoint or stored split to predict with")
        write_predictions(target, predict_split(best, run.dataset, splits, split, ws))
        store.add_artifact(run.run_id, f"{split}_predictions", target)
    return read_predictions(target)


def evaluate_run(ws: Workspace, store: RunStore, run_id: int | None = None, split: str = "test", *,
                 leaks: str = "compute") -> Evaluation:  # fmt: skip
    """Evaluate ``split`` of run ``run_id`` (default: the latest completed run).

    Args:
        leaks: ``compute`` looks for copies of the split's images among the training images (fingerprinting
            the dataset once, cached); ``cached`` only when the fingerprints are cached (a page must not start
            a long pass on its own); ``skip`` never.

    Raises:
        RunStoreError: unknown run. EvaluateError: see :func:`check_evaluable`.
    """
    run = _the_run(store, run_id)
    splits = check_evaluable(ws, run, split)
    predictions = load_predictions(ws, store, run, split)
    if not len(predictions.frame):
        raise EvaluateError(f"none of run {run.run_id}'s {split} images could be read")
    root, problem = locate_dataset(ws, run.dataset)
    check = leak_check(ws, run, splits, split, leaks, root)
    honest = honest_score(predictions.frame, check) if check is not None else None
    return Evaluation(run, split, predictions, compute_metrics(predictions), check, honest, root, problem, splits)


def _the_run(store: RunStore, run_id: int | None) -> RunRecord:
    if run_id is not None:
        return store.get_run(run_id)
    run = latest_completed(store)
    if run is None:
        raise EvaluateError("no completed training run yet: train one first")
    return run


def leak_check(
    ws: Workspace, run: RunRecord, splits: pd.DataFrame, split: str, mode: str, root: Path | None
) -> LeakCheck | None:
    """The copies of ``split``'s images in train, per ``mode`` (see ``core.evaluate.leakage.LEAK_CHECKS``); None
    when not checked (or ``root``, the dataset's folder, cannot be read)."""
    check_choice("leaks", mode, LEAK_CHECKS, EvaluateChoiceError)
    if mode == "skip" or root is None:
        return None
    if mode == "cached" and not fingerprints_ready(ws, run.dataset):
        return None
    return find_leaks(ws, run.dataset, splits, split)


# ---------------------------------------------------------------------------------------------------
# What the command line prints and writes


def evaluation_json(ev: Evaluation) -> dict[str, Any]:
    """The ``evaluate --json`` object of the command-line contract."""
    out: dict[str, Any] = {"run_id": ev.run.run_id, "split": ev.split, **ev.metrics.to_json()}
    out["n_classes"] = ev.metrics.n_classes
    out["arch"] = ev.run.arch
    out["dataset"] = ev.run.dataset
    out["checkpoint_epoch"] = ev.predictions.meta.get("epoch")
    if ev.honest is not None and ev.leaks is not None:
        scored = set(ev.frame["image"])  # once: per leaking image it cost 38 s at 2,010 leaks of 30,000 images
        out["leakage"] = {**ev.honest.to_json(), "method": ev.leaks.method, "threshold": ev.leaks.threshold,
                          "pairs": [[path, ev.leaks.leaking[path]] for path in sorted(ev.leaks.leaking)
                                    if path in scored]}  # fmt: skip
    else:
        out["leakage"] = {"checked": False, "n_leaking": None, "accuracy_without_leaks": None}
    return out


def predictions_table(ev: Evaluation) -> pd.DataFrame:
    """One row per image: image, label, pred1, p1, ... pred5, p5 (``evaluate --predictions``); the image is the
    full path when the dataset is still there (so ``predict`` can be run on the same files), else as stored."""
    frame = ev.frame
    images = [str(ev.root / p) for p in frame["image"]] if ev.root is not None else list(frame["image"])
    table = pd.DataFrame({"image": images, "label": frame["label"]})
    for k in range(1, TOP_K + 1):
        table[f"pred{k}"] = frame[f"pred{k}"]
        table[f"p{k}"] = frame[f"p{k}"].round(6)
    return table


def text_summary(ev: Evaluation) -> str:
    """What ``evaluate`` prints without ``--json``."""
    from core.common.words import metric_word
    from core.evaluate.words import accuracy_sentence, leakage_sentence

    m = ev.metrics
    scores = {"accuracy": m.accuracy, "top_k_accuracy": m.top_k_accuracy, "map5": m.map5, "macro_f1": m.macro["f1"],
              "log_loss": m.log_loss, "ece": m.calibration.ece}  # fmt: skip
    lines = [f"run {ev.run.run_id} ({ev.run.arch or '?'}), {ev.split} split: {m.n} images, {m.n_classes} classes",
             accuracy_sentence(m.accuracy, m.n, ev.split)]  # fmt: skip
    lines += [f"  {metric_word(k, k=m.top_k) + ':':<32} {v:.4f}" for k, v in scores.items()]  # the page's names
    if ev.honest is not None:
        lines.append(leakage_sentence(ev.honest, ev.split))
    return "\n".join(lines)
