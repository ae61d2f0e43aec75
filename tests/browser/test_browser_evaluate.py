"""Browser test of the Evaluate page: a real ``streamlit run`` server on a workspace holding a trained LeNet run
(with two planted mistakes), driven by headless Debian Chromium through Playwright. A click on a square of the
confusion matrix shows the images behind it; the report downloads as one HTML file holding the metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.common.workspace import DATA_ROOTS_ENV, Workspace
from core.evaluate.evaluation import evaluate_run
from core.store.runs import RunStore
from tests.app_server import running_app
from tests.support import TrainedRun, copy_workspace

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def trained_ws(trained_colour_folders: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The session's colour-folders run in a copy of its workspace (the app writes in it)."""
    return copy_workspace(trained_colour_folders, tmp_path_factory.mktemp("browser-evaluate") / "ws").ws


@pytest.fixture(scope="module")
def server(trained_ws: Workspace, trained_colour_folders: TrainedRun) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as env:  # the app may read the run's dataset (its folder is a data root)
        env.setenv(DATA_ROOTS_ENV, str(trained_colour_folders.dataset.parent))
        with running_app(trained_ws.root) as url:
            yield url


@pytest.mark.slow  # 5-21 s: the default suite had reached 7:21 alone; CI (.ci/run) runs it
def test_a_matrix_square_shows_its_images_and_the_report_holds_the_metrics(
    server: str, browser, trained_ws: Workspace, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    ev = evaluate_run(trained_ws, RunStore(trained_ws.runs_db), leaks="skip")
    matrix, labels = ev.metrics.confusion, ev.metrics.labels
    off = matrix - np.diag(np.diag(matrix))
    true, said = np.unravel_index(int(off.argmax()), off.shape)  # a mistake (two are planted)
    count = int(matrix[true, said])
    assert count >= 1

    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(f"{server}/evaluate")
    expect(page.get_by_text("How good is it?", exact=False)).to_be_visible(timeout=120_000)
    expect(page.get_by_text(f"{round(ev.metrics.accuracy * 20)} of 20 test images get the right label")).to_be_visible()
    squares = page.locator('[data-testid="stPlotlyChart"] .scatterlayer .point')
    expect(squares).to_have_count(len(labels) ** 2, timeout=60_000)
    square = squares.nth(int(true) * len(labels) + int(said))
    square.scroll_into_view_if_needed()
    box = square.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    image_word = "image" if count == 1 else "images"
    heading = f"{count} {image_word} of class “{labels[true]}” the model called “{labels[said]}”"
    expect(page.get_by_text(heading)).to_be_visible(timeout=60_000)
    gallery = page.get_by_text("% sure · test/", exact=False)
    expect(gallery).to_have_count(count, timeout=30_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(tmp_path / "evaluate.png"))

    report, report_name = _download_report(page)
    assert report_name == f"evaluation-run-{ev.run.run_id}.html"
    assert f"{100 * ev.metrics.accuracy:.1f}%" in report and "MAP@5" in report and "Confusion matrix" in report
    assert f"{ev.metrics.map5:.3f}" in report and "data:image/png;base64," in report
    page.close()


def _download_report(page) -> tuple[str, str]:
    """The report's text and file name. The click waits for the page to settle: a download started while the page
    was still rerunning after the matrix click was cancelled (once, in a run beside another suite); tried again then."""
    from playwright.sync_api import Error, expect

    for attempt in range(3):
        expect(page.get_by_test_id("stStatusWidgetRunningIcon")).to_have_count(0, timeout=120_000)
        with page.expect_download(timeout=120_000) as download:
            page.get_by_role("button", name="Download the report").click()
        try:
            return Path(download.value.path()).read_text(), download.value.suggested_filename
        except Error as exc:
            if "canceled" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")
