"""Browser check of issue 22: a real ``streamlit run`` server on a dataset whose labels, file names and folder name
are Markdown and HTML payloads (``tests/payloads.py``), read by headless Chromium. The labels show as the text they
are, and the browser never asks for the payloads' URLs (``![b](http://127.0.0.1:9/beacon.png)`` would be fetched by
every viewer if labels were rendered as Markdown)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.common.workspace import DATA_ROOTS_ENV, Workspace
from tests.app_server import running_app
from tests.payloads import BEACON, HTML, payload_csv

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    base = tmp_path_factory.mktemp("browser-untrusted")
    csv = payload_csv(base)
    ws = Workspace.open(base / "ws")
    with pytest.MonkeyPatch.context() as env:
        env.setenv(DATA_ROOTS_ENV, str(base))
        with running_app(ws.root) as url:
            yield url, csv


@pytest.mark.slow  # 5-21 s: the default suite had reached 7:21 alone; CI (.ci/run) runs it
def test_payload_labels_show_as_text_and_their_urls_are_never_fetched(served, browser) -> None:
    from urllib.parse import quote, urlsplit

    from playwright.sync_api import expect

    url, csv = served
    asked: list[str] = []
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.on("request", lambda request: asked.append(request.url))
    page.goto(f"{url}/datasets?dataset={quote(str(csv))}")
    expect(page.get_by_text("Largest class", exact=False)).to_be_visible(timeout=120_000)
    expect(page.get_by_text(f"Largest class '{HTML}'", exact=False)).to_be_visible()  # the label, as typed
    page.get_by_role("tab", name="Samples").click()
    expect(page.locator('[data-testid="stImage"] img')).not_to_have_count(0, timeout=60_000)  # thumbnails drawn
    page.wait_for_load_state("networkidle")
    paths = [urlsplit(u).path for u in asked]  # the page's own address names the folder in its query
    assert not [p for p in paths if "beacon" in p or p.endswith("/x")], paths
    assert page.locator('img[src*="beacon"], img[src="x"]').count() == 0
    expect(page.get_by_text(BEACON, exact=True)).to_be_visible(timeout=60_000)  # a class's heading, as text
    page.close()
