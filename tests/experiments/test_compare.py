"""core.experiments.compare: the comparison table of real runs, with the settings they used, their scores, the
test score without leaking images, and how they are related."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from core.common.workspace import Workspace
from core.experiments.compare import COLUMNS, compare_table, family
from core.store.runs import RunStore
from core.train import run_folder
from core.train import runner as train_run
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry
from tests.evaluate.runs import leaky_photos


@pytest.fixture
def leaky(tmp_path: Path) -> tuple[Path, set[str]]:
    """Photo-like pictures in train/val/test folders, 9 test pictures planted as copies of training ones."""
    return leaky_photos(tmp_path / "leaky")


def _train(registry: JobRegistry, ws: Workspace, **kw) -> int:
    config = TrainConfig(**{"arch": "lenet", "epochs": 2, "batch_size": 8, "log_every": 1, **kw})
    run = train_run.submit_training(registry, ws, config)
    assert registry.wait(run, timeout=300).status == "completed"
    return run


def test_the_table_holds_what_each_run_used_and_scored(leaky: tuple[Path, set[str]], ws: Workspace) -> None:
    dataset, planted = leaky
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    parent = _train(registry, ws, dataset=str(dataset), optimizer="adam")
    child = _train(registry, ws, dataset=str(dataset), from_run=parent, batch_size=16, epochs=1)
    table = compare_table(store, ws, store.list_runs(kind="train"), leaks="compute")
    assert list(table["run_id"]) == [child, parent] and set(COLUMNS) <= set(table.columns)
    rows = {int(r.run_id): r for r in table.itertuples()}
    p, c = rows[parent], rows[child]
    assert (p.arch, p.optimizer, p.lr, p.batch_size, p.epochs, p.freeze) == ("lenet", "adam", 0.001, 8, 2, "none")
    assert p.image_size and p.augment == "crop-flip"  # automatic choices as the run resolved them
    assert (c.epochs, c.batch_size, c.lr) == (1, 16, pytest.approx(0.01))  # sgd's 0.1, a tenth for a child
    assert (c.family, p.family) == (f"from run {parent}", "") and c.parent_id == parent
    assert p.best_val_acc == store.best_metric(parent, "val_acc")
    assert p.test_accuracy == store.latest_metrics(parent)["test_accuracy"]
    assert p.n_leaking == len(planted)  # the copies of training pictures planted in test
    predictions = run_folder.run_dir(ws, parent) / "test_predictions.parquet"
    import pandas as pd

    frame = pd.read_parquet(predictions)
    clean = frame[~frame["image"].isin(planted)]
    assert p.test_accuracy_clean == pytest.approx((clean["pred1"] == clean["label"]).mean())
    stored = store.metrics([parent], ["images_per_s"])["value"]
    assert p.wall_s == store.get_run(parent).wall_s  # the run's own recorded time, not a new measurement
    assert p.images_per_s == pytest.approx(stored.median())  # the median of the epochs' recorded rates


def test_the_leak_check_waits_for_cached_fingerprints_and_can_be_skipped(leaky, ws: Workspace) -> None:
    dataset, planted = leaky
    store = RunStore(ws.runs_db)
    run = _train(JobRegistry(store), ws, dataset=str(dataset), epochs=1)
    runs = store.list_runs(kind="train")
    assert math.isnan(compare_table(store, ws, runs)["test_accuracy_clean"].iloc[0])  # not fingerprinted yet
    compare_table(store, ws, runs, leaks="compute")
    assert compare_table(store, ws, runs)["n_leaking"].iloc[0] == len(planted)  # now cached: the page shows it
    assert compare_table(store, ws, runs, leaks="skip")["n_leaking"].iloc[0] is None
    assert store.get_run(run).status == "completed"


def test_related_runs_are_named_in_words(ws: Workspace) -> None:
    store = RunStore(ws.runs_db)
    search = store.create_run(dataset="d", kind="search")
    parent = store.create_run(dataset="d", kind="train")
    trial = store.create_run(dataset="d", kind="train", group=f"search-{search}", parent_id=search,
                             config={"from_run": parent})  # fmt: skip
    assert family(store.get_run(trial), {"search_trial": 2}) == f"search {search} · trial 3 · from run {parent}"
    assert family(store.get_run(parent)) == ""
    assert compare_table(store, ws, []).empty
