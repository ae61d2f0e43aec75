"""The ways out of the allowed folders (issue 16), each reproduced and refused.

A dashboard user, a file or an archive may name a path; every one goes through ``Workspace.confine``. Here the
operator allows only ``<tmp>/data`` (``STUDIO_DATA_ROOTS``) beside the workspace ``<tmp>/ws``; a private
folder ``<tmp>/private`` holds a secret photo and a secret text whose content must never show up in a
message, a manifest or a page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.common.errors import CoreError, PathNotAllowedError
from core.common.workspace import DATA_ROOTS_ENV, WORKSPACE_ENV, Workspace
from core.datasets.scan import scan_dataset
from core.datasets.sources import csv_ref, extract_upload, metadata_ref, resolve_dataset
from core.dedup.cleaning import CLEANING_RECORD, cleaned_folders, open_cleaned
from tests import imagefactory as f
from tests.support import ROOT

SECRET_TEXT = "PRETTY_NAME=secret-distribution-7731"


@dataclass
class Site:
    ws: Workspace
    data: Path  # the operator's data root
    private: Path  # outside every root: photos/secret.png, os-release, labels.csv

    def leaks(self, text: str) -> bool:
        """True when ``text`` shows anything of the private folder or where the workspace is on disk."""
        return any(s in text for s in (SECRET_TEXT, "secret-distribution", str(self.private), str(self.ws.root)))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    data, private = tmp_path / "data", tmp_path / "private"
    f.write_rgb(private / "photos" / "secret.png", size=(8, 8), seed=1)
    (private / "os-release").write_text(f"{SECRET_TEXT}\nID=secret\n")
    (private / "labels.csv").write_text("image,label\nphotos/secret.png,x\n")
    f.write_rgb(data / "cats" / "cat" / "0.png", size=(8, 8), seed=2)
    monkeypatch.setenv(DATA_ROOTS_ENV, str(data))
    monkeypatch.setenv(WORKSPACE_ENV, str(tmp_path / "ws"))
    return Site(Workspace.open(tmp_path / "ws"), data.resolve(), private.resolve())


def evil_zip(source: str) -> bytes:
    """A 'cleaned dataset' ZIP whose record points at a folder of the server's and whose CSV names a photo there."""
    return f.zip_bytes({CLEANING_RECORD: json.dumps({"source": source, "counts": {"kept": 1}}).encode(),
                        "labels.csv": b"image,label\nphotos/secret.png,x\n"})  # fmt: skip


def spec_forms(site: Site) -> list[str]:
    """``source`` values an attacker would write: absolute, ``csv:``, ``json:``, ``../`` and a query that leads out."""
    ok_csv = site.data / "ok.csv"
    ok_csv.write_text("image,label\ncat/0.png,cat\n")
    return [str(site.private), f"csv:{site.private}/os-release", f"csv:{site.private}/labels.csv",
            f"csv:{ok_csv}?images={site.private}", "json:/root?key=x", f"json:{site.private}?key=ID",
            "../private", "../../../../../../etc", "datasets/../../private", "csv:../private/os-release"]  # fmt: skip


# --- specs and typed paths ---------------------------------------------------------------------------


def test_every_form_of_a_path_outside_is_refused_without_its_content(site: Site) -> None:
    for spec in spec_forms(site):
        with pytest.raises(PathNotAllowedError) as caught:
            resolve_dataset(spec, site.ws)
        assert not site.leaks(str(caught.value)), (spec, str(caught.value))


def test_the_source_options_are_confined_too(site: Site) -> None:
    folder = str(site.data / "cats")
    for options in ({"labels": site.private / "labels.csv"}, {"labels": site.private / "labels.csv", "images": folder},
                    {"metadata": site.private}, {"images": site.private, "labels": site.data / "ok.csv"}):  # fmt: skip
        (site.data / "ok.csv").write_text("image,label\ncat/0.png,cat\n")
        with pytest.raises(PathNotAllowedError):
            resolve_dataset(folder, site.ws, **options)


def test_an_allowed_dataset_still_opens(site: Site) -> None:
    ref = resolve_dataset(str(site.data / "cats"), site.ws)
    assert scan_dataset(ref).manifest["path"].tolist() == ["cat/0.png"]


def test_csv_image_names_that_climb_out_are_listed_without_looking_them_up(site: Site) -> None:
    labels = site.data / "climb.csv"
    secret = "../../private/photos/secret.png"
    labels.write_text(f"image,label\ncats/cat/0.png,cat\n{secret},x\n../../nowhere/none.png,y\n")
    result = scan_dataset(csv_ref(labels, site.ws, images=site.data))
    assert result.manifest["path"].tolist() == ["cats/cat/0.png"]
    reasons = dict(zip(result.unreadable["path"], result.unreadable["reason"], strict=True))
    # The same words whether the file exists or not: a CSV cannot probe the disk.
    assert reasons[secret].split(" (")[0] == reasons["../../nowhere/none.png"].split(" (")[0]
    assert reasons[secret].startswith("names a file outside the dataset folder")


# --- cleaned datasets: a record is a pointer only when the studio wrote it --------------------------


def test_an_uploaded_cleaned_zip_is_data_never_a_pointer(site: Site) -> None:
    for k, source in enumerate(spec_forms(site)):
        folder = extract_upload(evil_zip(source), f"evil{k}-cleaned-1.zip", site.ws)
        assert folder in cleaned_folders(site.ws)  # listed under "Cleaned datasets", as the report found it
        ref = open_cleaned(folder, site.ws)
        assert ref.root.is_relative_to(site.ws.datasets) and ref.labels.is_relative_to(folder)
        result = scan_dataset(ref)
        assert result.manifest.empty, source  # the secret photo is not in the dataset
        assert not any(site.leaks(r) for r in result.unreadable["reason"])


@pytest.mark.parametrize("form", range(10))
def test_a_tampered_record_in_the_workspace_is_refused_in_words(site: Site, form: int) -> None:
    """A ``cleaning.json`` not from a ZIP (edited by hand, or left by an older version) is confined like a typed path."""
    source = spec_forms(site)[form]
    folder = site.ws.datasets / "tampered-cleaned-1"
    folder.mkdir()
    (folder / CLEANING_RECORD).write_text(json.dumps({"source": source}))
    (folder / "labels.csv").write_text("image,label\nphotos/secret.png,x\n")
    with pytest.raises(PathNotAllowedError) as caught:
        open_cleaned(folder, site.ws)
    assert "outside the folders this studio may read" in str(caught.value) and not site.leaks(str(caught.value))


def test_a_record_the_studio_wrote_still_opens(site: Site) -> None:
    folder = site.ws.datasets / "cats-cleaned-2"
    folder.mkdir()
    (folder / CLEANING_RECORD).write_text(json.dumps({"source": str(site.data / "cats")}))
    (folder / "labels.csv").write_text("image,label\ncat/0.png,cat\n")
    assert scan_dataset(open_cleaned(folder, site.ws)).manifest["path"].tolist() == ["cat/0.png"]


# --- metadata folders and links --------------------------------------------------------------------


def metadata_beside_images(tmp_path: Path) -> Path:
    """``bins/metadata/<n>.json`` (EXPECTED_QUANTITY) with their images in the sibling ``bins/bin-images/``."""
    bins = tmp_path / "bins"
    for stem in ("101", "102"):
        (bins / "metadata").mkdir(parents=True, exist_ok=True)
        (bins / "metadata" / f"{stem}.json").write_text(json.dumps({"EXPECTED_QUANTITY": 1}))
        f.write_rgb(bins / "bin-images" / f"{stem}.jpg", size=(8, 8))
    return bins


def test_the_image_folder_of_json_metadata_is_never_a_sibling_outside(tmp_path: Path, monkeypatch) -> None:
    """STUDIO_DATA_ROOTS is the metadata folder itself; the images beside it are outside and stay unread."""
    bins = metadata_beside_images(tmp_path)
    monkeypatch.setenv(DATA_ROOTS_ENV, str(bins / "metadata"))  # only the metadata folder is allowed
    ws = Workspace.open(tmp_path / "ws")
    ref = metadata_ref(bins / "metadata", "EXPECTED_QUANTITY", ws)
    assert ws.allows(ref.root) and not ref.root.is_relative_to(bins / "bin-images")
    result = scan_dataset(ref)
    assert result.manifest.empty and not any("bin-images" in p for p in result.unreadable["path"])
    with pytest.raises(PathNotAllowedError):
        metadata_ref(bins / "metadata", "EXPECTED_QUANTITY", ws, images=bins / "bin-images")


def test_a_link_in_the_datasets_folder_pointing_outside_is_neither_listed_nor_opened(site: Site) -> None:
    (site.ws.datasets / "innocent").symlink_to(site.private, target_is_directory=True)
    (site.ws.datasets / "fine").mkdir()
    assert site.ws.list_folders() == [site.ws.datasets / "fine", site.data / "cats"]
    with pytest.raises(PathNotAllowedError):
        resolve_dataset(str(site.ws.datasets / "innocent"), site.ws)


# --- the dashboard --------------------------------------------------------------------------------------


@pytest.fixture
def dashboard(site: Site) -> AppTest:
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("app_pages/datasets.py").run()
    yield at
    st.cache_resource.clear()


def _shown(at: AppTest) -> str:
    parts = [e.value for e in at.error] + [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [d.value.to_csv() for d in at.dataframe] + [str(m.value) for m in at.metric]
    return "\n".join(parts)


def test_the_evil_zip_uploaded_on_the_page_shows_nothing_of_the_server(dashboard: AppTest, site: Site) -> None:
    at = dashboard
    at.radio(key="picker_source").set_value("Upload a ZIP").run()
    at.file_uploader(key="zip_upload").set_value(("evil-cleaned-1.zip", evil_zip(str(site.private)),
                                                  "application/zip")).run()  # fmt: skip
    at.radio(key="picker_source").set_value("Cleaned datasets").run()
    at.button(key="open_cleaned").click().run()
    assert not at.exception, at.exception
    ref = at.session_state["dataset"]
    assert ref.root.is_relative_to(site.ws.datasets)
    at.session_state["dataset_tab"] = "Samples"
    at.run()
    assert {m.label: m.value for m in at.metric}.get("Images", "0") == "0"
    assert not site.leaks(_shown(at)), _shown(at)


def test_a_tampered_record_opened_on_the_page_is_refused_in_words(dashboard: AppTest, site: Site) -> None:
    folder = site.ws.datasets / "tampered-cleaned-1"
    folder.mkdir()
    (folder / CLEANING_RECORD).write_text(json.dumps({"source": f"csv:{site.private}/os-release"}))
    (folder / "labels.csv").write_text("image,label\nphotos/secret.png,x\n")
    at = dashboard
    at.radio(key="picker_source").set_value("Cleaned datasets").run()
    at.button(key="open_cleaned").click().run()
    assert not at.exception, at.exception
    assert any("outside the folders this studio may read" in e.value for e in at.error)
    assert at.session_state["dataset"].display == "sample:digits"  # the sample stays chosen
    assert not site.leaks(_shown(at)), _shown(at)


def test_the_folder_list_leaves_out_links_that_lead_out(dashboard: AppTest, site: Site) -> None:
    (site.ws.datasets / "innocent").symlink_to(site.private, target_is_directory=True)
    at = dashboard
    at.radio(key="picker_source").set_value("Folder").run()
    assert all("innocent" not in str(o) for o in at.selectbox[0].options)
    at.text_input(key="folder_path").set_value("datasets/innocent").run()
    at.button(key="open_folder").click().run()
    assert any("outside the folders this studio may read" in e.value for e in at.error)
    assert not site.leaks(_shown(at))


def test_json_metadata_on_the_page_does_not_pick_a_sibling_outside(
    dashboard: AppTest, site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bins = metadata_beside_images(tmp_path)
    monkeypatch.setenv(DATA_ROOTS_ENV, str(bins / "metadata"))  # only the metadata folder is allowed
    st.cache_resource.clear()
    at = dashboard.run()
    at.radio(key="picker_source").set_value("JSON metadata").run()
    at.text_input(key="meta_path").set_value(str(bins / "metadata")).run()
    at.button(key="open_meta").click().run()
    assert not at.exception, at.exception
    ref = at.session_state["dataset"]
    assert not ref.root.is_relative_to(bins / "bin-images")
    assert {m.label: m.value for m in at.metric}.get("Images", "0") == "0"


def test_no_page_names_the_workspace_on_disk(dashboard: AppTest, site: Site) -> None:
    at = dashboard
    at.radio(key="picker_source").set_value("Folder").run()
    at.text_input(key="folder_path").set_value("datasets/none-such").run()
    at.button(key="open_folder").click().run()
    assert at.error and not site.leaks(_shown(at)), _shown(at)
    assert all(str(site.ws.root) not in c.value for c in at.sidebar.caption)


def test_core_error_messages_name_paths_relative_to_the_workspace(site: Site) -> None:
    (site.ws.datasets / "empty-meta").mkdir()
    with pytest.raises(CoreError) as caught:
        metadata_ref(site.ws.datasets / "empty-meta", "k", site.ws)
    assert str(site.ws.root) not in site.ws.redact(str(caught.value))
