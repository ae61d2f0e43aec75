"""AppTest for the Train page's learning-rate finder (issue 24): the sweep's time is said beside the button before
it starts, and a curve that never falls suggests nothing and leaves the learning-rate field as it was. Real sweeps
of LeNet on small folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.store.runs import RunStore
from tests import imagefactory as fx
from tests.support import ROOT


@pytest.fixture
def same(tmp_path: Path) -> Path:
    """Three classes of the very same picture: the labels carry no signal, and no network can learn them."""
    for label in ("a", "b", "c"):
        for i in range(30):
            fx.write_rgb(tmp_path / "data" / "same" / label / f"{i}.png", size=(16, 16), color=(120, 120, 120))
    return tmp_path / "data" / "same"


def _train_page(folder: Path) -> AppTest:
    from core.datasets.sources import resolve_dataset

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at = at.switch_page("app_pages/train.py").run()
    at.session_state["dataset"] = resolve_dataset(str(folder), Workspace.open())
    return at.run()


def _texts(at: AppTest) -> str:
    return " ".join(e.value for kind in ("markdown", "caption", "info", "warning", "error") for e in getattr(at, kind))


def _rate_field(at: AppTest) -> tuple:
    rate = [w.value for w in at.number_input if w.key == "train_lr"]
    return at.checkbox(key="train_lr_auto").value, rate


@pytest.mark.slow  # 5-21 s: the default suite had reached 7:21 alone; CI (.ci/run) runs it
def test_a_flat_curve_suggests_nothing_and_leaves_the_rate_field_as_it_was(same: Path, fresh_workspace: Path) -> None:
    at = _train_page(same)
    assert not at.exception
    assert any(c.value.startswith("about ") for c in at.caption), [c.value for c in at.caption]  # before the click
    before = _rate_field(at)
    assert before[0]  # automatic: the recipe's rate
    at.button(key="train_find_lr").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert _rate_field(at) == before  # untouched: still the recipe's rate
    found = at.session_state["lrfind_result"]
    assert found["suggested"] is None
    texts = _texts(at)
    assert "No rate suggested." in texts and "did not fall anywhere in the range: keeping the recipe's rate" in texts
    assert "The learning-rate field was left as it was" in texts and "was estimated" in texts
    assert RunStore(Workspace.open(fresh_workspace).runs_db).list_runs() == []  # no run left behind
