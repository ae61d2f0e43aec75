"""AppTest for the Train page's bounds (issue 22): the number widgets take their limits from core, a value beyond
them is not taken, and a run too big for this machine's memory is warned about before the click and refused on it
(and its time is not estimated with a batch of that size), in words, before anything is queued."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common.cpu import usable_cores
from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train.config import BOUNDS
from tests import imagefactory as fx
from tests.support import ROOT

TIMEOUT = 120


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    return fx.write_colour_classes(tmp_path / "data" / "colours", 8)


def _train_page(folder: Path) -> AppTest:
    from core.datasets.sources import resolve_dataset

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at = at.switch_page("app_pages/train.py").run()
    at.session_state["dataset"] = resolve_dataset(str(folder), Workspace.open())
    return at.run()


def test_number_widgets_take_their_limits_from_core_and_refuse_more(colours: Path) -> None:
    at = _train_page(colours)
    assert not at.exception
    at.checkbox(key="train_batch_size_auto").uncheck().run()  # 0 = automatic: a typed batch is at least 1
    batch = at.number_input(key="train_batch_size")
    assert (batch.proto.min, batch.proto.max) == (1, BOUNDS["batch_size"].high)
    assert at.number_input(key="train_ranks").proto.max == min(BOUNDS["ranks"].high, usable_cores())
    assert at.number_input(key="train_weight_decay").proto.max == BOUNDS["weight_decay"].high
    at.checkbox(key="train_image_size_auto").uncheck().run()
    side = at.number_input(key="train_image_size")
    assert side.proto.max == BOUNDS["image_size"].high == 1024
    side.set_value(100_000).run()
    at.number_input(key="train_batch_size").set_value(10**6).run()
    assert not at.exception
    assert at.number_input(key="train_image_size").value <= 1024  # the value beyond the bound was not taken
    assert at.number_input(key="train_batch_size").value <= BOUNDS["batch_size"].high


def test_a_run_too_big_for_memory_is_said_before_the_click_and_refused_on_it(colours: Path,
                                                                           fresh_workspace: Path) -> None:  # fmt: skip
    at = _train_page(colours)
    at.selectbox(key="train_arch").set_value("resnet50").run()
    at.checkbox(key="train_image_size_auto").uncheck().run()
    at.number_input(key="train_image_size").set_value(1024).run()
    at.checkbox(key="train_batch_size_auto").uncheck().run()
    at.number_input(key="train_batch_size").set_value(4096).run()
    assert not at.exception
    warned = [w.value for w in at.warning if "would need about" in w.value]
    assert len(warned) == 1 and "of memory;" in warned[0] and "is free on this machine" in warned[0], warned
    at.button(key="train_estimate").click().run()  # its timed steps would take a batch of that size: not built
    assert not at.exception
    assert any("this run would need about" in e.value for e in at.error), [e.value for e in at.error]
    at.button(key="train_start").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("this run would need about" in e for e in errors), errors
    assert not at.success  # no "Run N started"
    assert RunStore(Workspace.open(fresh_workspace).runs_db).list_runs() == []
