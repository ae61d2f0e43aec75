"""The whole journey of a new user, in headless Chromium at 1366 px: pick data, look at its duplicates, train
with the defaults, watch the curve, read the result and the test accuracy, classify a dropped image, then
refresh and find the same dataset and run. On every screen: no raw field name, no "None", no server path, no
"(s)". Screenshots are kept in ``artifacts/journey/`` (ignored by git) to be looked at.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import imagefactory as fx
from tests.support import ROOT

pytestmark = pytest.mark.browser
SHOTS = ROOT / "artifacts" / "journey"
COLOURS = fx.COLOURS
# What the audience must never read: field names of the code, Python's None, "(s)" plurals.
RAW = re.compile(r"\b(run_id|best_val_acc|val_acc|train_loss|wall_s|val_fraction|test_fraction|batch_size|"
                 r"image_size|n_train|sample:digits|None)\b|\(s\)")  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("journey") / "ws"
    # three colour classes, 45 each: 7 of each for validation and for test (21 each, shown without a warning)
    fx.write_colour_classes(ws / "datasets" / "colours", 45, size=(16, 16))
    return ws


def _clean(page, workspace: Path, where: str) -> None:
    page.wait_for_timeout(500)
    text = page.inner_text("body")
    assert not RAW.findall(text), f"{where}: {sorted(set(RAW.findall(text)))}"
    assert str(workspace) not in text and str(workspace.parent) not in text, f"{where}: a server path is shown"
    assert page.locator('[data-testid="stException"]').count() == 0, where


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.mark.slow  # 5-21 s: the default suite had reached 7:21 alone; CI (.ci/run) runs it
def test_a_new_user_goes_from_data_to_a_classified_photo_and_a_refresh_keeps_the_place(
    server: str, browser, workspace: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=90_000)  # a page's first draw scans and imports: seconds on 2 busy cores
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.set_default_timeout(90_000)
    page.goto(server)
    expect(page.get_by_text("1. Look at the data")).to_be_visible()
    _clean(page, workspace, "home")
    _shot(page, "1-home")
    _pick_data_and_look_at_duplicates(page, server, workspace)
    _train_and_read_the_result(page, workspace)
    _classify_a_dropped_photo(page, workspace, tmp_path)

    # A refresh (or a bookmark) of the Runs page keeps the dataset and the run.
    page.goto(f"{server}/runs?run=1&dataset=datasets/colours")
    page.reload()
    expect(page.locator('[data-testid="stSidebar"]').get_by_text("colours")).to_be_visible()
    expect(page.get_by_text(re.compile(r"lenet-1 · finished"))).to_be_visible()
    _clean(page, workspace, "runs after a refresh")
    _shot(page, "8-refreshed")
    page.close()


def _pick_data_and_look_at_duplicates(page, server: str, workspace: Path) -> None:
    """Pick data: the folder in the workspace, by its path relative to the workspace."""
    from playwright.sync_api import expect

    page.goto(f"{server}/datasets")
    page.get_by_text("Choose a dataset").click()
    page.get_by_text("Folder", exact=True).click()
    page.get_by_label("...or type a folder path").fill("datasets/colours")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Open folder").click()
    expect(page.get_by_text("135", exact=True)).to_be_visible()  # images
    expect(page.locator('[data-testid="stSidebar"]').get_by_text("colours")).to_be_visible()
    _clean(page, workspace, "datasets")
    _shot(page, "2-datasets")

    # Look at duplicates (noise patches of one colour: none are copies).
    page.get_by_role("link", name="Duplicates").click()
    expect(page.get_by_text("Duplicate groups")).to_be_visible()
    _clean(page, workspace, "duplicates")
    _shot(page, "3-duplicates")


def _train_and_read_the_result(page, workspace: Path) -> None:
    """Train with the defaults, then watch the curve and read the result."""
    from playwright.sync_api import expect

    page.get_by_role("link", name="Train").click()
    expect(page.get_by_text("93 images to learn from, 21 to watch progress on")).to_be_visible()
    assert page.locator('[data-testid="stAlertContentWarning"]').count() == 0  # nothing to warn about here
    _clean(page, workspace, "train")
    _shot(page, "4-train")
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text(re.compile(r"Run 1 started"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"finished in .*test images get the right label"))).to_be_visible(
        timeout=300_000
    )
    _clean(page, workspace, "train, finished")
    _shot(page, "5-train-finished")
    page.get_by_role("link", name="Its curves").click()
    # The run's score card (the runs table above has a hidden "Test accuracy" header cell for screen readers: once in
    # a run beside another suite it was the first match, and never visible).
    expect(page.get_by_test_id("stMetricLabel").filter(has_text="Test accuracy")).to_be_visible()
    expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible()
    assert "run=1" in page.url
    _clean(page, workspace, "runs")
    _shot(page, "6-runs")


def _classify_a_dropped_photo(page, workspace: Path, tmp_path: Path) -> None:
    """Classify a dropped image with the run just trained."""
    from playwright.sync_api import expect

    photo = fx.write_rgb(tmp_path / "a red one.png", size=(16, 16), color=COLOURS["red"], seed=999)
    page.get_by_role("link", name="Classify").click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(photo))
    expect(page.get_by_text("a red one.png").first).to_be_visible()
    expect(page.locator('[data-testid="stImage"]').nth(1)).to_be_visible()  # the original and its heat map
    _clean(page, workspace, "classify")
    _shot(page, "7-classify")
