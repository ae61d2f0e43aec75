"""A run killed while writing its first checkpoint leaves a ``.partial`` file that no resume will clean (it has
no ``last.pt``): the dashboard sweeps such files as it starts, and leaves those of active runs alone."""

from __future__ import annotations

import threading
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train import run_folder
from tests.support import ROOT


def test_the_dashboard_removes_what_a_killed_first_checkpoint_left(fresh_workspace: Path) -> None:
    ws = Workspace.open(fresh_workspace)
    store = RunStore(ws.runs_db)
    crashed = store.create_run(dataset="sample:digits")
    owner = threading.Thread(target=store.start_run, args=(crashed,), name="train-killed")
    owner.start()
    owner.join()  # its thread ended without finishing: crashed, with no checkpoint to resume from
    active = store.create_run(dataset="sample:digits")  # queued by this (living) process
    leftovers = {}
    for run_id in (crashed, active):
        folder = run_folder.run_dir(ws, run_id)
        folder.mkdir(parents=True)
        leftovers[run_id] = folder / ".last.pt.k2j3h4.partial"
        leftovers[run_id].write_bytes(b"half a checkpoint")
    (run_folder.run_dir(ws, crashed) / "splits.csv").write_text("path,label,split\n")
    assert store.get_run(crashed).status == "crashed"

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("app_pages/runs.py").run()
    assert not at.exception
    assert not leftovers[crashed].exists() and (run_folder.run_dir(ws, crashed) / "splits.csv").exists()
    assert leftovers[active].exists()  # a queued run's job may be about to write it
