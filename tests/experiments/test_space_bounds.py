"""A search space's values and sizes are bounded like the training options (issue 22): infinite rates, absurd epochs,
a range of ten million steps and a grid of millions of combinations are refused before any list is built."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from core.common.workspace import Workspace
from core.experiments.results import search_json
from core.experiments.search import MAX_TRIALS, Searches, SearchSpec
from core.experiments.space import MAX_GRID, MAX_STEPS, MAX_VALUES, SpaceError, parse_space
from core.store.runs import RunStore
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry
from tests import imagefactory as fx

# Checking a bad space must not build what it describes: a 10-million-value grid took 1.1 GB to be checked.
CHECK_BYTES = 20 * 1024**2


def _peak_bytes(check: Callable[[], object]) -> int:
    """Python's peak allocation while ``check`` runs (it is expected to raise SpaceError)."""
    tracemalloc.start()
    try:
        with pytest.raises(SpaceError):
            check()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('{"lr": [Infinity]}', "lr inf: expected a finite number"),
        ('{"lr": [NaN]}', "lr nan: expected a finite number"),
        ('{"lr": [0.1, -Infinity]}', "lr -inf: expected a finite number"),
        ('{"weight_decay": {"low": 0, "high": Infinity}}', "weight_decay: inf is not a number"),
        ('{"epochs": [1e12]}', "epochs 1000000000000: expected a number <= 1000"),
        ('{"epochs": {"low": 1, "high": 1e12}}', "epochs 1000000000000: expected a number <= 1000"),
        ('{"image_size": [64, 100000]}', "image_size 100000: expected a number <= 1024"),
        ('{"batch_size": {"low": 8, "high": 1e9}}', "batch_size 1000000000: expected a number <= 4096"),
        ('{"lr": {"low": 0.001, "high": 1e6, "log": true}}', "lr 1000000.0: expected a number <= 10"),
    ],
)
def test_values_beyond_the_training_bounds_are_refused(raw: str, says: str) -> None:
    with pytest.raises(SpaceError, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse_space(raw)


def test_a_range_of_ten_million_steps_is_refused_without_building_it() -> None:
    raw = {"lr": {"low": 0.001, "high": 0.1, "steps": 10**7}}
    with pytest.raises(SpaceError, match=f'lr: "steps" is at most {MAX_STEPS}'):
        parse_space(raw)
    assert _peak_bytes(lambda: parse_space(raw)) < CHECK_BYTES


def test_a_grid_of_millions_of_combinations_is_refused_before_it_is_built() -> None:
    raw = {name: {"low": 0.01, "high": 0.5, "steps": MAX_STEPS} for name in ("momentum", "weight_decay", "gamma")}
    raw["lr"] = {"low": 0.001, "high": 1, "log": True, "steps": MAX_STEPS}  # 100**4 = 10**8 combinations
    with pytest.raises(SpaceError, match=f"at most {MAX_GRID:,} combinations"):
        parse_space(raw).grid_size()
    assert _peak_bytes(lambda: parse_space(raw).grid_size()) < CHECK_BYTES


def test_a_whole_number_range_counts_only_the_values_it_can_take() -> None:
    space = parse_space({"epochs": {"low": 1, "high": 3, "steps": MAX_STEPS}, "batch_size": [16, 32]})
    assert space.grid_size() == 3 * 2 == len(space.grid()["epochs"]) * 2


def test_a_list_longer_than_the_limit_is_refused_before_its_values_are_checked() -> None:
    raw = {"lr": [0.001 * (i + 1) / 10**6 for i in range(MAX_VALUES + 1)]}
    with pytest.raises(SpaceError, match=f"lr: at most {MAX_VALUES} values"):
        parse_space(raw)


def test_trials_are_bounded() -> None:
    space = parse_space({"lr": [0.01, 0.1]})
    with pytest.raises(SpaceError, match=f"trials 1000000: expected a whole number from 0 to {MAX_TRIALS}"):
        SearchSpec(TrainConfig(dataset="x"), space, trials=10**6).checked()


def test_a_trial_too_big_for_memory_fails_in_words_and_the_search_goes_on(tmp_path: Path) -> None:
    data = fx.write_colour_classes(tmp_path / "colours", 4)
    ws = Workspace.open(tmp_path / "ws")
    store = RunStore(ws.runs_db)
    searches = Searches(JobRegistry(store, cores=1), ws)
    base = TrainConfig(dataset=str(data), arch="resnet50", image_size=1024)
    search_id = searches.start(SearchSpec(base, parse_space({"batch_size": [2048, 4096]}), method="grid"))
    assert searches.wait(search_id, timeout=120)
    result = search_json(store, search_id)
    assert result["status"] == "completed" and result["best_run_id"] is None
    assert [r.run_id for r in store.list_runs(kind="train")] == []  # no trial was queued
    import optuna

    study = optuna.load_study(study_name=f"search-{search_id}", storage=f"sqlite:///{ws.root / 'optuna.sqlite'}")
    errors = [t.user_attrs.get("error", "") for t in study.trials]
    assert len(errors) == 2 and all("this run would need about" in e for e in errors), errors


def test_a_whole_grid_beyond_the_most_trials_asks_how_many_to_try() -> None:
    space = parse_space({"lr": {"low": 0.001, "high": 1, "log": True, "steps": 100},
                         "momentum": {"low": 0.5, "high": 0.95, "steps": 20}})  # fmt: skip
    with pytest.raises(SpaceError, match=f"the whole grid is 2,000 trials, more than {MAX_TRIALS:,}"):
        SearchSpec(TrainConfig(dataset="x"), space, method="grid").checked()
    assert SearchSpec(TrainConfig(dataset="x"), space, trials=50, method="grid").checked().trials == 50
