"""Scaling points read back from the run store: every run a sweep stored (kind ``prep`` or ``train`` with its
parallel settings in its params), and the time spans of every other run, which flag the points they overlap."""

from __future__ import annotations

import time

from core.common.errors import RunStoreError
from core.scaling.tables import Point, Table, scaling_tables
from core.store.records import RunGroup, RunRecord
from core.store.runs import RunStore

POINT_KINDS = ("prep", "train")


def stored_points(store: RunStore, group: str | None = None) -> tuple[list[Point], list[tuple[int, float, float]]]:
    """(the points, optionally of one group; (run id, start, end) of every other run that did work)."""
    points, busy = [], []
    for run in store.list_runs():
        params = store.params(run.run_id) if run.kind in POINT_KINDS else {}
        point = _point(store, run, params) if {"mode", "workers"} <= set(params) else None
        if point is not None and (group is None or point.group == group):
            points.append(point)
        elif point is None and run.kind != "sweep" and run.started_at is not None:
            busy.append((run.run_id, run.started_at, run.ended_at or time.time()))
    return points, busy


def stored_tables(store: RunStore, group: str | None = None, *, include_flagged: bool = False) -> list[Table]:
    points, busy = stored_points(store, group)
    return scaling_tables(points, busy, include_flagged=include_flagged)


def _point(store: RunStore, run: RunRecord, params: dict) -> Point | None:
    if run.status != "completed" or run.started_at is None:
        return None
    time_s = store.latest_metrics(run.run_id).get("time_s")
    if time_s is None:
        return None
    return Point(run.run_id, run.group or f"run-{run.run_id}", run.kind, str(params["mode"]), int(params["workers"]),
                 int(params.get("threads_per_worker", 1)), float(time_s), int(params.get("images", 0)),
                 int(params.get("cores", run.cpu_count or 1)), run.started_at, run.ended_at or run.started_at,
                 bool(params.get("resumed", False)))  # fmt: skip


TASK_WORDS = {"copy": "split and copy into train/val/test folders", "fingerprint": "fingerprint every image"}


def sweep_task(store: RunStore, group: str) -> str:
    """What a preparation sweep timed, in words ("" for other sweeps or a group that is not a sweep's)."""
    sweep = RunGroup.parse(group)
    if sweep is None or sweep.kind != "sweep":
        return ""
    try:
        config = store.get_run(sweep.id).config
    except RunStoreError:  # a deleted sweep run: its points still make a table, without the words
        return ""
    return TASK_WORDS.get(config.get("task", ""), "") if config.get("kind") == "prep" else ""


def best_setting(store: RunStore, dataset: str, arch: str) -> tuple[int, int, RunGroup] | None:
    """(ranks, threads per rank, sweep group) of the fastest fair point of the newest training sweep of this
    dataset and network (a ``train`` sweep measures threads with one rank; a ``ddp`` sweep both); None without
    one. The Train page starts from it."""
    for sweep in store.list_runs(kind="sweep"):  # newest first
        config = sweep.config
        if config.get("kind") not in ("train", "ddp") or sweep.dataset != dataset or config.get("arch", "auto") != arch:
            continue
        group = RunGroup("sweep", sweep.run_id)
        tables = stored_tables(store, str(group))
        rows = [r for t in tables for r in t.rows if not r.oversubscribed]
        if rows:
            best = max(rows, key=lambda r: r.images_per_s)
            if best.mode == "threads":
                return 1, best.workers, group
            return best.workers, best.threads_per_worker, group
    return None
