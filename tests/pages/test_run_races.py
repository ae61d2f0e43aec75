"""Two browser tabs acting on one run at once (two AppTest sessions on one server's registry and store)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train import run_folder
from core.train import runner as train_run
from core.train.config import TrainConfig
from tests import imagefactory as fx
from tests.support import ROOT, cancel_after_first_checkpoint

TIMEOUT = 120


pytestmark = pytest.mark.usefixtures("no_training_left")  # never a training thread left running


def _runs_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    return at.switch_page("app_pages/runs.py").run()


def test_delete_confirmed_in_one_tab_after_another_tab_resumed_the_run_is_refused(
    tmp_path: Path, fresh_workspace: Path
) -> None:
    from ui.state import jobs

    folder = tmp_path / "data" / "colours"
    fx.write_colour_classes(folder, per_class=12)
    ws = Workspace.open(fresh_workspace)
    store = RunStore(ws.runs_db)
    config = TrainConfig(dataset=str(folder), arch="lenet", epochs=40, batch_size=8, log_every=1)
    run_id = train_run.submit_training(jobs(), ws, config)
    cancel_after_first_checkpoint(jobs(), run_id, run_folder.checkpoint_path(ws, run_id, "last"))
    jobs().wait(run_id, timeout=120)

    tab_a, tab_b = _runs_page(), _runs_page()  # both show the stopped run, Delete and Resume enabled
    assert not tab_a.button(key="run_delete").disabled and not tab_b.button(key="run_resume").disabled
    tab_b.button(key="run_resume").click().run()
    assert not tab_b.exception and store.get_run(run_id).status in ("queued", "running")

    tab_a.button(key="run_delete").click().run()  # the confirmation was open before the resume
    assert not tab_a.exception
    errors = " ".join(e.value for e in tab_a.error)
    assert "Not deleted" in errors and "cancel it" in errors, errors
    assert store.get_run(run_id).status in ("queued", "running")
    assert run_folder.run_dir(ws, run_id).is_dir()
    tab_b.run()
    assert not tab_b.exception
