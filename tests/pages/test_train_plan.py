"""AppTest: the Train page makes a run's plan once and hands that plan to the run it starts (issue 23), and words an
option's error from its fields, never from the message text."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train import runplan
from core.train.config import TrainConfig
from core.train.runplan import RunPlan
from tests import imagefactory as fx
from tests.support import ROOT
from ui import runs

TIMEOUT = 120


pytestmark = pytest.mark.usefixtures("no_training_left")  # never a training thread left running


@pytest.fixture
def resolutions(monkeypatch: pytest.MonkeyPatch) -> list[TrainConfig]:
    """Every config ``resolve`` decides (the real function runs; the page and its job share this process)."""
    calls: list[TrainConfig] = []
    real = runplan.resolve

    def counted(config: TrainConfig, facts: runplan.DataFacts) -> RunPlan:
        calls.append(config)
        return real(config, facts)

    monkeypatch.setattr(runplan, "resolve", counted)
    return calls


def _train_page(folder: Path | None = None) -> AppTest:
    from core.datasets.sources import resolve_dataset

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/train.py").run()
    if folder is not None:
        at.session_state["dataset"] = resolve_dataset(str(folder), Workspace.open())
        at.run()
    return at


def test_a_run_started_on_the_page_is_resolved_once(tmp_path: Path, fresh_workspace: Path,
                                                    resolutions: list[TrainConfig]) -> None:  # fmt: skip
    colours = fx.write_colour_classes(tmp_path / "data" / "colours", 12, labels=("red", "green"))
    at = _train_page(colours)
    at.checkbox(key="train_epochs_auto").uncheck().run()
    at.number_input(key="train_epochs").set_value(2).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    resolutions.clear()
    at.button(key="train_start").click().run()  # the page runs once more: its plan is the run's
    assert not at.exception and any("started" in s.value for s in at.success)
    from ui.state import jobs

    job = jobs().active()[0]
    assert jobs().wait(job.run_id, timeout=300).status == "completed"
    assert len(resolutions) == 1  # the page's, handed on: neither the queue, nor prepare, nor fit decided again
    store = RunStore(Workspace.open(fresh_workspace).runs_db)
    plan = RunPlan.from_dict(store.params(job.run_id)["plan"])
    assert plan.config == resolutions[0] and (plan.arch, plan.epochs.epochs) == ("lenet", 2)
    assert store.params(job.run_id)["epochs_trained"] == 2


def test_a_choice_error_is_worded_from_its_fields() -> None:
    """A run recorded with a value this version does not offer ("Rerun with changes"): the option's label and the
    allowed values in words."""
    at = _train_page()
    at.session_state[runs.TRAIN_PREFILL] = {"augment": "mirror"}
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors == ["Augmentation 'mirror' is not a choice here; choose one of: Automatic, None, Flips, Shifts, "
                      "Shifts and flips, Strong (shifts, flips, rotation, colour)"], errors  # fmt: skip
