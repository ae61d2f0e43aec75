"""Browser test: a real ``streamlit run`` server driven by headless Debian Chromium through Playwright.

``./studio test`` installs Debian's ``chromium`` (Playwright's own browser download cannot work offline).
Where it is missing the test is skipped locally, but fails under CI so a broken install step is seen.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("streamlit did not become healthy")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ws = tmp_path_factory.mktemp("browser-ws")
    port = _free_port()
    log = open(ws / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--", "--workspace", str(ws)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


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
