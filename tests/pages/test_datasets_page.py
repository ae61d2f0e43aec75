"""The Datasets page with hostile datasets (issue 22), through AppTest: a metadata file linked out of the allowed
folders shows nothing of what it points at, a JSON file nested 100,000 deep is one listed problem, and a ZIP
that passes for a cleaned copy leaves the "Cleaned datasets" list working for the others.

The operator's data root is ``<tmp>/data`` (tests/pages/conftest.py); ``<tmp>/elsewhere`` is outside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.dedup.cleaning import CLEANING_RECORD
from tests import imagefactory as fx
from tests.support import ROOT

SECRETS = ("hunter2-token", "root-password-77")
TABS = ("Class balance", "Samples", "Sizes and types", "Unreadable files")


def datasets_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("app_pages/datasets.py").run()
    return at


def shown(at: AppTest) -> str:
    """Everything the page shows in words: texts, messages, metrics, tables and the choices it offers."""
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success", "subheader")
             for e in getattr(at, kind)]  # fmt: skip
    parts += [f"{m.label} {m.value}" for m in at.metric] + [d.value.to_csv() for d in at.dataframe]
    parts += [str(option) for box in at.selectbox for option in box.options]
    return "\n".join(parts)


def every_tab(at: AppTest) -> str:
    """What each tab of the opened dataset shows, one after the other; no tab may raise."""
    seen = []
    for tab in TABS:
        at.session_state["dataset_tab"] = tab
        at.run()
        assert not at.exception, (tab, at.exception)
        seen.append(shown(at))
    return "\n".join(seen)


def open_metadata(at: AppTest, folder: Path, key: str) -> AppTest:
    at.radio(key="picker_source").set_value("JSON metadata").run()
    at.text_input(key="meta_path").set_value(str(folder)).run()
    assert not at.exception, at.exception
    at.selectbox(key="meta_key").set_value(key).run()
    at.button(key="open_meta").click().run()
    assert not at.exception, at.exception
    return at


def bins(folder: Path, extra: dict[str, str] | None = None) -> Path:
    """``folder/images/{1,2,3}.jpg``, ``folder/metadata/{1,3}.json`` (label cat) and the ``extra`` metadata texts."""
    (folder / "metadata").mkdir(parents=True)
    for stem in ("1", "2", "3"):
        fx.write_rgb(folder / "images" / f"{stem}.jpg", size=(8, 8), seed=int(stem))
    for stem, text in {"1": '{"label": "cat"}', "3": '{"label": "cat"}', **(extra or {})}.items():
        (folder / "metadata" / f"{stem}.json").write_text(text)
    return folder / "metadata"


def test_a_metadata_file_linked_outside_shows_nothing_of_its_target(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "creds.json").write_text(json.dumps({"label": SECRETS[0], "password": SECRETS[1]}))
    meta = bins(tmp_path / "data" / "bins")
    (meta / "2.json").symlink_to(elsewhere / "creds.json")
    at = datasets_page()
    at.radio(key="picker_source").set_value("JSON metadata").run()
    at.text_input(key="meta_path").set_value(str(meta)).run()
    assert at.selectbox(key="meta_key").options == ["label"]  # "password" came only from the linked file
    picker = shown(at)
    at = open_metadata(at, meta, "label")
    assert {m.label: m.value for m in at.metric}["Images"] == "2"
    tabs = every_tab(at)
    assert "outside the folders this studio may read" in tabs
    for text in (picker, tabs):
        assert not any(s in text for s in (*SECRETS, str(elsewhere))), text


def test_a_metadata_file_nested_100000_deep_is_one_listed_problem(tmp_path: Path) -> None:
    meta = bins(tmp_path / "data" / "bins", {"2": "[" * 100_000})
    at = datasets_page()
    at = open_metadata(at, meta, "label")
    assert {m.label: m.value for m in at.metric}["Images"] == "2"
    assert "2.json: nested deeper than 64 levels" in every_tab(at)


def test_a_zip_posing_as_a_cleaned_copy_is_listed_with_its_reason_and_the_others_still_open(tmp_path: Path) -> None:
    fx.write_rgb(tmp_path / "data" / "cats" / "cat" / "0.png", size=(8, 8))
    good = tmp_path / "ws" / "datasets" / "cats-cleaned-2"
    good.mkdir(parents=True)
    (good / CLEANING_RECORD).write_text(json.dumps({"source": str(tmp_path / "data" / "cats"), "counts": {"kept": 1}}))
    (good / "labels.csv").write_text("image,label\ncat/0.png,cat\n")
    png = fx.write_rgb(tmp_path / "a.png", size=(8, 8)).read_bytes()
    spoof = fx.zip_bytes({CLEANING_RECORD: b"[]", "labels.csv": b"image,label\na.png,a\n", "a.png": png})
    at = datasets_page()
    at.radio(key="picker_source").set_value("Upload a ZIP").run()
    at.file_uploader(key="zip_upload").set_value(("x-cleaned-1.zip", spoof, "application/zip")).run()
    assert not at.exception, at.exception
    at.radio(key="picker_source").set_value("Cleaned datasets").run()
    assert not at.exception, at.exception
    listed = at.dataframe[0].value.set_index("name")["from"]
    (spoof_name,) = [n for n in listed.index if n.startswith("x-cleaned-1")]
    assert "holds a list, not an object" in listed[spoof_name]
    assert at.selectbox(key="cleaned_choice").options == ["cats-cleaned-2"]
    at.button(key="open_cleaned").click().run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Images"] == "1"
    assert at.session_state["dataset"].display == "cats-cleaned-2"


def test_the_operators_data_folder_is_shown_and_typed_by_its_short_name(tmp_path: Path) -> None:
    colours = fx.write_colour_classes(tmp_path / "data" / "colours", 4, size=(8, 8))
    at = datasets_page()
    at.radio(key="picker_source").set_value("Folder").run()
    words = shown(at)
    assert "inside the shared data folder `data` (e.g. `data/...`)" in words
    assert "data/colours" in words  # the folder list names it as a user types it
    assert str(tmp_path) not in words
    at.text_input(key="folder_path").set_value("data/colours").run()
    at.button(key="open_folder").click().run()
    assert not at.exception, at.exception
    assert at.query_params["dataset"] == "data/colours", at.query_params  # no server path in the address
    assert str(colours) not in shown(at)


def test_the_scan_caption_says_how_many_images_came_from_the_cache() -> None:
    at = datasets_page()
    first = [c.value for c in at.caption if "scanned in" in c.value]
    assert first and "1,797 images read (none were cached yet)" in first[0], first
    at.button[[b.label for b in at.button].index("Rescan")].click().run()
    again = [c.value for c in at.caption if "scanned in" in c.value]
    assert again and "(all 1,797 from the cache)" in again[0], again  # it said "0 images opened, the rest from..."


def test_without_operator_folders_the_folder_picker_names_the_workspace_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STUDIO_DATA_ROOTS")
    at = datasets_page()
    at.radio(key="picker_source").set_value("Folder").run()
    assert not at.exception, at.exception  # it raised IndexError with no shared folder
    assert "Type a path inside the workspace (e.g. `datasets/cats`)." in shown(at)
