"""In headless Chromium (issue 27): on colour classes with 15% of the images in another colour's folder and a run
trained on them, the Label issues tab finds suspects; a person takes one suggestion and drops another image, the
Clean up tab writes the cleaned copy with relabel and drop-suspects, a run trains on it from the Train page, and
Compare shows its test accuracy beside the run on the uncleaned data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.common.workspace import Workspace
from core.store.runs import RunStore
from tests import imagefactory as fx
from tests.browser.test_browser_experiments import _cells, _settled
from tests.labels import plant_flips
from tests.support import train_to_the_end, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # ~1-2 min: a label check, a cleaned copy, a second run


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = Workspace.open(tmp_path_factory.mktemp("labels") / "ws")
    clean = fx.write_colour_classes(ws.root.parent / "clean", 40, size=(16, 16))
    flipped = plant_flips(clean, ws.datasets / "flipped", share=0.15)
    train_to_the_end(ws, dataset=str(flipped.root))  # run 1: the default recipe on the noisy labels
    return ws.root


def test_suspects_are_decided_cleaned_and_retrained_beside_the_noisy_run(server: str, browser, workspace: Path,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    from playwright.sync_api import expect

    expect.set_options(timeout=120_000)
    page = browser.new_page(viewport={"width": 1366, "height": 1400})
    page.set_default_timeout(120_000)
    page.goto(f"{server}/duplicates?dataset=datasets/flipped")
    page.get_by_role("tab", name="Label issues").click()
    page.get_by_role("button", name="Check the labels").click()
    expect(page.get_by_test_id("stMetricLabel").filter(has_text="Probably mislabelled")).to_be_visible()
    _settled(page)
    page.screenshot(path=str(tmp_path / "label-issues.png"), full_page=True)
    cards = page.get_by_test_id("stRadio")
    cards.nth(0).get_by_text(re.compile(r"^Take “")).click()
    _settled(page)
    page.get_by_test_id("stRadio").nth(1).get_by_text("Drop the image").click()
    _settled(page)
    expect(page.get_by_text("Your decisions: 1 image to relabel, 1 image to drop")).to_be_visible()

    page.get_by_role("tab", name="Clean up").click()
    _settled(page)
    box = page.get_by_test_id("stMultiSelect").filter(has_text="Policies")
    box.get_by_role("button", name="Remove keep-one").click()
    _settled(page)
    for policy in ("relabel", "drop-suspects"):
        box.get_by_role("combobox", name="Policies").click()
        page.get_by_role("option", name=policy, exact=True).click()
        page.keyboard.press("Escape")
        _settled(page)
    relabelled = page.get_by_test_id("stMetric").filter(has_text="Relabelled").get_by_test_id("stMetricValue")
    expect(relabelled).to_have_text("1")
    page.get_by_role("button", name="Write cleaned dataset").click()
    expect(page.get_by_text(re.compile(r"Wrote .* 1 removed, 1 relabelled"))).to_be_visible()

    page.get_by_role("link", name="Train on it").click()
    page.get_by_role("button", name="Start training").click()
    # The run's own card, not the card of run 1 (trained before the page opened: "finished while you were away"),
    # which a loaded machine showed before the click had queued run 2.
    store = RunStore(Workspace.open(workspace).runs_db)
    wait_until(lambda: [r.status for r in store.list_runs(kind="train")] == ["completed"] * 2, timeout=300,
               what="the run on the cleaned copy")  # fmt: skip
    expect(page.get_by_text(re.compile(r"finished in .*test images get the right label")).first).to_be_visible()
    page.goto(f"{server}/compare")
    expect(page.get_by_text("2 of 2 runs")).to_be_visible()
    expect(_cells(page, "finished")).to_have_count(2)
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.close()
