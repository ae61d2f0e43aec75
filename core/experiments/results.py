"""A search's results as the run store holds them: its trials, their settings, scores and outcome, and the best.

Read from the run store only (Optuna is not imported), so the pages and ``runs`` stay quick; the ``search --json``
object of the command line is :func:`search_json`.
"""

from __future__ import annotations

from typing import Any

from core.store.records import RunGroup, RunRecord
from core.store.runs import RunStore


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


def trial_rows(store: RunStore, search_id: int, metric_name: str) -> list[dict[str, Any]]:
    """One dict per trial: run_id, trial, params, status, pruned, value (by the metric), val_acc, test_accuracy,
    wall_s."""
    rows = []
    for run in trials(store, search_id):
        params = store.params(run.run_id)
        done = run.status == "completed"
        rows.append({"run_id": run.run_id, "trial": params.get("search_trial"), "params": params.get("search_params", {}),
                     "status": run.status, "pruned": outcome(store, run) == "pruned",
                     "value": metric_value(store, run.run_id, metric_name) if done else None,
                     "val_acc": store.best_metric(run.run_id, "val_acc"),
                     "test_accuracy": store.latest_metrics(run.run_id).get("test_accuracy"), "wall_s": run.wall_s})  # fmt: skip
    return rows


def best_trial(rows: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    """The completed trial with the best value (the lower trial number on a tie); None before any completed."""
    scored = [r for r in rows if r["status"] == "completed" and r["value"] is not None]
    if not scored:
        return None
    sign = -1 if direction == "maximize" else 1
    return min(scored, key=lambda r: (sign * r["value"], r["run_id"]))


def search_json(store: RunStore, search_id: int) -> dict[str, Any]:
    """The ``search --json`` object: the search, every trial, and the best run."""
    from core.experiments.space import metric

    run = store.get_run(search_id)
    spec = run.config
    chosen = metric(spec["metric"])
    rows = trial_rows(store, search_id, chosen.name)
    best = best_trial(rows, chosen.direction)
    return {"search_id": search_id, "status": run.status, "method": spec["method"], "metric": chosen.name,
            "direction": chosen.direction, "prune": spec["prune"], "planned_trials": spec["trials"],
            "space": spec["space"], "trials": rows, "best_run_id": best["run_id"] if best else None,
            "best_value": best["value"] if best else None, "wall_s": run.wall_s, "error": run.error}  # fmt: skip
