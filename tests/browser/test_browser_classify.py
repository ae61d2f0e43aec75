"""Browser test of the Classify page: a real ``streamlit run`` server on a workspace holding a trained LeNet run,
driven by headless Debian Chromium through Playwright. Files go in through the uploader's own ``<input
type=file>`` (what a drag-and-drop feeds); the page must show the top-5 chart, the overlay and the predicted
label; a file that is not an image, added to it, gets a message in words in its gallery cell.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.common.workspace import Workspace
from core.explain.predict import load_run_predictor
from core.store.runs import RunStore
from tests import imagefactory as fx
from tests.app_server import running_app
from tests.support import TrainedRun, copy_workspace

pytestmark = pytest.mark.browser
COLOURS = fx.COLOURS


@pytest.fixture(scope="module")
def trained_ws(trained_colours: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace with one completed LeNet run on 3 colour classes (the session's, copied: the app writes in it)."""
    return copy_workspace(trained_colours, tmp_path_factory.mktemp("browser-classify") / "ws").ws


@pytest.fixture(scope="module")
def server(trained_ws: Workspace) -> Iterator[str]:
    with running_app(trained_ws.root) as url:
        yield url


@pytest.mark.slow  # 5-21 s: the default suite had reached 7:21 alone; CI (.ci/run) runs it
def test_a_dropped_image_gets_its_top5_chart_overlay_and_label_and_a_bad_file_a_message(
    server: str, browser, trained_ws: Workspace, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    photo = fx.write_rgb(tmp_path / "red square.png", size=(12, 12), color=COLOURS["red"], seed=99)
    predictor = load_run_predictor(trained_ws, RunStore(trained_ws.runs_db))
    label = str(predictor.run(photo, photo.name).top[0]["label"])

    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(f"{server}/classify")
    expect(page.get_by_text("This model knows 3 classes: blue, green, red.")).to_be_visible(timeout=60_000)
    files = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
    files.set_input_files(str(photo))
    chart = page.locator('[data-testid="stPlotlyChart"]')
    expect(chart).to_be_visible(timeout=60_000)
    expect(chart.locator(".bars path").first).to_be_attached()
    expect(page.get_by_role("combobox", name="Explain class")).to_have_value(f"top class ({label})")
    expect(page.get_by_text(f"Grad-CAM for “{label}”")).to_be_visible(timeout=30_000)
    expect(page.locator('[data-testid="stImage"] img')).to_have_count(2)  # original and overlay
    expect(page.get_by_text("Classification", exact=True)).to_be_visible()

    # Add a text file named like an image: now a batch, and the file's own cell says why in words.
    files.set_input_files(str(fx.write_text_as_image(tmp_path / "notes.png")))
    expect(page.get_by_text("2 images")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("not an image (unrecognised format)")).to_be_visible(timeout=30_000)
    expect(page.get_by_text(f"{label} · ", exact=False).first).to_be_visible()  # the good one's gallery cell
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(tmp_path / "classify.png"))
    page.close()
