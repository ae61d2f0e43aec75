"""AppTest: after a poor newer run (a search trial at chance), Evaluate, Classify and Compare open on the best run on
the data, say which one it is, and keep another choice in the address (issue 25)."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train.run_folder import checkpoint_path
from tests.evaluate.runs import colour_folders, train
from tests.support import ROOT

TIMEOUT = 180


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """A workspace with a good run on the colour folders and, newer, one that learned nothing (a rate of 1e-9)."""
    base = tmp_path_factory.mktemp("best-first")
    ws = Workspace.open(base / "ws").with_roots(base)
    colours = colour_folders(base / "colours")
    good = train(ws, colours, epochs=3)
    poor = train(ws, colours, epochs=1, lr=1e-9)
    store = RunStore(ws.runs_db)
    assert store.latest_metrics(good)["test_accuracy"] > store.latest_metrics(poor)["test_accuracy"]
    return base, good, poor


@pytest.fixture
def open_page(two_runs, monkeypatch: pytest.MonkeyPatch):
    base = two_runs[0]

    def go(page: str, run: int | None = None) -> AppTest:
        monkeypatch.setenv("STUDIO_WORKSPACE", str(base / "ws"))
        monkeypatch.setenv("STUDIO_DATA_ROOTS", str(base))
        st.cache_resource.clear()
        st.cache_data.clear()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
        if run is not None:
            at.query_params["run"] = str(run)
        return at.switch_page(page).run()

    yield go
    st.cache_resource.clear()


def test_evaluate_opens_on_the_best_run_not_the_newest_and_says_so(open_page, two_runs) -> None:
    _, good, poor = two_runs
    at = open_page("app_pages/evaluate.py")
    box = at.selectbox(key="evaluate_run")
    assert not at.exception and box.value == good
    assert box.format_func(good).startswith(f"Run {good} (the best on this data) · ")
    assert "the best on this data" not in box.format_func(poor)
    assert "run" not in at.query_params  # the default is not written into the address


def test_evaluate_keeps_a_run_the_address_names_and_a_choice_in_the_address(open_page, two_runs) -> None:
    _, good, poor = two_runs
    at = open_page("app_pages/evaluate.py", run=poor)
    assert at.selectbox(key="evaluate_run").value == poor
    at.selectbox(key="evaluate_run").set_value(good).run()
    assert "run" not in at.query_params
    at.selectbox(key="evaluate_run").set_value(poor).run()
    assert at.query_params["run"] == str(poor)


def test_classify_opens_on_the_best_run_and_keeps_another_in_the_address(open_page, two_runs) -> None:
    _, good, poor = two_runs
    at = open_page("app_pages/classify.py")
    box = at.selectbox(key="classify_model")
    assert not at.exception and box.value.startswith(f"run:{good}:")
    assert "the best on this data" in box.format_func(box.value)
    stamp = checkpoint_path(Workspace.open(two_runs[0] / "ws"), poor, "best").stat().st_mtime_ns
    box.set_value(f"run:{poor}:{stamp}").run()
    assert at.query_params["run"] == str(poor)
    again = open_page("app_pages/classify.py", run=poor)
    assert again.selectbox(key="classify_model").value.startswith(f"run:{poor}:")


def test_compare_marks_the_best_run(open_page, two_runs) -> None:
    _, good, _ = two_runs
    at = open_page("app_pages/compare.py")
    table = at.dataframe[0].value
    shown = table.data if hasattr(table, "data") else table
    marked = shown.loc[shown["best"] != "", "run_id"].tolist()
    assert not at.exception and marked == [good]


def test_a_run_at_chance_says_so_beside_its_score_and_a_good_one_names_chance(open_page, two_runs) -> None:
    _, good, poor = two_runs
    words = " ".join(c.value for c in open_page("app_pages/evaluate.py", run=poor).caption)
    assert "That is about chance: always answering the biggest class gets " in words
    assert "has not learned to tell the classes apart" in words
    words = " ".join(c.value for c in open_page("app_pages/evaluate.py", run=good).caption)
    assert "Chance level (always answering the biggest class): " in words and "about chance" not in words
