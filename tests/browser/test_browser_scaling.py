"""Browser test of the Scaling page: a real ``streamlit run`` server on a fresh workspace, headless Chromium. A
data-preparation sweep with 1 and 2 processes is started from the page on the built-in digits, its progress shows,
and when it ends the table of workers, time, speedup and efficiency appears, efficiency 100% at one worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.common.workspace import Workspace
from core.scaling.points import stored_tables
from core.store.runs import RunStore
from tests.app_server import running_app
from tests.support import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # ~8 s: the default suite keeps under 6 min (CI runs it)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-scaling") / "ws"


@pytest.fixture(scope="module")
def server(workspace: Path) -> Iterator[str]:
    workspace.mkdir(parents=True, exist_ok=True)
    with running_app(workspace) as url:
        yield url


def test_a_preparation_sweep_started_from_the_page_ends_in_its_table(server: str, browser, workspace: Path) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.set_default_timeout(90_000)
    page.goto(f"{server}/scaling")
    expect(page.get_by_text("No sweep has finished yet")).to_be_visible(timeout=120_000)
    repeats = page.get_by_role("spinbutton", name="Repeats")
    repeats.fill("1")
    repeats.press("Enter")
    page.get_by_role("button", name="Start the sweep").click()
    # once the sweep ended: its chart of speedup against workers, beside the table
    expect(page.get_by_text("speedup (x)")).to_be_visible(timeout=300_000)
    expect(page.get_by_test_id("data-grid-canvas").get_by_text("Speedup", exact=True)).to_be_attached()  # a column
    grid = page.locator('[data-testid="stDataFrame"]').first
    expect(grid).to_be_visible()
    (table,) = stored_tables(RunStore(Workspace.open(workspace).runs_db))  # what the page drew it from
    assert [r.workers for r in table.rows] == [1, 2] and table.rows[0].efficiency == pytest.approx(1.0)
    expect(page.get_by_text("Preparing the data", exact=False).first).to_be_visible()
    assert page.locator('[data-testid="stException"]').count() == 0
    # The sweep's worker processes did not run the Scaling page again (each left a run of bare-mode warnings).
    assert "missing ScriptRunContext" not in (workspace / "streamlit.log").read_text()
    (ROOT / "artifacts").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "artifacts" / "scaling.png"), full_page=True)
    page.close()
