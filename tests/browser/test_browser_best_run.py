"""In headless Chromium, after a run that learned nothing (newer than a good one): Evaluate and Classify open on the
best run and say so, the poor runs' scores are called about chance (3 classes, and 2 where about half right is
chance), and photos of something else (scikit-image's coffee cup, a flat grey square) dropped on Classify are called
not like the photos the model learned from (issue 25)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as photos

from core.common.workspace import Workspace
from tests import imagefactory as fx
from tests.support import train_to_the_end

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # ~16 s; its parts are AppTests in the default suite


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = Workspace.open(tmp_path_factory.mktemp("best-run") / "ws")
    colours = fx.write_colour_classes(ws.datasets / "colours", 45, size=(16, 16))
    train_to_the_end(ws, dataset=str(colours), arch="lenet", epochs=6)  # run 1: learns the colours
    train_to_the_end(ws, dataset=str(colours), arch="lenet", epochs=1, lr=1e-9)  # run 2, newer: learns nothing
    two = fx.write_colour_classes(ws.datasets / "two-colours", 40, size=(16, 16), labels=("red", "blue"))
    train_to_the_end(ws, dataset=str(two), arch="lenet", epochs=1, lr=1e-9)  # run 3: 2 classes, about half right
    return ws.root


def test_pages_open_on_the_best_run_say_chance_and_not_sure(server: str, browser, workspace: Path,
                                                            tmp_path: Path) -> None:  # fmt: skip
    from playwright.sync_api import expect

    expect.set_options(timeout=90_000)
    page = browser.new_page(viewport={"width": 1366, "height": 1400})
    page.goto(f"{server}/evaluate")
    expect(_picker(page)).to_have_value(re.compile(r"^Run 1 \(the best on this data\) · "))
    for poor in (2, 3):  # 3 colours, and 2 colours where about half right is chance
        page.goto(f"{server}/evaluate?run={poor}")
        expect(page.get_by_text("That is about chance", exact=False).first).to_be_visible()
    coffee, grey = tmp_path / "coffee.jpg", tmp_path / "grey.png"
    Image.fromarray(photos.coffee()).save(coffee)
    Image.new("RGB", (64, 64), (128, 128, 128)).save(grey)
    page.goto(f"{server}/classify")
    expect(_picker(page)).to_have_value(re.compile(r"^Run 1 \(the best on this data\) · "))
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(coffee))
    expect(page.get_by_text("not like the photos this model learned from", exact=False).first).to_be_visible()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files([str(coffee), str(grey)])
    page.get_by_text("grey.png", exact=False).first.wait_for()
    expect(page.get_by_text(re.compile(r"^Not sure$"))).to_have_count(2)  # the gallery marks both photos
    assert page.locator('[data-testid="stException"]').count() == 0
    page.close()


def _picker(page):
    """The page's first select box (the run or model picker): its chosen option is its input's value."""
    return page.get_by_test_id("stSelectbox").first.locator("input")
