"""AppTest: the Classify page says "not sure" for a photo unlike the training photos (scikit-image's coffee shown to
the digits model), in words beside the answer and in the gallery and CSV of a batch, and nothing for a digit."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import streamlit as st
from PIL import Image
from skimage import data as photos
from streamlit.testing.v1 import AppTest

from tests.support import ROOT, TrainedRun, copy_workspace

TIMEOUT = 120


@pytest.fixture(scope="module")
def workspace(trained_digits: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_workspace(trained_digits, tmp_path_factory.mktemp("not-sure") / "ws").ws.root


@pytest.fixture
def page(workspace: Path, trained_digits: TrainedRun, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("STUDIO_WORKSPACE", str(workspace))
    monkeypatch.setenv("STUDIO_DATA_ROOTS", str(trained_digits.dataset.parent))
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    yield at.switch_page("app_pages/classify.py").run()
    st.cache_resource.clear()


def _jpeg(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _digit(trained_digits: TrainedRun) -> bytes:
    return next((trained_digits.dataset / "test" / "4").iterdir()).read_bytes()


def test_a_coffee_cup_shown_to_the_digits_model_is_called_unlike_its_photos(page: AppTest) -> None:
    page.file_uploader(key="classify_files").set_value([("coffee.jpg", _jpeg(Image.fromarray(photos.coffee())),
                                                        "image/jpeg")]).run()  # fmt: skip
    warnings = [w.value for w in page.warning]
    assert not page.exception
    assert any("Not sure" in w and "not like the photos this model learned from" in w for w in warnings), warnings


def test_a_digit_from_its_own_test_split_gets_no_warning(page: AppTest, trained_digits: TrainedRun) -> None:
    page.file_uploader(key="classify_files").set_value([("four.png", _digit(trained_digits), "image/png")]).run()
    assert not page.exception and not [w.value for w in page.warning if "Not sure" in w.value]


def test_a_batch_marks_the_photo_not_sure_and_its_csv_says_why(page: AppTest, trained_digits: TrainedRun) -> None:
    from ui import classify as views

    files = [("coffee.jpg", _jpeg(Image.fromarray(photos.coffee())), "image/jpeg"),
             ("four.png", _digit(trained_digits), "image/png")]  # fmt: skip
    page.file_uploader(key="classify_files").set_value(files).run()
    marks = [m.value for m in page.markdown if "Not sure" in m.value]
    assert not page.exception and len(marks) == 1
    results = page.session_state[views.RESULTS]
    preds = [results[k] for k in results if k[2] is None]  # (upload, model, method, class): the plain answers
    table = views.predict.predictions_table([p.to_json() for p in preds])
    assert sorted(table["not_sure"]) == ["no", "yes"]
    assert "not like the photos" in " ".join(table["why"])
