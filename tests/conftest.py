"""Shared fixtures: a workspace in ``tmp_path``, tiny real datasets in every layout the studio reads, and the
trained runs many tests read.

Every image is a real file a few hundred bytes long, written by ``tests/imagefactory.py``; nothing is mocked.
An autouse guard points the default workspace at a temporary folder, so no test (nor a child process it
starts, which inherits the environment) ever writes into the repository's ``./workspace``.

Trained runs are made once per pytest run (session fixtures, each in a workspace of its own): ``trained_digits``
(the default recipe on the sample digits), ``trained_colours`` (a 1-epoch LeNet on the colour classes) and
``trained_colour_folders`` (the evaluation's colour folders with two planted mistakes). Read them; a test that
changes a workspace works on its own copy (``tests.support.copy_workspace``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.common.workspace import DATA_ROOTS_ENV, WORKSPACE_ENV, Workspace
from core.datasets import samples
from tests import imagefactory as f
from tests.support import TrainedRun, train_to_the_end

SYSTEM_FILE = Path("/etc/passwd")  # any readable file outside every dataset


@pytest.fixture(scope="session")
def default_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One throwaway default workspace per session (the sample is materialised there at most once)."""
    return tmp_path_factory.mktemp("default-workspace")


@pytest.fixture(autouse=True)
def _never_the_repo_workspace(
    default_workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The default workspace is a throwaway one, and the test's own ``tmp_path`` is the operator's data root:
    datasets a test writes beside its workspace may be read, as an operator would list them in
    ``STUDIO_DATA_ROOTS``. Tests of the confinement set (or unset) the variable themselves."""
    monkeypatch.setenv(WORKSPACE_ENV, str(default_workspace))
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path))
    yield


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


@pytest.fixture(scope="session")
def digits_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace holding ``sample:digits``, written once per session (1,797 files take seconds).

    Shared: tests read the sample's files but never change them.
    """
    ws = Workspace.open(tmp_path_factory.mktemp("digits-ws"))
    samples.sample_path("sample:digits", ws.datasets)
    return ws


# --- trained runs, one of each per pytest run -------------------------------------------------------


@pytest.fixture(scope="session")
def trained_digits(digits_ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """The default recipe (a config naming only the dataset) trained to its end on the sample digits (about 99%
    test accuracy in seconds), in a workspace of its own that reads the sample from ``digits_ws``."""
    ws = Workspace.open(tmp_path_factory.mktemp("trained-digits") / "ws").with_roots(digits_ws.datasets)
    return train_to_the_end(ws, dataset=str(digits_ws.datasets / "sample-digits"))


@pytest.fixture(scope="session")
def trained_colours(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """Run 1 of its workspace: one LeNet epoch on ``datasets/colours`` (the colour classes, 16 non-square 16x12 px
    images each), a few seconds. For the tests that classify and explain with *a* trained model."""
    ws = Workspace.open(tmp_path_factory.mktemp("trained-colours") / "ws")
    dataset = f.write_colour_classes(ws.datasets / "colours", 16, size=(16, 12))
    return train_to_the_end(ws, dataset=str(dataset), arch="lenet", epochs=1, batch_size=16, log_every=1)


@pytest.fixture(scope="session")
def trained_colour_folders(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """Run 1 of its workspace: three LeNet epochs on the evaluation's colour folders (train/val/test, two test
    images planted under the wrong class: ``tests.evaluate.runs.colour_folders``). For the evaluation tests."""
    from tests.evaluate.runs import colour_folders

    base = tmp_path_factory.mktemp("colours-run")
    ws = Workspace.open(base / "ws").with_roots(base)
    return train_to_the_end(ws, dataset=str(colour_folders(base / "colours")), arch="lenet", epochs=3,
                            batch_size=16)  # fmt: skip


# --- folder per class ------------------------------------------------------------------------------

CLASS_COLORS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "bird": (40, 40, 200)}


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """``classes/<cat|dog|bird>/<0..3>.png``: 3 classes x 4 images of 8x8 px."""
    root = tmp_path / "classes"
    for label, color in CLASS_COLORS.items():
        for i in range(4):
            f.write_rgb(root / label / f"{i}.png", size=(8, 8), color=color, seed=i)
    return root


# --- broken and odd files --------------------------------------------------------------------------


@dataclass
class OddFolder:
    """A folder per class full of odd-but-good and broken files, with what a scan must report."""

    root: Path
    classes: dict[str, int]  # good images per class
    bad: set[str] = field(default_factory=set)  # paths (relative to root) that must be listed as unreadable

    @property
    def n_good(self) -> int:
        return sum(self.classes.values())


def _write_odd_good(folder: Path) -> int:
    """Images in unusual modes and with unusual names that must all count as good; returns how many."""
    f.write_cmyk_jpeg(folder / "cmyk.jpg", size=(8, 8))
    f.write_16bit_png(folder / "sixteen.png", size=(8, 8))
    f.write_palette_transparent_png(folder / "palette.png", size=(8, 8))
    f.write_rgba_png(folder / "rgba.png", size=(8, 8))
    f.write_la_png(folder / "la.png", size=(8, 8))
    f.write_animated_gif(folder / "animated.gif", size=(8, 8))
    f.write_exif_rotated_jpeg(folder / "rotated.jpg", size=(12, 6))
    f.write_rgb(folder / "UPPER.JPG", size=(8, 8), fmt="JPEG")
    f.write_rgb(folder / "SHOUT.PNG", size=(8, 8), seed=1)
    f.write_rgb(folder / "with space.jpg", size=(8, 8), seed=2)
    f.write_rgb(folder / "café crème.png", size=(8, 8), seed=3)
    f.write_rgb(folder / "ñandú über.jpeg", size=(8, 8), seed=4)
    return 12


def _write_odd_bad(folder: Path) -> set[str]:
    """Files that must be listed as unreadable; returns their names."""
    f.write_empty(folder / "empty.jpg")
    f.write_text_as_image(folder / "text.jpg")
    f.write_truncated_jpeg(folder / "truncated.jpg", size=(64, 64))
    f.write_truncated_png(folder / "truncated.png", size=(32, 32))
    f.write_bomb_png(folder / "bomb.png")
    f.write_ico(folder / "icon.png", size=(16, 16))
    (folder / "link.jpg").symlink_to(SYSTEM_FILE)
    (folder / "dangling.jpg").symlink_to("gone.jpg")
    (folder / "loop.jpg").symlink_to("loop.jpg")
    return {"empty.jpg", "text.jpg", "truncated.jpg", "truncated.png", "bomb.png", "icon.png", "link.jpg",
            "dangling.jpg", "loop.jpg"}  # fmt: skip


@pytest.fixture
def odd_folder(tmp_path: Path) -> OddFolder:
    """``odd/`` (12 unusual good images), ``plain/`` (3 ordinary ones), ``broken/`` (9 bad files), and a
    symlink ``elsewhere`` to a class folder outside the dataset (2 good images that must not be counted)."""
    root = tmp_path / "odd-dataset"
    n_odd = _write_odd_good(root / "odd")
    for i in range(3):
        f.write_rgb(root / "plain" / f"{i}.jpg", size=(8, 8), seed=i)
    bad = {f"broken/{name}" for name in _write_odd_bad(root / "broken")}
    outside = tmp_path / "outside-class"
    for i in range(2):
        f.write_rgb(outside / f"{i}.png", size=(8, 8), seed=10 + i)
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    (root / "plain" / "notes.txt").write_text("not an image: listed with its reason\n")
    (root / "plain" / ".DS_Store").write_bytes(b"\0" * 16)  # hidden: not listed
    return OddFolder(root, {"odd": n_odd, "plain": 3}, bad | {"elsewhere", "plain/notes.txt"})


# --- CSV of image,label (Kaggle humpback whales) ------------------------------------------------


@dataclass
class Whales:
    csv: Path  # train.csv with columns Image,Id
    images: Path  # the train/ folder beside it
    classes: dict[str, int]


WHALE_ROWS = [("a1.jpg", "w_1"), ("a2.jpg", "w_1"), ("a3.jpg", "w_1"), ("b1.jpg", "w_2"), ("b2.jpg", "w_2"),
              ("n1.jpg", "new_whale"), ("n2.jpg", "new_whale"), ("n3.jpg", "new_whale")]  # fmt: skip


@pytest.fixture
def whale_csv(tmp_path: Path) -> Whales:
    """``whales/train.csv`` (``Image,Id``, 3 ids including ``new_whale``) and its 8 images in ``whales/train/``."""
    root = tmp_path / "whales"
    for i, (image, _) in enumerate(WHALE_ROWS):
        f.write_rgb(root / "train" / image, size=(8, 8), seed=i)
    csv = root / "train.csv"
    csv.write_text("Image,Id\n" + "".join(f"{image},{label}\n" for image, label in WHALE_ROWS))
    return Whales(csv, root / "train", {"new_whale": 3, "w_1": 3, "w_2": 2})


# --- one JSON per image (Amazon bin images) ---------------------------------------------------------


@dataclass
class Bins:
    root: Path
    images: Path  # bin-images/
    metadata: Path  # metadata/
    classes: dict[str, int]  # EXPECTED_QUANTITY -> images
    bad: set[str]  # paths (relative to root) listed as unreadable


def bin_metadata(quantity: int, asins: list[str]) -> dict:
    """A metadata document shaped like the Amazon Bin Image Dataset's."""
    per_asin = {
        asin: {"asin": asin, "name": f"item {asin}", "quantity": 1,
               "height": {"unit": "IN", "value": 2.5}, "weight": {"unit": "pounds", "value": 0.4}}
        for asin in asins
    }  # fmt: skip
    return {"BIN_FCSKU_DATA": per_asin, "EXPECTED_QUANTITY": quantity, "image_fname": "x.jpg"}


@pytest.fixture
def bins(tmp_path: Path) -> Bins:
    """``bins/bin-images/<n>.jpg`` + ``bins/metadata/<n>.json``: 5 labelled images (quantities 1, 1, 2, 3, 3),
    one JSON that is not JSON, one JSON without ``EXPECTED_QUANTITY``, one image without metadata."""
    root = tmp_path / "bins"
    quantities = {"101": 1, "102": 1, "103": 2, "104": 3, "105": 3}
    for i, (stem, quantity) in enumerate(quantities.items()):
        asins = [f"B0{stem}{k}" for k in range(quantity)]
        _write_json(root / "metadata" / f"{stem}.json", bin_metadata(quantity, asins))
        f.write_rgb(root / "bin-images" / f"{stem}.jpg", size=(8, 8), seed=i)
    f.write_rgb(root / "bin-images" / "106.jpg", size=(8, 8), seed=6)
    (root / "metadata" / "106.json").write_text('{"EXPECTED_QUANTITY": 2,')  # cut short
    f.write_rgb(root / "bin-images" / "107.jpg", size=(8, 8), seed=7)
    _write_json(root / "metadata" / "107.json", {"BIN_FCSKU_DATA": {}, "image_fname": "107.jpg"})
    f.write_rgb(root / "bin-images" / "108.jpg", size=(8, 8), seed=8)  # no metadata at all
    bad = {"bin-images/106.jpg", "bin-images/107.jpg", "bin-images/108.jpg"}
    return Bins(root, root / "bin-images", root / "metadata", {"1": 2, "2": 1, "3": 2}, bad)


def _write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


# --- headless Chromium for the browser tests ---------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: ./studio test should have installed Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed (./studio test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-component-update", "--no-first-run"]  # fmt: skip
        b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield b
        b.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Kill multiprocessing children a test left behind. The interpreter's exit joins every non-daemon child: one
    stuck at fork (a lock held by a training thread of a timed-out test) once kept CI waiting past its 90 minutes
    after the last test had reported."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.kill()
        child.join(timeout=10)
