"""core.experiments.search: grid and random searches of real training runs on the sample digits, stop and resume,
and successive halving cutting a hopeless trial short. Each trial trains LeNet for one to three epochs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from core.common.workspace import Workspace
from core.datasets import samples
from core.experiments.results import search_json, trials
from core.experiments.search import STUDY_FILE, Searches, SearchSpec
from core.experiments.space import parse_space
from core.store.runs import RunStore
from core.train import run_folder
from core.train import runner as train_run
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry
from tests.support import wait_until
from tests.train.test_guard import write_meaningless_labels

TIMEOUT = 400


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's folder (written once for this module)."""
    return samples.sample_path("sample:digits", tmp_path_factory.mktemp("digits") / "datasets")


@pytest.fixture
def searching(tmp_path: Path, digits: Path) -> Iterator[tuple[Workspace, RunStore, Searches]]:
    ws = Workspace.open(tmp_path / "ws").with_roots(digits)
    store = RunStore(ws.runs_db)
    searches = Searches(JobRegistry(store, cores=2), ws)
    yield ws, store, searches
    for search_id in searches.active():
        searches.stop(search_id)
        searches.wait(search_id, timeout=120)


def _spec(digits: Path, space: dict, **kw) -> SearchSpec:
    base = TrainConfig(dataset=str(digits), arch="lenet", epochs=kw.pop("epochs", 1), log_every=5)
    return SearchSpec(base, parse_space(space), **kw)


def _study(ws: Workspace, search_id: int) -> optuna.Study:
    return optuna.load_study(study_name=f"search-{search_id}", storage=f"sqlite:///{ws.root / STUDY_FILE}")


def test_a_grid_search_tries_every_combination_as_ordinary_runs(searching, digits: Path) -> None:
    ws, store, searches = searching
    search_id = searches.start(_spec(digits, {"optimizer": ["sgd", "adam"], "lr": [0.02, 0.1]}, method="grid"))
    assert searches.wait(search_id, timeout=TIMEOUT)
    result = search_json(store, search_id)
    assert (result["status"], store.get_run(search_id).kind) == ("completed", "search"), result["error"]
    runs = trials(store, search_id)
    assert len(runs) == 4 and all(r.kind == "train" and r.parent_id == search_id for r in runs)
    assert all(r.status == "completed" and r.group == f"search-{search_id}" for r in runs)
    tried = {(row["params"]["optimizer"], row["params"]["lr"]) for row in result["trials"]}
    assert tried == {("sgd", 0.02), ("sgd", 0.1), ("adam", 0.02), ("adam", 0.1)}
    for run, row in zip(runs, result["trials"], strict=True):  # each trial trained with its own settings
        assert run.config["optimizer"] == row["params"]["optimizer"] and run.config["lr"] == row["params"]["lr"]
    best = max(result["trials"], key=lambda row: row["value"])
    assert result["best_run_id"] == best["run_id"] and result["best_value"] == best["value"]
    study = _study(ws, search_id)
    assert sorted(t.user_attrs["run_id"] for t in study.trials) == [r.run_id for r in runs]
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}
    assert study.best_trial.user_attrs["run_id"] == result["best_run_id"]


def test_a_random_search_draws_rates_on_a_log_range_within_the_core_budget(searching, digits: Path) -> None:
    ws, store, searches = searching
    space = {"lr": {"low": 0.001, "high": 0.3, "log": True}, "batch_size": [32, 64]}
    search_id = searches.start(_spec(digits, space, trials=4, seed=7))
    assert searches.wait(search_id, timeout=TIMEOUT)
    result = search_json(store, search_id)
    assert result["status"] == "completed" and len(result["trials"]) == 4
    rates = [row["params"]["lr"] for row in result["trials"]]
    assert len(set(rates)) == 4 and all(0.001 <= r <= 0.3 for r in rates)
    assert all(row["status"] == "completed" and row["value"] is not None for row in result["trials"])
    runs = trials(store, search_id)
    assert all(r.threads is not None and r.threads <= 2 for r in runs)  # the registry's thread budget
    starts = sorted((r.started_at, r.ended_at) for r in runs)
    most = max(sum(s <= t < e for s, e in starts) for t, _ in starts)
    assert most <= 2  # never more trials training at once than the cores


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_a_stopped_search_cancels_its_trials_and_resumes_them_to_the_end(searching, digits: Path) -> None:
    ws, store, searches = searching
    space = {"lr": {"low": 0.02, "high": 0.2, "log": True}}
    search_id = searches.start(_spec(digits, space, trials=4, epochs=3, seed=1))
    wait_until(lambda: not store.metrics([r.run_id for r in trials(store, search_id)] or [0], ["val_acc"]).empty,
               timeout=TIMEOUT, what="a trial's first epoch", interval=0.2)  # fmt: skip
    assert searches.stop(search_id)
    assert searches.wait(search_id, timeout=TIMEOUT)
    assert store.get_run(search_id).status == "cancelled"
    stopped = trials(store, search_id)
    assert stopped and {r.status for r in stopped} <= {"cancelled", "completed"}  # nothing left queued or running
    assert any(r.status == "cancelled" for r in stopped)
    for run in stopped:  # a stopped trial keeps its checkpoint: it continues on resume
        assert run.status == "completed" or run_folder.checkpoint_path(ws, run.run_id, "last").is_file()
    open_trials = [t for t in _study(ws, search_id).trials if t.state == optuna.trial.TrialState.RUNNING]
    assert {t.user_attrs["run_id"] for t in open_trials} == {r.run_id for r in stopped if r.status == "cancelled"}

    searches.resume(search_id)
    assert searches.wait(search_id, timeout=TIMEOUT)
    result = search_json(store, search_id)
    assert result["status"] == "completed", result["error"]
    assert len(result["trials"]) == 4 and all(row["status"] == "completed" for row in result["trials"])
    assert sorted(row["trial"] for row in result["trials"]) == [0, 1, 2, 3]
    ids = {row["run_id"] for row in result["trials"]}
    assert {r.run_id for r in stopped} <= ids  # the stopped trials went on as the same runs ...
    for run in stopped:  # ... with every epoch, the ones before the stop included
        assert [e["epoch"] for e in train_run.result_json(store, run.run_id)["epochs"]] == [1, 2, 3]
    assert {t.state for t in _study(ws, search_id).trials} == {optuna.trial.TrialState.COMPLETE}


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_successive_halving_cuts_a_hopeless_trial_short(tmp_path: Path, digits: Path) -> None:
    ws = Workspace.open(tmp_path / "ws").with_roots(digits)
    store = RunStore(ws.runs_db)
    searches = Searches(JobRegistry(store, cores=1), ws)  # one trial at a time: each meets all earlier ones
    space = {"lr": [0.1, 0.05, 1e-5]}
    order = optuna.samplers.GridSampler(parse_space(space).grid(), seed=3)._all_grids
    assert order[-1] == (1e-5,), "the grid's seed no longer puts the hopeless rate last; pick another"
    search_id = searches.start(_spec(digits, space, method="grid", epochs=3, prune=True, seed=3))
    assert searches.wait(search_id, timeout=TIMEOUT)
    result = search_json(store, search_id)
    assert result["status"] == "completed"
    hopeless = next(row for row in result["trials"] if row["params"]["lr"] == 1e-5)
    assert hopeless["pruned"] and hopeless["status"] == "cancelled" and hopeless["value"] is None
    assert len(train_run.result_json(store, hopeless["run_id"])["epochs"]) < 3  # stopped at its first rung
    first = next(row for row in result["trials"] if row["trial"] == 0)
    assert not first["pruned"] and first["status"] == "completed"  # the first trial at a rung always goes on
    states = {t.user_attrs["run_id"]: t.state for t in _study(ws, search_id).trials}
    assert states[hopeless["run_id"]] == optuna.trial.TrialState.PRUNED
    assert result["best_run_id"] != hopeless["run_id"]


def test_a_search_refuses_a_dataset_that_cannot_be_opened(searching, tmp_path: Path) -> None:
    from core.common.errors import CoreError

    ws, store, searches = searching
    with pytest.raises(CoreError):
        searches.start(SearchSpec(TrainConfig(dataset=str(tmp_path / "nowhere")), parse_space({"lr": [0.1]})))
    assert store.list_runs() == []


def test_stopping_drops_a_queued_trial_and_resume_starts_it_afresh(tmp_path: Path, digits: Path) -> None:
    ws = Workspace.open(tmp_path / "ws").with_roots(digits)
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store, cores=1)
    searches = Searches(registry, ws)
    blocker = train_run.submit_training(registry, ws, TrainConfig(dataset=str(digits), arch="lenet", epochs=20))
    search_id = searches.start(_spec(digits, {"lr": [0.05]}, method="grid"))
    queued = wait_until(lambda: trials(store, search_id), timeout=60, what="the trial's run")[0]
    assert store.get_run(queued.run_id).status == "queued"  # waits behind the other run for the one core
    searches.stop(search_id)
    assert searches.wait(search_id, timeout=TIMEOUT)
    assert trials(store, search_id) == []  # dropped: a queued trial leaves no run behind
    [open_trial] = _study(ws, search_id).trials
    assert open_trial.state == optuna.trial.TrialState.RUNNING  # ... and stays owed to the search
    registry.cancel(blocker)
    registry.wait(blocker, timeout=120)

    searches.resume(search_id)
    assert searches.wait(search_id, timeout=TIMEOUT)
    [row] = search_json(store, search_id)["trials"]
    assert row["status"] == "completed" and row["params"] == {"lr": 0.05} and row["run_id"] != queued.run_id
    assert [t.state for t in _study(ws, search_id).trials] == [optuna.trial.TrialState.COMPLETE]


# --- rates per optimizer, trials at chance, no best at chance (issue 24) ---------------------------------------


def test_adam_and_sgd_trials_draw_rates_in_their_own_ranges(searching, digits: Path) -> None:
    ws, store, searches = searching
    space = {"optimizer": ["sgd", "adam"], "lr": "usual"}
    search_id = searches.start(_spec(digits, space, trials=4, seed=2))
    assert searches.wait(search_id, timeout=TIMEOUT)
    result = search_json(store, search_id, ws)
    assert result["status"] == "completed", result["error"]
    ranges = {"sgd": (0.01, 0.3), "adam": (1e-4, 3e-3)}
    drawn = {row["params"]["optimizer"] for row in result["trials"]}
    assert drawn == {"sgd", "adam"}, "the draws' seed no longer tries both optimizers; pick another"
    for row, run in zip(result["trials"], trials(store, search_id), strict=True):
        low, high = ranges[row["params"]["optimizer"]]
        assert low <= row["params"]["lr"] <= high and run.config["lr"] == row["params"]["lr"], row["params"]
    assert ("Learning rate: 0.01 to 0.3 for SGD (momentum), 1e-4 to 3e-3 for Adam (log scale, around each "
            "optimizer's usual rate)") in result["space_words"]  # fmt: skip
    assert result["warnings"] == []


def test_a_grid_around_the_usual_rates_tries_each_optimizers_own_rates_with_halving(searching, digits: Path) -> None:
    ws, store, searches = searching
    space = {"optimizer": ["sgd", "adam"], "lr_factor": {"low": 0.1, "high": 3, "log": True, "steps": 2}}
    search_id = searches.start(_spec(digits, space, method="grid", epochs=2, prune=True))
    assert searches.wait(search_id, timeout=TIMEOUT)
    result = search_json(store, search_id, ws)
    assert result["status"] == "completed" and len(result["trials"]) == 4, result["error"]
    tried = {(row["params"]["optimizer"], row["params"]["lr"]) for row in result["trials"]}
    assert tried == {("sgd", 0.01), ("sgd", 0.3), ("adam", 1e-4), ("adam", 3e-3)}
    assert all(row["status"] == "completed" or row["pruned"] for row in result["trials"])
    assert {t.state for t in _study(ws, search_id).trials} <= {optuna.trial.TrialState.COMPLETE,
                                                                optuna.trial.TrialState.PRUNED}  # fmt: skip


def test_a_search_whose_trials_all_sit_at_chance_has_no_best(tmp_path: Path) -> None:
    data = write_meaningless_labels(tmp_path / "noise")
    ws = Workspace.open(tmp_path / "ws").with_roots(data)
    store = RunStore(ws.runs_db)
    searches = Searches(JobRegistry(store, cores=2), ws)
    base = TrainConfig(dataset=str(data), arch="lenet", epochs=2, batch_size=16, log_every=5)
    search_id = searches.start(SearchSpec(base, parse_space({"lr": [0.01, 0.05]}), method="grid"))
    assert searches.wait(search_id, timeout=TIMEOUT)
    result = search_json(store, search_id, ws)
    assert result["status"] == "completed" and len(result["trials"]) == 2
    for row in result["trials"]:  # 18 validation images of 3 classes: chance is a third
        assert row["status"] == "completed" and row["at_chance"], row
        assert row["chance"] == pytest.approx(1 / 3) and row["note"].startswith("about chance (33.3%")
    assert result["best_run_id"] is None and result["best_value"] is None
    assert result["best_why"].startswith("No trial learned: every score is about chance (33.3%")
    assert "Try " in result["best_why"]


def test_a_mixed_search_picks_its_best_among_the_trials_that_learned(searching, digits: Path) -> None:
    ws, store, searches = searching
    search_id = searches.start(_spec(digits, {"lr": [1e-6, 0.05]}, method="grid"))  # 1e-6: nothing moves in 1 epoch
    assert searches.wait(search_id, timeout=TIMEOUT)
    result = search_json(store, search_id)  # without the workspace: the store's record of the splits
    still = next(row for row in result["trials"] if row["params"]["lr"] == 1e-6)
    learner = next(row for row in result["trials"] if row["params"]["lr"] == 0.05)
    assert still["at_chance"] and not learner["at_chance"] and learner["note"] == ""
    assert still["chance"] == pytest.approx(learner["chance"]) and 0.09 < still["chance"] < 0.13  # digits: ~1/10
    assert result["best_run_id"] == learner["run_id"]
    assert result["best_why"] == "chosen among the 1 trial that learned; 1 scored about chance"


def test_the_best_is_chosen_among_the_trials_that_are_not_at_chance() -> None:
    from core.experiments.results import best_trial, best_words

    def row(run_id: int, value: float, at_chance: bool, outcome: str | None = "learned") -> dict:
        return {"run_id": run_id, "status": "completed", "value": value, "at_chance": at_chance, "outcome": outcome}

    # Lowest validation loss: a trial at chance can have a lower loss than one that learned (an overconfident one).
    rows = [row(1, 0.9, False), row(2, 0.4, True), row(3, 0.3, False, "did not learn")]
    assert best_trial(rows, "minimize")["run_id"] == 1
    assert best_trial([row(2, 0.4, True)], "minimize") is None
    assert best_words(rows) == "chosen among the 1 trial that learned; 1 scored about chance; 1 did not learn"
    assert best_words([rows[2]]).startswith("No trial learned: 1 did not learn. Try ")
    assert best_words([]) == "no trial has finished with a score yet"
