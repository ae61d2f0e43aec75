"""AppTest: every page runs without an exception, on an empty workspace and on the sample, plus the
dataset picker flows (folder, CSV, ZIP upload) driven by widget keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests import imagefactory as fx
from tests.support import ROOT

PAGES = ["app_pages/home.py", "app_pages/datasets.py", "app_pages/duplicates.py", "app_pages/train.py", "app_pages/runs.py",
         "app_pages/classify.py", "app_pages/evaluate.py", "app_pages/scaling.py"]  # fmt: skip
TIMEOUT = 60


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)


def errors_of(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_without_exception_on_an_empty_workspace(page: str) -> None:
    at = app().run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert not errors_of(at)


def test_home_is_the_default_page_and_names_the_three_steps() -> None:
    at = app().run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown) + " ".join(s.value for s in at.subheader)
    for step in ("1. Look at the data", "2. Find copies", "3. Train", "4. Classify"):
        assert step in text


def test_datasets_page_opens_on_the_sample_with_counts() -> None:
    at = app().run()
    at.switch_page("app_pages/datasets.py").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "1,797"
    assert metrics["Classes"] == "10"
    assert metrics["Unreadable files"] == "0"
    assert metrics["Training / validation / test"] == "1,257 / 270 / 270"


def test_datasets_page_opens_a_typed_folder_and_lists_broken_files(tmp_path: Path) -> None:
    data = tmp_path / "data" / "pets"
    for label in ("cat", "dog"):
        for i in range(3):
            fx.write_rgb(data / label / f"{i}.png", seed=i)
    fx.write_truncated_jpeg(data / "dog" / "broken.jpg")
    at = app().run()
    at.switch_page("app_pages/datasets.py").run()
    at.radio(key="picker_source").set_value("Folder").run()
    at.text_input(key="folder_path").set_value(str(data)).run()
    at.button(key="open_folder").click().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "6" and metrics["Classes"] == "2" and metrics["Unreadable files"] == "1"


def test_datasets_page_refuses_a_folder_outside_the_allowed_roots() -> None:
    at = app().run()
    at.switch_page("app_pages/datasets.py").run()
    at.radio(key="picker_source").set_value("Folder").run()
    at.text_input(key="folder_path").set_value("/etc").run()
    at.button(key="open_folder").click().run()
    assert not at.exception
    assert any("outside the folders this studio may read" in e for e in errors_of(at))
    assert {m.label: m.value for m in at.metric}["Images"] == "1,797"  # the sample stays chosen


def test_datasets_page_opens_a_csv_of_labels(tmp_path: Path) -> None:
    data = tmp_path / "data" / "whales"
    rows = ["Image,Id"]
    for i in range(6):
        fx.write_rgb(data / "train" / f"w{i}.jpg", seed=i)
        rows.append(f"w{i}.jpg,{'new_whale' if i % 2 else 'w_1'}")
    (data / "train.csv").write_text("\n".join(rows) + "\n")
    at = app().run()
    at.switch_page("app_pages/datasets.py").run()
    at.radio(key="picker_source").set_value("CSV of labels").run()
    at.text_input(key="csv_path").set_value(str(data / "train.csv")).run()
    at.button(key="open_csv").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "6" and metrics["Classes"] == "2"


def test_datasets_page_offers_json_keys_and_opens_metadata(tmp_path: Path) -> None:
    data = tmp_path / "data" / "bins"
    for i in range(4):
        fx.write_rgb(data / "bin-images" / f"{i}.jpg", seed=i)
        (data / "metadata").mkdir(parents=True, exist_ok=True)
        (data / "metadata" / f"{i}.json").write_text(f'{{"EXPECTED_QUANTITY": {i % 2 + 1}, "image_fname": "{i}.jpg"}}')
    at = app().run()
    at.switch_page("app_pages/datasets.py").run()
    at.radio(key="picker_source").set_value("JSON metadata").run()
    at.text_input(key="meta_path").set_value(str(data / "metadata")).run()
    assert "EXPECTED_QUANTITY" in at.selectbox(key="meta_key").options
    at.selectbox(key="meta_key").set_value("EXPECTED_QUANTITY").run()
    at.button(key="open_meta").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "4" and metrics["Classes"] == "2"


def test_datasets_page_accepts_a_zip_upload(tmp_path: Path) -> None:
    members = {}
    for label in ("red", "blue"):
        for i in range(2):
            members[f"shapes/{label}/{i}.png"] = fx.write_rgb(tmp_path / f"{label}{i}.png", seed=i).read_bytes()
    data = fx.zip_bytes(members)
    at = app().run()
    at.switch_page("app_pages/datasets.py").run()
    at.radio(key="picker_source").set_value("Upload a ZIP").run()
    at.file_uploader(key="zip_upload").set_value(("shapes.zip", data, "application/zip")).run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "4" and metrics["Classes"] == "2"


def test_datasets_page_reports_a_bad_zip_in_words() -> None:
    at = app().run()
    at.switch_page("app_pages/datasets.py").run()
    at.radio(key="picker_source").set_value("Upload a ZIP").run()
    at.file_uploader(key="zip_upload").set_value(("bad.zip", b"this is not a zip", "application/zip")).run()
    assert not at.exception
    assert any("not a ZIP" in e for e in errors_of(at))


@pytest.mark.parametrize("tab", ["Class balance", "Samples", "Sizes and types", "Unreadable files", "2-D map"])
def test_every_datasets_tab_draws_on_the_sample(tab: str) -> None:
    at = app().run()
    at.switch_page("app_pages/datasets.py")
    at.session_state["dataset_tab"] = tab
    at.run()
    assert not at.exception, at.exception
    if tab == "Samples":
        at.selectbox(key="grid_class").set_value("3").run()
        assert not at.exception
    if tab == "2-D map":
        at.button(key="proj_go").click().run()
        assert not at.exception, at.exception
        assert not errors_of(at)
