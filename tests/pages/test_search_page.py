"""AppTest for the Search page's bounds (issue 22): the rate range and the number of trials take their limits from
core, and a value beyond them is not taken."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.experiments.search import MAX_TRIALS
from core.store.runs import RunStore
from core.train.config import BOUNDS
from tests import imagefactory as fx
from tests.support import ROOT


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    return fx.write_colour_classes(tmp_path / "data" / "colours", 8)


def test_the_rate_range_and_the_trials_are_bounded_by_core(colours: Path, fresh_workspace: Path) -> None:
    from core.datasets.sources import resolve_dataset

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.session_state["dataset"] = resolve_dataset(str(colours), Workspace.open())
    at = at.switch_page("app_pages/search.py").run()
    assert not at.exception
    for key in ("search_lr_low", "search_lr_high"):
        assert at.number_input(key=key).proto.max == BOUNDS["lr"].high
    assert at.number_input(key="search_trials").proto.max == MAX_TRIALS
    at.number_input(key="search_lr_high").set_value(1e6)
    at.number_input(key="search_trials").set_value(10**6)
    at.run()
    assert not at.exception
    assert at.number_input(key="search_lr_high").value <= BOUNDS["lr"].high
    assert at.number_input(key="search_trials").value <= MAX_TRIALS
    assert RunStore(Workspace.open(fresh_workspace).runs_db).list_runs() == []
