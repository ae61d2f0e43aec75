"""A run's folder is never deleted or swept while a process of the run still lives (a rank of a distributed run
whose launcher died is crashed in the store, but still writing)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.common.errors import RunStoreError
from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train import run_folder
from tests.support import ROOT


def _crashed_run(store: RunStore) -> int:
    run_id = store.create_run(dataset="sample:digits")
    owner = threading.Thread(target=store.start_run, args=(run_id,), name="launcher-gone")
    owner.start()
    owner.join()
    assert store.get_run(run_id).status == "crashed"
    return run_id


def test_a_crashed_run_whose_rank_still_lives_is_neither_deleted_nor_swept(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    store = RunStore(ws.runs_db)
    run_id = _crashed_run(store)
    folder = run_folder.run_dir(ws, run_id)
    folder.mkdir(parents=True)
    partial = folder / ".last.pt.x1y2.partial"  # a checkpoint the rank is writing right now
    partial.write_bytes(b"being written")
    code = f"from pathlib import Path; from core.train import lifeline; lifeline.hold(Path({str(folder)!r})); print('held', flush=True); input()"  # fmt: skip
    rank = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert rank.stdout.readline().strip() == "held"
        with pytest.raises(RunStoreError, match="still has processes training on this machine"):
            run_folder.delete_run(store, ws, run_id)
        assert run_folder.remove_stale_partials(ws, store) == 0
        assert partial.exists() and store.get_run(run_id).status == "crashed"
    finally:
        rank.kill()
        rank.wait(60)
    assert run_folder.remove_stale_partials(ws, store) == 1 and not partial.exists()
    run_folder.delete_run(store, ws, run_id)
    assert not folder.exists() and store.list_runs() == []
