"""The bad-file corpus (tests/badfiles.py) and a flat folder of unlabelled pictures on the Datasets and Duplicates
pages (AppTest): no exception, every bad file counted as unreadable, the good ones shown."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests import imagefactory as fx
from tests.badfiles import CORPUS, GOOD_PER_CLASS, write_corpus
from tests.support import ROOT

TIMEOUT = 120


def _open_folder(folder: Path) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/datasets.py").run()
    at.radio(key="picker_source").set_value("Folder").run()
    at.text_input(key="folder_path").set_value(str(folder)).run()
    at.button(key="open_folder").click().run()
    return at


def test_the_corpus_opens_on_the_datasets_and_duplicates_pages(tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "data" / "corpus")
    at = _open_folder(root)
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    n_bad = sum(not k.good for k in CORPUS)
    assert metrics["Images"] == str(2 * GOOD_PER_CLASS + len(CORPUS) - n_bad)
    assert metrics["Unreadable files"] == str(n_bad)
    at.switch_page("app_pages/duplicates.py").run()
    assert not at.exception, at.exception


def test_a_flat_folder_of_unlabelled_pictures_opens_on_both_pages(tmp_path: Path) -> None:
    flat = tmp_path / "data" / "holiday"
    for i in range(5):
        fx.write_photo(flat / f"IMG_{i:04d}.jpg", 100 + i)
    fx.write_copy(flat / "IMG_0000.jpg", flat / "IMG_0000 copy.jpg", scale=0.5)
    at = _open_folder(flat)
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Images"] == "6"
    at.switch_page("app_pages/duplicates.py").run()
    assert not at.exception, at.exception
