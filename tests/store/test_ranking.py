"""Tests for core.store.ranking: the best completed run first, on a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.store.ranking import best_before, best_run, ranked
from core.store.runs import RunStore


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.db")


def _run(store: RunStore, dataset: str, *, val: float | None = None, test: float | None = None,
         status: str = "completed", kind: str = "train") -> int:  # fmt: skip
    run_id = store.create_run(dataset=dataset, kind=kind)
    store.start_run(run_id)
    if val is not None:
        store.log_metrics(run_id, [("val_acc", 1, val / 2), ("val_acc", 2, val)])
    if test is not None:
        store.log_metrics(run_id, [("test_accuracy", 2, test)])
    store.finish_run(run_id, status)
    return run_id


def test_the_best_test_accuracy_wins_over_a_newer_worse_run(store: RunStore) -> None:
    good = _run(store, "d", val=0.99, test=0.994)
    _run(store, "d", val=0.11, test=0.09)  # a poor search trial, newer
    _run(store, "d", val=0.50, status="failed")
    assert best_run(store, "d").run_id == good


def test_only_the_chosen_datasets_runs_compete_and_none_gives_none(store: RunStore) -> None:
    _run(store, "other", test=1.0)
    mine = _run(store, "d", test=0.8)
    assert best_run(store, "d").run_id == mine
    assert best_run(store, "nothing here") is None
    assert best_run(store).run_id != mine  # every dataset: the other's 100%


def test_validation_counts_when_a_run_has_no_test_images_and_ties_go_to_the_newest(store: RunStore) -> None:
    old = _run(store, "d", test=0.9)
    no_test = _run(store, "d", val=0.95)
    tie = _run(store, "d", test=0.9)
    unscored = _run(store, "d")
    order = [s.run.run_id for s in ranked(store, store.list_runs(kind="train"))]
    assert order == [no_test, tie, old, unscored]
    assert ranked(store, [store.get_run(no_test)])[0].split == "val"


def test_a_result_is_measured_against_the_best_earlier_run_on_its_data(store: RunStore) -> None:
    first = _run(store, "d", test=0.7)
    assert best_before(store, store.get_run(first)) is None
    better = _run(store, "d", test=0.95)
    _run(store, "other", test=1.0)
    latest = _run(store, "d", test=0.8)
    earlier = best_before(store, store.get_run(latest))
    assert earlier.run.run_id == better and earlier.accuracy == pytest.approx(0.95)
