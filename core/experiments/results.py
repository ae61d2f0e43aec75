"""A search's results as the run store holds them: its trials, their settings, scores and outcome, and the best.

Read from the run store (and each trial's ``splits.csv``; Optuna is not imported), so the pages and ``runs`` stay
quick; the ``search --json`` object of the command line is :func:`search_json`.

A trial whose score is about chance did not learn, however it ranks: the chance level is the biggest class's share
of the images its score is measured on (the validation images, or the test images when the search ranks by the
test), and "about chance" is the one rule of ``core.train.outcome`` (skipped, as the run's own verdict skips it,
where so few images are scored that even a perfect score would be about chance). A trial whose run stored the
verdict "did not learn" (``core.train.verdict``) is flagged too. The best trial is chosen among the others only:
when every trial is at chance there is no best, and :func:`best_words` says why and what to try.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from core.common.percent import percent
from core.common.words import split_word
from core.common.workspace import Workspace
from core.store.records import RunGroup, RunRecord
from core.store.runs import RunStore
from core.train.outcome import check_score
from core.train.run_folder import SPLITS_FILE, load_splits, run_dir
from core.train.verdict import DID_NOT_LEARN, outcome_of

TRY = ("Try each optimizer's usual learning rate (search around it), more epochs, or check that the labels match the "
       "images.")  # fmt: skip


def search_group(search_id: int) -> RunGroup:
    """The run-store group of a search's trials (printed, also its Optuna study's name)."""
    return RunGroup("search", search_id)


def pruned(store: RunStore, run_id: int) -> bool:
    """Whether successive halving cut the trial short."""
    return store.params(run_id).get("search_outcome") == "pruned"


def metric_value(store: RunStore, run_id: int, name: str) -> float | None:
    """A finished trial's score by the search's metric (``core.experiments.space.METRICS``); None when it has none."""
    if name == "val_acc":
        return store.best_metric(run_id, "val_acc")
    if name == "val_loss":
        return store.best_metric(run_id, "val_loss", "min")
    value = store.latest_metrics(run_id).get(name)
    return None if value is None or value != value else float(value)  # NaN: no test images


def trials(store: RunStore, search_id: int) -> list[RunRecord]:
    """The search's trial runs, first trial first."""
    return sorted(store.list_runs(kind="train", group=search_group(search_id)), key=lambda r: r.run_id)


def outcome(store: RunStore, run: RunRecord) -> str:
    """A trial's outcome: queued, running, completed, pruned (cut short as hopeless), cancelled (stopped with its
    search), failed or crashed."""
    return "pruned" if run.status == "cancelled" and pruned(store, run.run_id) else run.status


def trial_rows(store: RunStore, search_id: int, metric_name: str, ws: Workspace | None = None) -> list[dict[str, Any]]:
    """One dict per trial: run_id, trial, params, status, pruned, value (by the metric), val_acc, test_accuracy,
    wall_s, and how a finished trial went (:func:`judged`: chance, at_chance, outcome, note). ``ws``: where the
    trials' splits are (default: where the run store recorded them)."""
    rows = []
    for run in trials(store, search_id):
        params = store.params(run.run_id)
        done = run.status == "completed"
        rows.append({"run_id": run.run_id, "trial": params.get("search_trial"), "params": params.get("search_params", {}),
                     "status": run.status, "pruned": outcome(store, run) == "pruned",
                     "value": metric_value(store, run.run_id, metric_name) if done else None,
                     "val_acc": store.best_metric(run.run_id, "val_acc"),
                     "test_accuracy": store.latest_metrics(run.run_id).get("test_accuracy"), "wall_s": run.wall_s})  # fmt: skip
        rows[-1] |= judged(store, ws, rows[-1], metric_name)
    return rows


def judged(store: RunStore, ws: Workspace | None, row: dict[str, Any], metric_name: str) -> dict[str, Any]:
    """How a finished trial went: ``chance`` (the biggest class's share of the images its score is measured on),
    ``at_chance`` (that score is about chance), ``outcome`` (the run's stored verdict) and ``note`` (in words, empty
    for a trial that learned); nothing is judged before a trial completes."""
    if row["status"] != "completed":
        return {"chance": None, "at_chance": False, "outcome": None, "note": ""}
    split = "test" if metric_name == "test_accuracy" else "val"  # a loss is judged by the accuracy on its images
    counts = _split_counts(_splits_folder(store, ws, row["run_id"]), split)
    check = check_score(row["test_accuracy" if split == "test" else "val_acc"], counts)  # the verdict's own rule
    outcome = outcome_of(store, row["run_id"])["outcome"]
    note = (f"about chance ({percent(check.chance, 1)} on the {sum(counts.values()):,} {split_word(split)} images)"
            if check.at_chance else "did not learn" if outcome == DID_NOT_LEARN else "")  # fmt: skip
    return {"chance": check.chance, "at_chance": check.at_chance, "outcome": outcome, "note": note}


def learned(row: dict[str, Any]) -> bool:
    """Whether a trial may be the best: not at chance, not judged "did not learn" by its run."""
    return not row.get("at_chance") and row.get("outcome") != DID_NOT_LEARN


def best_trial(rows: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    """The completed trial with the best value among those that learned (the lower trial number on a tie); None
    before any completed, and when none learned (every score about chance)."""
    scored = [r for r in scored_trials(rows) if learned(r)]
    if not scored:
        return None
    sign = -1 if direction == "maximize" else 1
    return min(scored, key=lambda r: (sign * r["value"], r["run_id"]))


def best_words(rows: list[dict[str, Any]]) -> str:
    """Why the best is what it is, in words: empty when every finished trial learned; which were left out when some
    did not; when none learned, that no trial learned, the chance level and what to try."""
    scored = scored_trials(rows)
    left_out = [r for r in scored if not learned(r)]
    at_chance = sum(bool(r.get("at_chance")) for r in left_out)
    others = len(left_out) - at_chance
    if not left_out:
        return "" if scored else "no trial has finished with a score yet"
    if len(left_out) < len(scored):
        kept = len(scored) - len(left_out)
        return (f"chosen among the {kept} trial{'s' * (kept != 1)} that learned"
                + (f"; {at_chance} scored about chance" if at_chance else "")
                + (f"; {others} did not learn" if others else ""))  # fmt: skip
    levels = sorted({round(r["chance"], 4) for r in left_out if r.get("at_chance") and r.get("chance") is not None})
    shown = " to ".join(dict.fromkeys(percent(v, 1) for v in (levels[0], levels[-1]))) if levels else ""
    if not others:  # every one at chance (a trial is at chance only with a known chance level)
        return (f"No trial learned: every score is about chance ({shown}, what always answering the biggest class "
                f"scores). {TRY}")  # fmt: skip
    parts = [f"{at_chance} scored about chance ({shown})" if at_chance else "", f"{others} did not learn"]
    return f"No trial learned: {' and '.join(p for p in parts if p)}. {TRY}"


def scored_trials(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trials that completed with a score."""
    return [r for r in rows if r["status"] == "completed" and r["value"] is not None]


def _splits_folder(store: RunStore, ws: Workspace | None, run_id: int) -> Path | None:
    if ws is not None:
        return run_dir(ws, run_id)
    recorded = [a["path"] for a in store.artifacts(run_id) if a["kind"] == "splits"]
    return Path(recorded[-1]).parent if recorded else None


def _split_counts(folder: Path | None, split: str) -> dict[str, int]:
    """Images per class in one split of a run (empty when its splits cannot be read)."""
    try:
        stat = (folder / SPLITS_FILE).stat() if folder is not None else None
    except OSError:
        return {}
    return _counts(str(folder), stat.st_mtime_ns, stat.st_size).get(split, {}) if stat else {}


@functools.lru_cache(maxsize=512)
def _counts(folder: str, _mtime_ns: int, _size: int) -> dict[str, dict[str, int]]:
    # Read once per file version: a page shows a search's trials every 2 s while it runs.
    frame = load_splits(Path(folder))
    if frame is None:
        return {}
    return {str(s): {str(k): int(v) for k, v in g["label"].value_counts().items()} for s, g in frame.groupby("split")}


def search_json(store: RunStore, search_id: int, ws: Workspace | None = None) -> dict[str, Any]:
    """The ``search --json`` object: the search, its space in words and warnings on its rates, every trial (with how
    it went), and the best run (None when no trial learned; ``best_why`` says why)."""
    from core.experiments.space import metric, parse_space, rate_warnings
    from core.train.config import TrainConfig

    run = store.get_run(search_id)
    spec = run.config
    chosen = metric(spec["metric"])
    rows = trial_rows(store, search_id, chosen.name, ws)
    best = best_trial(rows, chosen.direction)
    space, base = parse_space(spec["space"]), TrainConfig.from_dict(spec["base"])
    return {"search_id": search_id, "status": run.status, "method": spec["method"], "metric": chosen.name,
            "direction": chosen.direction, "prune": spec["prune"], "planned_trials": spec["trials"],
            "space": spec["space"], "space_words": space.describe(base), "warnings": rate_warnings(space, base),
            "trials": rows, "best_run_id": best["run_id"] if best else None,
            "best_value": best["value"] if best else None, "best_why": best_words(rows), "wall_s": run.wall_s,
            "error": run.error}  # fmt: skip
