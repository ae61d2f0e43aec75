"""The demo page's preprocessing against the studio's, pixel by pixel, in headless Chromium: every kind of picture
the studio opens, through the page's own ``pixels()`` (what it feeds the model) and through ``open_image`` +
``resize_to_tensor`` (what the studio feeds it).

The page reimplements Pillow's antialiased bilinear resize with its fixed-point rounding, so PNG, GIF, BMP, WebP,
small JPEGs, EXIF turns, alpha and palette transparency come out identical. Two known gaps, bounded here: a JPEG
at least twice the model's side, which the studio decodes at 1/2..1/8 scale inside libjpeg (the page averages
blocks instead: without that, up to 48 levels apart), and 16-bit pictures, which the browser cuts to 8 bits where
the studio stretches their range (1 level).
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.export.demo import PAGE
from core.images.opener import open_image
from core.train.tensors import resize_to_tensor
from tests import imagefactory as f

pytestmark = pytest.mark.browser

PIXELS = """async ([b64, side, channels]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const { square } = await pixels(new Blob([bytes]), side, channels);
  return Array.from(square.px);
}"""

EXACT = [  # (writer, side, channels)
    (lambda d: f.write_photo(d / "landscape.png", 1, (97, 60)), 32, 3),  # a crop box on half a pixel
    (lambda d: f.write_photo(d / "gray-model.png", 2, (97, 60)), 32, 1),  # Pillow's L of the RGB picture
    (lambda d: f.write_photo(d / "small.png", 3, (20, 30)), 48, 3),  # enlarged
    (lambda d: f.write_photo(d / "mid.jpg", 6, (150, 100)), 64, 3),  # a JPEG under twice the side: no draft
    (lambda d: f.write_photo(d / "photo.webp", 7, (90, 70)), 32, 3),
    (lambda d: f.write_photo(d / "photo.bmp", 8, (90, 70)), 32, 3),
    (lambda d: f.write_gray(d / "gray.png", (40, 30)), 16, 3),
    (lambda d: f.write_rgba_png(d / "rgba.png"), 16, 3),  # alpha on white
    (lambda d: f.write_la_png(d / "la.png"), 16, 3),
    (lambda d: f.write_palette_transparent_png(d / "palette.png"), 16, 3),
    (lambda d: f.write_animated_gif(d / "animated.gif"), 8, 3),  # the first frame
    (lambda d: f.write_exif_rotated_jpeg(d / "exif.jpg"), 16, 3),  # turned upright
    (lambda d: f.write_cmyk_jpeg(d / "cmyk.jpg"), 16, 3),
    (lambda d: f.write_mpo_jpeg(d / "mpo.jpg"), 16, 3),
]
CLOSE = [  # (writer, side, channels, largest mean difference, largest difference) in levels of 0..255
    (lambda d: f.write_photo(d / "big.jpg", 4, (400, 300)), 64, 3, 1.0, 16),  # draft 1/4
    (lambda d: f.write_photo(d / "huge.jpg", 5, (1200, 900)), 96, 3, 1.0, 16),  # draft 1/8
    (lambda d: f.write_16bit_png(d / "16-bit.png"), 16, 3, 1.0, 1),
]


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory: pytest.TempPathFactory):
    """The page alone, without the scripts beside it: the preprocessing needs none, and the page must say in
    words that its files are missing."""
    folder = tmp_path_factory.mktemp("page")
    shutil.copyfile(PAGE, folder / "index.html")
    context = browser.new_context()
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    tab = context.new_page()
    tab.goto((folder / "index.html").as_uri())
    yield tab
    context.close()


def differences(page, path: Path, side: int, channels: int) -> np.ndarray:
    studio = resize_to_tensor(open_image(path, draft_size=(side, side)), side, channels).numpy().astype(int)
    payload = base64.b64encode(path.read_bytes()).decode("ascii")
    shown = np.asarray(page.evaluate(PIXELS, [payload, side, channels]), dtype=int).reshape(studio.shape)
    return np.abs(shown - studio)


def test_without_its_files_the_page_says_so(page) -> None:
    status = page.locator("[data-testid=status]")
    page.wait_for_selector("[data-testid=status][data-state=failed]", timeout=30_000)
    assert "missing" in status.text_content() and "Export the model again" in status.text_content()


@pytest.mark.parametrize(("write", "side", "channels"), EXACT)
def test_the_same_pixels_as_the_studio(page, tmp_path: Path, write, side: int, channels: int) -> None:
    path = write(tmp_path)
    diff = differences(page, path, side, channels)
    assert diff.max() == 0, f"{path.name}: {int((diff > 0).sum())} values differ, by up to {diff.max()}"


@pytest.mark.parametrize(("write", "side", "channels", "mean", "most"), CLOSE)
def test_close_to_the_studio(page, tmp_path: Path, write, side: int, channels: int, mean: float, most: int) -> None:
    path = write(tmp_path)
    diff = differences(page, path, side, channels)
    assert diff.mean() <= mean and diff.max() <= most, f"{path.name}: mean {diff.mean():.3f}, max {diff.max()}"
