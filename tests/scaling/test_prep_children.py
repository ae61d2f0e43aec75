"""A process-pool preparation sweep started from a page must not run that page again in each worker.

Under ``streamlit run`` the page being run is ``__main__``, with its ``__file__``; "spawn" imports ``__main__`` in
every child. Here a stand-in page writes a file each time it is executed: the sweep's children must leave none.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from core.common.workspace import Workspace
from core.datasets.scan import scan_dataset
from core.datasets.sources import resolve_dataset
from core.scaling.prep import run_task
from tests.scaling.test_sweep import write_photos


def test_the_workers_of_a_process_sweep_do_not_run_the_page_that_started_it(
    tmp_path: Path, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    marks = tmp_path / "page-ran"
    marks.mkdir()
    page = tmp_path / "scaling_page.py"
    page.write_text(f"import os, pathlib\npathlib.Path({str(marks)!r}, str(os.getpid())).touch()\n")
    as_streamlit_runs_it = types.ModuleType("__main__")
    as_streamlit_runs_it.__file__ = str(page)  # as Streamlit's script runner makes the page __main__
    monkeypatch.setitem(sys.modules, "__main__", as_streamlit_runs_it)
    scan = scan_dataset(resolve_dataset(str(write_photos(tmp_path / "photos", per_class=6)), ws))

    assert run_task("fingerprint", scan, tmp_path / "unused", workers=2, mode="processes") == 12
    assert list(marks.iterdir()) == []  # no worker executed the page
    assert sys.modules["__main__"] is as_streamlit_runs_it  # and the page's module is back in place
