"""What the pages keep between reruns, tabs and workspaces: Streamlit's caches instead of dictionaries kept per tab
(the 2-D map, the leak notice), a copy of an evaluation per session, tables keyed by their workspace, and
"Rerun with changes" forgetting only the Train form's values."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.datasets.sources import DatasetRef
from core.dedup.groups import find_duplicates
from core.store.runs import RunStore
from core.train.config import TrainConfig
from tests import imagefactory as f
from tests.support import ROOT

TIMEOUT = 120


def _app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)


# -- the 2-D map of the Datasets page ------------------------------------------------------------------------


def test_a_2d_map_is_computed_once_for_every_tab(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.datasets import embed

    made: list[str] = []
    real = embed.projection_frame

    def counted(*args, **kwargs) -> pd.DataFrame:  # the real projection, counted
        made.append(args[2] if len(args) > 2 else kwargs.get("method", "pca"))
        return real(*args, **kwargs)

    monkeypatch.setattr(embed, "projection_frame", counted)
    tabs = []
    for _ in range(2):  # two browser tabs on the built-in digits
        at = _app().run()
        at.switch_page("app_pages/datasets.py").run()
        at.session_state["dataset_tab"] = "2-D map"
        at.run()
        at.slider(key="proj_points").set_value(300).run()
        at.button(key="proj_go").click().run()
        assert not at.exception, at.exception
        assert len(at.get("plotly_chart")) == 1
        tabs.append(at)
    assert made == ["pca"]  # the second tab's view came from the first one's, not from another computation
    tabs[0].run()  # a rerun draws it again without the button, from the same cache
    assert len(tabs[0].get("plotly_chart")) == 1 and made == ["pca"]
    assert "projections" not in tabs[0].session_state  # no per-tab copy of every view ever drawn


# -- the leak notice of the pages that show a score ------------------------------------------------------------


def _score_app(tmp_path: Path) -> Path:
    """A tiny app: a "score" page that calls leakage_notice, as the Runs page does, and the page it links to."""
    main = tmp_path / "site" / "main.py"
    main.parent.mkdir()
    (main.parent / "app_pages").symlink_to(ROOT / "app_pages")
    main.write_text(
        "import streamlit as st\n"
        "from ui.duplicates.leakage import leakage_notice\n"
        "from ui.state import current_ref\n"
        "def score():\n"
        "    leakage_notice(current_ref())\n"
        "st.navigation([st.Page(score, title='Score', default=True),\n"
        f"               st.Page({str(ROOT / 'app_pages' / 'duplicates.py')!r})]).run()\n"
    )
    return main


def test_the_leak_notice_follows_the_fingerprints_of_a_new_search(tmp_path: Path, fresh_workspace: Path) -> None:
    root = tmp_path / "data" / "leaky"
    f.write_photo(root / "train/cat/a.jpg", 1, (120, 90))
    f.write_copy(root / "train/cat/a.jpg", root / "val/cat/a_q60.jpg", quality=60)  # leaked into val
    f.write_photo(root / "train/dog/b.jpg", 2, (120, 90))
    f.write_copy(root / "train/dog/b.jpg", root / "test/dog/b_half.png", scale=0.5)  # leaked into test
    f.write_photo(root / "train/dog/c.jpg", 3, (120, 90))
    ref = DatasetRef("folder", root, name="leaky")
    ws = Workspace.open(fresh_workspace)
    find_duplicates(ref, ws.cache)  # the Duplicates page of another tab fingerprinted it
    at = AppTest.from_file(str(_score_app(tmp_path)), default_timeout=TIMEOUT)
    at.session_state["dataset"] = ref
    at.run()
    assert not at.exception, at.exception
    assert at.warning[0].value.startswith("1 val image has a copy in train, 1 test image has a copy in train")
    # The val copy is replaced by another picture and the dataset searched again (on any tab): this tab says so.
    f.write_photo(root / "val/cat/a_q60.jpg", 9, (120, 90))
    find_duplicates(ref, ws.cache)
    at.run()
    assert not at.exception, at.exception
    assert at.warning[0].value == "1 test image has a copy in train: scores on the test split are optimistic."
    assert "leakage_reports" not in at.session_state  # no per-tab dictionary of reports


# -- the Evaluate page's evaluation ----------------------------------------------------------------------------


@pytest.fixture
def colours_run(fresh_workspace: Path, tmp_path: Path) -> int:
    from tests.evaluate.runs import colour_folders, train

    ws = Workspace.open(fresh_workspace).with_roots(tmp_path / "data")
    return train(ws, colour_folders(tmp_path / "data" / "colours"), epochs=1)


def test_every_session_gets_its_own_copy_of_an_evaluation(colours_run: int, fresh_workspace: Path) -> None:
    from ui.evaluate import loading

    ws = Workspace.open(fresh_workspace)
    store = RunStore(ws.runs_db)
    first = loading._evaluation(colours_run, "test", "cached", 0, str(ws.root), ws, store)
    labels = first.frame["label"].tolist()
    first.frame["label"] = "changed"  # whatever one page does to its evaluation...
    first.metrics.per_class["f1"] = -1.0
    second = loading._evaluation(colours_run, "test", "cached", 0, str(ws.root), ws, store)
    assert second is not first and second.frame["label"].tolist() == labels  # ...another session does not see
    assert (second.metrics.per_class["f1"] >= 0).all()
    at = _app().run()  # the page works from the copies
    at.switch_page("app_pages/evaluate.py").run()
    assert not at.exception, at.exception
    assert any(m.label == "Right answers" for m in at.metric)


# -- the Compare page's table ----------------------------------------------------------------------------------


def _finished(store: RunStore, accuracy: float) -> int:
    run_id = store.create_run(dataset="sample:digits", kind="train", arch="lenet", config=TrainConfig().to_dict())
    store.log_metrics(run_id, [("test_accuracy", 1, accuracy)])
    store.finish_run(run_id, "completed")
    return run_id


def test_the_compare_table_is_kept_per_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ui import compare

    first = tmp_path / "first"
    original = RunStore(Workspace.open(first).runs_db)
    run_id = _finished(original, 0.5)
    original.close()  # its last writes checkpointed into the file before it is copied (reopened on the next use)
    shutil.copytree(first, tmp_path / "copy")  # a copied workspace: the same run ids, statuses and end times
    copy = RunStore(Workspace.open(tmp_path / "copy").runs_db)
    copy.log_metrics(run_id, [("test_accuracy", 2, 0.9)])  # then trained on: another score
    for folder, store, accuracy in ((first, original, 0.5), (tmp_path / "copy", copy, 0.9)):
        monkeypatch.setenv("STUDIO_WORKSPACE", str(folder))
        st.cache_resource.clear()  # the server restarted on the other workspace; its data cache stayed
        table = compare.table(store, store.list_runs(kind="train"))
        assert table["test_accuracy"].tolist() == [accuracy], folder.name


# -- "Rerun with changes" --------------------------------------------------------------------------------------


def test_rerun_with_changes_forgets_the_form_but_not_the_run_this_tab_started(fresh_workspace: Path) -> None:
    store = RunStore(Workspace.open(fresh_workspace).runs_db)
    config = TrainConfig(dataset="sample:digits", arch="lenet", epochs=2, batch_size=8)
    started = _finished(store, 0.75)  # the run this tab started last: the Train page shows its result
    older = store.create_run(dataset="sample:digits", kind="train", arch="lenet", config=config.to_dict())
    store.finish_run(older, "completed")
    at = _app()
    at.session_state["train_last_started"] = started
    at.run()
    at.switch_page("app_pages/train.py").run()
    at.checkbox(key="train_batch_size_auto").uncheck().run()
    at.number_input(key="train_batch_size").set_value(48).run()  # a change on the form, then Runs
    at.checkbox(key="train_epochs_auto").uncheck().run()
    at.switch_page("app_pages/runs.py").run()
    at.query_params["run"] = str(older)
    at.run()
    at.button(key="run_rerun").click().run()
    assert not at.exception, at.exception
    assert at.number_input(key="train_batch_size").value == 8  # the form shows the run's settings...
    assert at.number_input(key="train_epochs").value == 2
    assert at.session_state["train_last_started"] == started  # ...and the tab still knows the run it started
    assert any(s.value.startswith(f"**lenet-{started}** finished") for s in at.success)
