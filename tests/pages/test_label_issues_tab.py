"""The Label issues tab of the Duplicates page (issue 27), through AppTest: no run yet; the quick check on colours
with planted wrong labels, decisions on the suspects and the cleaned copy they make; a clean set says nothing is
suspicious; a thorough check says how far its models are and can be cancelled."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.datasets.sources import DatasetRef, resolve_dataset
from tests import imagefactory as fx
from tests.labels import plant_flips
from tests.support import ROOT, train_to_the_end

pytestmark = pytest.mark.usefixtures("no_training_left")
PAGE = "app_pages/duplicates.py"


def _tab(ref: DatasetRef) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["dataset"] = ref
    at.session_state["dup_tab"] = "Label issues"
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def _words(at: AppTest) -> str:
    return "\n".join(e.value for kind in ("markdown", "caption", "info", "success", "error") for e in getattr(at, kind))


@pytest.fixture
def flipped(tmp_path: Path, fresh_workspace: Path):
    """Colour classes with 5% of the images in another class's folder, and a LeNet run trained on them."""
    clean = fx.write_colour_classes(tmp_path / "data" / "clean", 40, size=(16, 16))
    planted = plant_flips(clean, tmp_path / "data" / "flipped")
    ws = Workspace.open(fresh_workspace).with_roots(tmp_path / "data")
    train_to_the_end(ws, dataset=str(planted.root), arch="lenet", epochs=6)
    return ws, planted


def test_without_a_trained_run_the_tab_says_what_to_do(tmp_path: Path, fresh_workspace: Path) -> None:
    colours = fx.write_colour_classes(tmp_path / "data" / "colours", 10, size=(16, 16))
    at = _tab(resolve_dataset(str(colours), Workspace.open(fresh_workspace).with_roots(tmp_path / "data")))
    assert "needs a model trained on this dataset" in _words(at)


def test_the_quick_check_finds_planted_labels_and_decisions_make_a_cleaned_copy(flipped) -> None:
    ws, planted = flipped
    at = _tab(resolve_dataset(str(planted.root), ws))
    at.button(key="labels_go").click().run()
    assert not at.exception, at.exception
    metric = {m.label: m.value for m in at.metric}
    assert metric["Images checked"] == "120" and int(metric["Probably mislabelled"]) >= 1
    shown = [m.value for m in at.markdown if "labelled **" in m.value]
    found = [p for p in planted.flips if any(f"**{p}**" in s for s in shown)]
    assert found, (shown, planted.flips)  # at least one planted flip among the first cards
    cards = [r for r in at.radio if r.key and r.key.startswith("labels_decide_")]
    assert len(cards) == min(6, int(metric["Probably mislabelled"]))  # one decision per card shown
    toggles = [t for t in at.toggle if t.key and t.key.startswith("labels_cam_")]
    toggles[0].set_value(True).run()
    assert not at.exception, at.exception

    def walk(node):
        yield node
        for child in getattr(node, "children", {}).values():
            yield from walk(child)

    captions = [i.caption for n in walk(at._tree) if getattr(n, "type", "") == "image" for i in n.proto.imgs]
    assert len([c for c in captions if c.startswith("for “")]) == 2  # the given label's map and the suggestion's
    cards[0].set_value("Take the suggestion").run()
    assert "Your decisions: 1 image to relabel, 0 images to drop" in _words(at)
    at.session_state["dup_tab"] = "Clean up"
    at.run()
    at.multiselect(key="dup_policies").set_value(["relabel"]).run()
    assert not at.exception, at.exception
    relabelled = [d.value for d in at.dataframe if isinstance(d.value, pd.DataFrame) and "new" in d.value.columns]
    assert relabelled and len(relabelled[0]) == 1, relabelled


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_a_clean_set_is_said_to_be_clean(tmp_path: Path, fresh_workspace: Path) -> None:
    colours = fx.write_colour_classes(tmp_path / "data" / "colours", 30, size=(16, 16))
    ws = Workspace.open(fresh_workspace).with_roots(tmp_path / "data")
    train_to_the_end(ws, dataset=str(colours), arch="lenet", epochs=6)
    at = _tab(resolve_dataset(str(colours), ws))
    at.button(key="labels_go").click().run()
    assert not at.exception, at.exception
    assert any("Nothing suspicious" in s.value for s in at.success), _words(at)


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_a_thorough_check_shows_its_progress_and_cancels(flipped) -> None:
    ws, planted = flipped
    at = _tab(resolve_dataset(str(planted.root), ws))
    at.segmented_control(key="labels_mode").set_value("thorough").run()
    at.button(key="labels_go").click().run()
    assert not at.exception, at.exception
    assert any("models trained" in p.text for p in at.get("progress")), _words(at)
    at.button(key="labels_cancel").click().run()
    assert not at.exception, at.exception


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_evaluate_says_which_mistakes_are_probably_mislabelled(tmp_path: Path, fresh_workspace: Path) -> None:
    clean = fx.write_colour_classes(tmp_path / "data" / "clean", 40, size=(16, 16))
    planted = plant_flips(clean, tmp_path / "data" / "flipped", share=0.15)  # enough that some land in the test split
    ws = Workspace.open(fresh_workspace).with_roots(tmp_path / "data")
    train_to_the_end(ws, dataset=str(planted.root), arch="lenet", epochs=6)
    at = _tab(resolve_dataset(str(planted.root), ws))
    at.button(key="labels_go").click().run()  # the quick check, stored
    at.switch_page("app_pages/evaluate.py").run()
    assert not at.exception, at.exception
    said = [i.value for i in at.info if "probably mislabelled" in i.value]
    assert said and said[0].split(" of the ")[0].isdigit(), _words(at)
    marks = [c.value for c in at.caption if c.value.startswith(":material/label_off: its label is probably wrong")]
    assert marks, "the mistakes whose label is doubted are marked"
