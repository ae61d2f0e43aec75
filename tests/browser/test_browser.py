"""Browser test: a real ``streamlit run`` server driven by headless Debian Chromium through Playwright.

``./studio test`` installs Debian's ``chromium`` (Playwright's own browser download cannot work offline).
Where it is missing the test is skipped locally, but fails under CI so a broken install step is seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app_server import running_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_app(tmp_path_factory.mktemp("browser-ws")) as url:
        yield url


@pytest.mark.slow  # 5-21 s: the default suite had reached 7:21 alone; CI (.ci/run) runs it
def test_datasets_page_opened_directly_shows_the_sample_class_balance_chart(
    server: str, browser, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1366, "height": 900})
    # Opened by its URL on a fresh server: the app's own navigation must run, not Streamlit's legacy page list.
    page.goto(f"{server}/datasets")
    expect(page.get_by_text("1,797", exact=True)).to_be_visible(timeout=60_000)
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    expect(chart).to_be_visible(timeout=30_000)
    expect(chart.locator(".bars path").first).to_be_attached()
    nav = page.locator('[data-testid="stSidebarNav"]')
    expect(nav.get_by_text("Home", exact=True)).to_be_visible()
    expect(nav.get_by_text("app", exact=True)).to_have_count(0)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(tmp_path / "datasets.png"), full_page=True)
    page.close()
