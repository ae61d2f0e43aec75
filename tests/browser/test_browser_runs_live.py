"""In headless Chromium: while a run trains (started from the command line, in another process), the Runs table's
time and accuracy move with the curves below it, without a reload (issue 25: the table used to go stale)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.store.runs import RunStore
from tests import imagefactory as fx
from tests.support import ROOT, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # ~10 s: the default suite keeps under 6 min (CI runs it)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("runs-live") / "ws"
    fx.write_colour_classes(ws / "datasets" / "colours", 45, size=(16, 16))
    return ws


def _table_text(page) -> str:
    return page.locator('[data-testid="stDataFrame"]').first.text_content() or ""


def test_the_runs_table_moves_with_a_run_that_trains_in_another_process(server: str, browser, workspace: Path) -> None:
    from playwright.sync_api import expect

    # LeNet at one thread for 400 epochs that never stop early: longer than the test watches it (it is stopped after).
    run = subprocess.Popen([sys.executable, "-m", "core", "train", str(workspace / "datasets" / "colours"),
                            "--arch", "lenet", "--epochs", "400", "--early-stop-patience", "0", "--threads", "1",
                            "--workspace", str(workspace)],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.set_default_timeout(90_000)
        store = RunStore(workspace / "runs.sqlite")
        wait_until(lambda: store.list_runs(status="running") or run.poll() is not None, timeout=90,
                   what="the run to start training")  # fmt: skip
        page.goto(f"{server}/runs")
        expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible(timeout=90_000)
        expect(page.locator('[data-testid="stDataFrame"]').first).to_contain_text("training", timeout=90_000)
        first = _table_text(page)
        # Without a reload: the same table's text changes (time, accuracy) while the run still trains.
        wait_until(lambda: (text := _table_text(page)) != first and "training" in text, timeout=60,
                   what="the runs table to change while the run trains", interval=0.5)  # fmt: skip
        assert run.poll() is None, run.stderr.read() if run.stderr else ""
        page.close()
    finally:
        run.terminate()
        run.wait(30)
