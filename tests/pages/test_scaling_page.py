"""AppTest of the Scaling page: empty, a sweep started from the page to its tables, hand-made points with an
oversubscribed one, and the Train page taking its default threads from a measured sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.datasets.sources import resolve_dataset
from core.scaling.sweep import measured
from core.store.runs import RunStore
from tests import imagefactory as fx
from tests.support import ROOT, wait_until

PAGE = "app_pages/scaling.py"


def _app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "photos"
    for label in ("sea", "sky"):
        for i in range(10):
            fx.write_photo(root / label / f"{i}.jpg", seed=i + (50 if label == "sky" else 0))
    return root


def test_empty_state_offers_the_form() -> None:
    at = _app()
    assert "No sweep has finished yet" in at.info[0].value
    assert at.selectbox(key="sweep_kind").format_func("prep") == "Preparing the data"


def test_a_sweep_started_on_the_page_ends_in_a_table_with_its_reading(photos: Path) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["dataset"] = resolve_dataset(str(photos), Workspace.open())
    at.run()
    at.switch_page(PAGE).run()
    at.number_input(key="sweep_repeats").set_value(1).run()
    at.radio(key="sweep_mode").set_value("threads").run()
    at.button(key="sweep_start").click().run()
    assert not at.exception, at.exception
    from ui.state import jobs

    sweep = jobs().jobs()[-1]
    wait_until(lambda: jobs().wait(sweep.run_id, timeout=120).done, timeout=150, what="the sweep")
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table["Workers"]) == [1, 2] and table["Efficiency"][0] == "100%"
    assert "Time (s)" in table.columns and "run_id" not in table.columns
    text = " ".join(m.value for m in at.markdown)
    assert "2 threads" in text and "Fastest here" in text
    assert len(at.get("plotly_chart")) == 2


def _point(store: RunStore, group: str, parent: int, workers: int, threads: int, seconds: float) -> None:
    settings = {"mode": "ddp", "task": "training", "workers": workers, "threads_per_worker": threads, "cores": 2}
    with measured(store, kind="train", dataset="sample:digits", group=group, parent=parent, settings=settings) as p:
        p["time_s"], p["images"] = seconds, 1257


def test_an_oversubscribed_point_is_marked_and_explained(fresh_workspace: Path) -> None:
    store = RunStore(Workspace.open(fresh_workspace).runs_db)
    sweep = store.create_run(dataset="sample:digits", kind="sweep", config={"kind": "ddp", "arch": "auto"},
                             status="completed")  # fmt: skip
    for workers, threads, seconds in ((1, 2, 20.0), (2, 1, 18.0), (2, 2, 41.0)):
        _point(store, f"sweep-{sweep}", sweep, workers, threads, seconds)
    at = _app()
    table = at.dataframe[0].value
    assert list(table["Oversubscribed"]) == ["", "", "yes: more threads than cores"]  # measured on 2 cores
    assert list(table["Speedup"]) == ["1.00x", "1.11x", "0.49x"]  # 20 / 41: inverse scaling, as in the car report
    text = " ".join(m.value for m in at.markdown)
    assert "the car report's trap" in text
    assert any("oversubscribed" in c.value for c in at.caption)


def test_the_train_page_offers_the_fastest_measured_setting(fresh_workspace: Path) -> None:
    """Offered, never applied by itself: the page's defaults stay the command line's (both train alike)."""
    store = RunStore(Workspace.open(fresh_workspace).runs_db)
    sweep = store.create_run(dataset="sample:digits", kind="sweep", config={"kind": "ddp", "arch": "auto"},
                             status="completed")  # fmt: skip
    _point(store, f"sweep-{sweep}", sweep, 1, 2, 20.0)
    _point(store, f"sweep-{sweep}", sweep, 2, 1, 30.0)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception, at.exception
    assert at.number_input(key="train_ranks").value == 1 and at.checkbox(key="train_threads_auto").value
    offer = at.button(key="train_use_measured")
    assert f"sweep {sweep}" in offer.label
    offer.click().run()
    assert not at.exception, at.exception
    assert at.number_input(key="train_ranks").value == 1
    assert not at.checkbox(key="train_threads_auto").value and at.number_input(key="train_threads").value == 2


def test_a_sweep_waiting_for_a_core_is_queued_and_its_stop_cancels_it(photos: Path) -> None:
    """The page queues the sweep as the command line does (core.scaling.sweep.submit_sweep): while other jobs hold
    every core it waits, shown with its Stop button, and Stop ends it cancelled before any point ran."""
    import threading

    from ui.state import jobs, run_store

    registry, store = jobs(), run_store()
    release = threading.Event()
    holders = [store.create_run(dataset="elsewhere") for _ in range(registry.cores)]
    for run_id in holders:
        registry.submit(run_id, lambda ctx: "completed" if release.wait(120) else "cancelled")
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.session_state["dataset"] = resolve_dataset(str(photos), Workspace.open())
        at.run()
        at.switch_page(PAGE).run()
        at.button(key="sweep_start").click().run()
        assert not at.exception, at.exception
        [sweep] = store.list_runs(kind="sweep")
        assert sweep.status == "queued" and registry.get(sweep.run_id).status == "queued"
        at.button(key=f"sweep_stop_{sweep.run_id}").click().run()
        assert not at.exception, at.exception
        assert store.get_run(sweep.run_id).status == "cancelled"
        assert store.list_runs(group=f"sweep-{sweep.run_id}") == []  # no point ran
    finally:
        release.set()
        for run_id in holders:
            registry.wait(run_id, timeout=60)


def test_a_serial_fraction_above_one_is_said_in_words_not_shown_raw() -> None:
    from ui.scaling import _serial_words

    assert _serial_words(0.25) == "25%" and _serial_words(1.0) == "100%"
    assert _serial_words(2.75) == "over 100%: slower than one worker"  # Karp-Flatt when more workers took longer
