"""AppTest for the experiment pages: Compare (every run in one table), Search (a space set in the page, trials,
stop and resume, the best highlighted), the Train page's learning-rate finder and "Start from run", and the links
between related runs on the Runs page. Real runs of LeNet on small colour folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.experiments.results import search_json
from core.store.runs import RunStore
from core.train import runner as train_run
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry
from tests import imagefactory as fx
from tests.support import ROOT

TIMEOUT = 120


@pytest.fixture(autouse=True)
def nothing_left_running(fresh_workspace: Path) -> Iterator[None]:
    """Never leave a search or a training thread running into the next test."""
    yield
    from ui.state import jobs, searches

    for search_id in searches().active():
        searches().stop(search_id)
        searches().wait(search_id, timeout=120)
    for job in jobs().active():
        jobs().cancel(job.run_id)
        jobs().wait(job.run_id, timeout=60)


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    return fx.write_colour_classes(tmp_path / "data" / "colours", 12)


@pytest.fixture
def slower(tmp_path: Path) -> Path:
    """Enough images that a trial of 24 epochs takes a while: a search can be stopped midway."""
    return fx.write_colour_classes(tmp_path / "data" / "slower", 80, size=(32, 32))


def _app(page: str, dataset: Path | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    if dataset is not None:
        from core.datasets.sources import resolve_dataset

        at.session_state["dataset"] = resolve_dataset(str(dataset), Workspace.open())
    return at.switch_page(page).run()


def _train(ws: Path, folder: Path, **kw) -> int:
    workspace = Workspace.open(ws)
    registry = JobRegistry(RunStore(workspace.runs_db))
    config = TrainConfig(**{"dataset": str(folder), "arch": "lenet", "epochs": 1, "batch_size": 8, **kw})
    run_id = train_run.submit_training(registry, workspace, config)
    assert registry.wait(run_id, timeout=300).status == "completed"
    return run_id


def _texts(at: AppTest) -> str:
    return " ".join(e.value for kind in ("markdown", "caption", "success", "info", "warning", "error")
                    for e in getattr(at, kind))  # fmt: skip


# --- Compare ------------------------------------------------------------------------------------------------


def test_compare_without_runs_says_what_to_do() -> None:
    at = _app("app_pages/compare.py")
    assert not at.exception
    assert "No runs to compare yet" in at.info[0].value


def test_compare_shows_every_run_in_words_with_how_they_are_related(colours: Path, fresh_workspace: Path) -> None:
    parent = _train(fresh_workspace, colours, optimizer="adam")
    child = _train(fresh_workspace, colours, from_run=parent)
    at = _app("app_pages/compare.py")
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["run_id"]) == [child, parent]
    rows = table.set_index("run_id")
    assert rows.loc[child, "family"] == f"from run {parent}" and rows.loc[parent, "family"] == ""
    assert rows.loc[parent, "optimizer"] == "Adam" and rows.loc[parent, "arch"] == "LeNet (small CNN)"
    assert rows.loc[parent, "status"] == "finished" and rows.loc[parent, "test_accuracy"].endswith("%")
    assert rows.loc[parent, "test_accuracy_clean"] == "—"  # not checked for copies yet: said, not "None"
    assert "2 of 2 runs" in _texts(at)
    assert at.get("download_button") and at.get("plotly_chart")  # the CSV and the settings chart
    at.selectbox(key="compare_sort").select("test_accuracy").run()
    assert not at.exception and len(at.dataframe[0].value) == 2
    at.multiselect(key="compare_family").select(f"from run {parent}").run()
    assert list(at.dataframe[0].value["run_id"]) == [child] and "1 of 2 runs" in _texts(at)


def test_compare_checks_test_images_for_copies_when_asked(colours: Path, fresh_workspace: Path) -> None:
    _train(fresh_workspace, colours)
    at = _app("app_pages/compare.py")
    assert list(at.dataframe[0].value["n_leaking"]) == ["—"]  # not fingerprinted: not checked, not "0"
    at.button(key="compare_leaks").click().run()
    assert not at.exception
    assert at.dataframe[0].value["n_leaking"][0].isdigit()
    assert at.dataframe[0].value["test_accuracy_clean"][0].endswith("%")
    assert not [b for b in at.button if b.key == "compare_leaks"]  # done: the button is gone


# --- Search -------------------------------------------------------------------------------------------------


def _start_search(at: AppTest, *, trials: int = 2, epochs: int = 1, metric: str = "val_acc") -> None:
    at.multiselect(key="search_optimizer").set_value(["sgd", "adam"])
    at.multiselect(key="search_epochs").set_value([epochs])
    at.multiselect(key="search_batch_size").set_value([16])
    at.multiselect(key="search_arch").set_value(["lenet"])
    at.number_input(key="search_trials").set_value(trials)
    at.selectbox(key="search_metric").select(metric)
    at.button(key="FormSubmitter:search_form-Start the search").click().run()


def test_search_first_visit_offers_the_form(colours: Path) -> None:
    at = _app("app_pages/search.py", colours)
    assert not at.exception
    assert at.expander[0].label.startswith("New search on colours")
    assert "No search yet" in at.info[0].value
    assert at.multiselect(key="search_optimizer").value == ["sgd", "adam"]


def test_the_form_starts_with_the_recipes_automatic_batch(colours: Path, fresh_workspace: Path) -> None:
    """As on the Train page: a small set gets smaller steps (issue 24); a fixed 64 put a search back on the knife edge."""
    at = _app("app_pages/search.py", colours)
    batch = at.multiselect(key="search_batch_size")
    assert batch.value == [0] and batch.format_func(0) == "Automatic"


def test_a_search_from_the_form_trains_its_trials_and_highlights_the_best(colours: Path, fresh_workspace: Path) -> None:
    at = _app("app_pages/search.py", colours)
    _start_search(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    from ui.state import searches

    [search_id] = RunStore(Workspace.open(fresh_workspace).runs_db).list_runs(kind="search")
    search_id = search_id.run_id
    assert at.query_params["search"] == [str(search_id)] or at.query_params["search"] == str(search_id)
    assert searches().wait(search_id, timeout=300)
    at.run()
    assert not at.exception
    result = search_json(RunStore(Workspace.open(fresh_workspace).runs_db), search_id)
    best = result["best_run_id"]
    table = at.dataframe[0].value
    assert len(table) == 2 and set(table["status"]) == {"finished"}
    # The rate was drawn around each trial's own optimizer's usual rate, as the page says (issue 24).
    assert "Learning rate: 0.01 to 0.3 for SGD (momentum), 1e-4 to 3e-3 for Adam" in _texts(at)
    ranges = {"sgd": (0.01, 0.3), "adam": (1e-4, 3e-3)}
    for row in result["trials"]:
        low, high = ranges[row["params"]["optimizer"]]
        assert low <= row["params"]["lr"] <= high, row["params"]
    assert list(table.loc[table["best"] == "★ best", "run_id"]) == [best]
    assert f"Best so far: **run {best}**" in _texts(at) and "Finished" in _texts(at)
    assert at.selectbox(key="search_pick").options[0].endswith("· finished")
    links = {link.label: link for link in at.get("page_link")}
    assert "Open its evaluation" in links
    assert at.button(key="search_stop").disabled and at.button(key="search_resume").disabled


def test_a_search_whose_trials_all_sit_at_chance_shows_no_best_and_says_so(tmp_path: Path,
                                                                          fresh_workspace: Path) -> None:  # fmt: skip
    """The issue's search: one typed rate range (0.01-0.3) for SGD and Adam, on images whose labels say nothing."""
    from tests.train.test_guard import write_meaningless_labels
    from ui.state import searches

    at = _app("app_pages/search.py", write_meaningless_labels(tmp_path / "data" / "noise"))
    at.radio(key="search_lr").set_value("range")
    _start_search(at, trials=2, epochs=2)
    assert not at.exception and not at.error, [e.value for e in at.error]
    store = RunStore(Workspace.open(fresh_workspace).runs_db)
    search_id = store.list_runs(kind="search")[0].run_id
    assert searches().wait(search_id, timeout=300)
    at.run()
    assert not at.exception
    result = search_json(store, search_id)
    assert result["best_run_id"] is None and all(row["at_chance"] for row in result["trials"])
    table = at.dataframe[0].value
    assert "best" not in table.columns or not (table["best"] == "★ best").any()  # no star
    assert all(note.startswith("about chance (33.3%") for note in table["note"])
    texts = _texts(at)
    assert "Best so far" not in texts and not at.success
    assert "No trial learned: every score is about chance (33.3%" in texts
    assert "lie far outside Adam's usual range (1e-4 to 3e-3)" in texts  # the typed range is kept, and said


def test_a_search_that_varies_nothing_is_refused_in_words(colours: Path, fresh_workspace: Path) -> None:
    at = _app("app_pages/search.py", colours)
    at.radio(key="search_lr").set_value("fixed")
    at.multiselect(key="search_optimizer").set_value(["sgd"])
    at.button(key="FormSubmitter:search_form-Start the search").click().run()
    assert not at.exception
    assert "nothing varies" in at.error[0].value
    assert RunStore(Workspace.open(fresh_workspace).runs_db).list_runs() == []


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_a_search_stopped_from_the_page_can_be_resumed(slower: Path, fresh_workspace: Path) -> None:
    from tests.support import wait_until
    from ui.state import searches

    at = _app("app_pages/search.py", slower)
    _start_search(at, trials=2, epochs=24)
    store = RunStore(Workspace.open(fresh_workspace).runs_db)
    search_id = store.list_runs(kind="search")[0].run_id
    wait_until(lambda: not store.metrics([r.run_id for r in store.list_runs(kind="train")] or [0], ["val_acc"]).empty,
               timeout=300, what="a trial's first epoch", interval=0.2)  # fmt: skip
    at.run()
    assert not at.button(key="search_stop").disabled
    at.button(key="search_stop").click().run()
    assert searches().wait(search_id, timeout=300)
    at.run()
    assert not at.exception
    assert "Stopped" in _texts(at) and "stopped" in set(at.dataframe[0].value["status"])
    assert not at.button(key="search_resume").disabled
    at.button(key="search_resume").click().run()
    assert not at.exception
    assert searches().wait(search_id, timeout=300)
    assert search_json(store, search_id)["status"] == "completed"


def test_ranking_by_the_test_score_is_said_to_be_optimistic(colours: Path) -> None:
    at = _app("app_pages/search.py", colours)
    _start_search(at, metric="test_accuracy")
    assert not at.exception
    assert "the test images chose it" in _texts(at)


# --- Train: learning-rate finder and "Start from run" ------------------------------------------------------


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_find_a_learning_rate_plots_the_sweep_and_fills_the_field(colours: Path, fresh_workspace: Path) -> None:
    at = _app("app_pages/train.py", colours)
    at.selectbox(key="train_arch").select("lenet").run()
    at.button(key="train_find_lr").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    found = at.session_state["lrfind_result"]
    assert not at.checkbox(key="train_lr_auto").value
    assert at.number_input(key="train_lr").value == pytest.approx(found["suggested"])
    assert at.selectbox(key="train_arch").value == "lenet"  # the other settings kept
    assert any(chart.key == "lrfind_plot" for chart in at.get("plotly_chart")) or at.get("plotly_chart")
    assert "valley" in _texts(at) and "now in the learning-rate field" in _texts(at)
    assert RunStore(Workspace.open(fresh_workspace).runs_db).list_runs() == []  # no run left behind


def test_start_from_run_offers_finished_runs_and_trains_a_child(colours: Path, fresh_workspace: Path) -> None:
    parent = _train(fresh_workspace, colours)
    at = _app("app_pages/train.py", colours)
    picker = at.selectbox(key="train_from_run")
    assert picker.options[0].startswith("No") and any(o.startswith(f"Run {parent} · LeNet") for o in picker.options)
    picker.set_value(parent).run()
    assert not at.exception
    assert at.selectbox(key="train_arch").value == "auto"
    assert any(c.value.startswith("Automatic: LeNet (small CNN).") for c in at.caption)  # the parent's network
    shown = at.selectbox(key="train_weights_parent")  # the starting weights are the parent's, not "Random"
    assert shown.disabled and shown.format_func(parent) == f"Run {parent}'s (see Advanced)"
    assert not [s for s in at.selectbox if s.key == "train_weights"]  # ImageNet cannot be asked for beside it
    at.checkbox(key="train_epochs_auto").uncheck().run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error
    from ui.state import jobs

    job = jobs().active()[0]
    assert jobs().wait(job.run_id, timeout=300).status == "completed"
    assert RunStore(Workspace.open(fresh_workspace).runs_db).get_run(job.run_id).parent_id == parent


# --- Runs: related runs linked -----------------------------------------------------------------------------


def test_a_childs_run_page_links_its_parent_and_a_run_can_be_a_parent(colours: Path, fresh_workspace: Path) -> None:
    parent = _train(fresh_workspace, colours)
    child = _train(fresh_workspace, colours, from_run=parent)
    at = _app("app_pages/runs.py")
    at.query_params["run"] = str(child)
    at.run()
    links = {link.label: link for link in at.get("page_link")}
    assert f"Started from run {parent}'s weights" in links
    at.button(key="run_child").click().run()
    assert not at.exception
    assert at.selectbox(key="train_from_run").value == child  # the Train form, starting from that run
