"""Every file a dataset lists is confined like a typed path (issue 22): images, metadata JSONs and CSV rows.

The operator allows ``<tmp>/data`` (``STUDIO_DATA_ROOTS``) beside the workspace ``<tmp>/ws``; ``<tmp>/elsewhere``
holds a JSON of credentials and a photo that no dataset may read. A symlink inside an allowed dataset that
leads there is listed with its reason and never opened; one that stays inside the allowed folders is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.common.errors import CoreError
from core.common.workspace import DATA_ROOTS_ENV, WORKSPACE_ENV, Workspace
from core.datasets.layouts import metadata_keys
from core.datasets.scan import ScanResult, scan_dataset
from core.datasets.sources import ZIP_SKIPPED, csv_ref, metadata_ref, resolve_dataset
from core.dedup.cleaning import CLEANING_RECORD, cleaned_folders, cleaning_record
from tests import imagefactory as f

SECRETS = ("hunter2-token", "root-password-77")


@dataclass
class Site:
    ws: Workspace
    data: Path  # the operator's data root
    elsewhere: Path  # outside every root: creds.json, photo.png

    def leaks(self, text: str) -> bool:
        return any(s in text for s in (*SECRETS, str(self.elsewhere)))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "creds.json").write_text(json.dumps({"label": SECRETS[0], "password": SECRETS[1]}))
    f.write_rgb(elsewhere / "photo.png", size=(8, 8), seed=9)
    data.mkdir()
    monkeypatch.setenv(DATA_ROOTS_ENV, str(data))
    monkeypatch.setenv(WORKSPACE_ENV, str(tmp_path / "ws"))
    return Site(Workspace.open(tmp_path / "ws"), data.resolve(), elsewhere.resolve())


def reasons(result: ScanResult) -> dict[str, str]:
    return dict(zip(result.unreadable["path"], result.unreadable["reason"], strict=True))


def everything(result: ScanResult) -> str:
    return json.dumps(result.summary(), default=str) + result.manifest.to_csv()


def json_dataset(folder: Path, link_target: Path) -> Path:
    """``folder/images/{1,2,3}.jpg`` and ``folder/metadata/{1,3}.json`` (label cat); ``2.json`` links to the target."""
    for stem in ("1", "2", "3"):
        f.write_rgb(folder / "images" / f"{stem}.jpg", size=(8, 8), seed=int(stem))
    (folder / "metadata").mkdir(parents=True)
    for stem in ("1", "3"):
        (folder / "metadata" / f"{stem}.json").write_text(json.dumps({"label": "cat", "password": "none"}))
    (folder / "metadata" / "2.json").symlink_to(link_target)
    return folder / "metadata"


# --- JSON metadata ------------------------------------------------------------------------------------------


def test_a_metadata_file_linked_outside_is_listed_and_never_read(site: Site) -> None:
    meta = json_dataset(site.data / "bins", site.elsewhere / "creds.json")
    ref = metadata_ref(meta, "label", site.ws)
    result = scan_dataset(ref, site.ws.cache)
    assert result.classes == {"cat": 2}
    assert "outside the folders this studio may read" in reasons(result)["2.jpg"]
    assert not site.leaks(everything(result)), everything(result)


def test_the_keys_offered_never_come_from_a_file_linked_outside(site: Site) -> None:
    meta = json_dataset(site.data / "bins", site.elsewhere / "creds.json")
    keys = metadata_keys(meta, reach=site.ws.allowed_roots)
    assert {k.key: k.examples for k in keys} == {"label": ("cat",), "password": ("none",)}
    assert all(k.n_files == 2 for k in keys)
    # Without naming the allowed folders, a metadata folder reaches only itself.
    assert not site.leaks(repr(metadata_keys(meta)))


def test_a_metadata_link_that_stays_inside_the_allowed_folders_keeps_working(site: Site) -> None:
    shared = site.data / "shared"
    shared.mkdir()
    (shared / "two.json").write_text(json.dumps({"label": "dog"}))
    meta = json_dataset(site.data / "bins", shared / "two.json")
    result = scan_dataset(metadata_ref(meta, "label", site.ws), site.ws.cache)
    assert result.classes == {"cat": 2, "dog": 1} and result.unreadable.empty
    assert {k.key: k.n_files for k in metadata_keys(meta, reach=site.ws.allowed_roots)}["label"] == 3


def test_a_zip_record_linked_outside_is_not_read(site: Site) -> None:
    folder = site.data / "cats"
    f.write_rgb(folder / "cat" / "0.png", size=(8, 8))
    (site.elsewhere / "record.json").write_text(json.dumps([{"path": SECRETS[0], "reason": SECRETS[1]}]))
    (folder / ZIP_SKIPPED).symlink_to(site.elsewhere / "record.json")
    result = scan_dataset(resolve_dataset(str(folder), site.ws))
    assert result.manifest["path"].tolist() == ["cat/0.png"]
    assert not site.leaks(everything(result)), everything(result)


# --- images of a folder per class -----------------------------------------------------------------------


def test_an_image_linked_outside_is_refused_and_one_linked_inside_the_allowed_folders_is_used(site: Site) -> None:
    pets = site.data / "pets"
    for i in range(2):
        f.write_rgb(pets / "cat" / f"{i}.png", size=(8, 8), seed=i)
    f.write_rgb(site.data / "other" / "dog.png", size=(8, 8), seed=5)
    (pets / "cat" / "out.png").symlink_to(site.elsewhere / "photo.png")
    (pets / "cat" / "near.png").symlink_to(site.data / "other" / "dog.png")  # another allowed folder
    (pets / "cat" / "same.png").symlink_to(pets / "cat" / "0.png")  # inside the dataset itself
    result = scan_dataset(resolve_dataset(str(pets), site.ws), site.ws.cache)
    assert sorted(result.manifest["path"]) == ["cat/0.png", "cat/1.png", "cat/near.png", "cat/same.png"]
    assert list(reasons(result)) == ["cat/out.png"]
    assert "outside the folders this studio may read" in reasons(result)["cat/out.png"]
    assert result.n_opened == 4  # the link outside was never opened
    assert not site.leaks(everything(result))


# --- rows of a CSV ---------------------------------------------------------------------------------------------


def test_csv_rows_naming_images_through_links_outside_are_refused_alike(site: Site) -> None:
    images = site.data / "whales" / "images"
    f.write_rgb(images / "ok.png", size=(8, 8))
    f.write_rgb(site.data / "more" / "near.png", size=(8, 8), seed=3)
    (images / "out").symlink_to(site.elsewhere, target_is_directory=True)
    (images / "in").symlink_to(site.data / "more", target_is_directory=True)
    (images / "file-out.png").symlink_to(site.elsewhere / "photo.png")
    labels = site.data / "whales" / "labels.csv"
    labels.write_text("image,label\nok.png,a\nout/photo.png,b\nout/none.png,b\nout/photo,b\nfile-out.png,b\n"
                      "in/near.png,c\n")  # fmt: skip
    result = scan_dataset(csv_ref(labels, site.ws, images=images), site.ws.cache)
    assert sorted(result.manifest["path"]) == ["in/near.png", "ok.png"]
    why = reasons(result)
    assert set(why) == {"out/photo.png", "out/none.png", "out/photo", "file-out.png"}
    assert all("outside the folders this studio may read" in r for r in why.values()), why
    # An existing file and a missing one through the same link get the same words: a CSV cannot probe the disk.
    assert why["out/photo.png"] == why["out/none.png"] == why["out/photo"]
    assert not site.leaks(everything(result))


# --- cleaned copies -----------------------------------------------------------------------------------------


def test_a_cleaned_copy_whose_record_or_folder_leads_outside_is_not_read(site: Site) -> None:
    (site.elsewhere / "record").mkdir()
    (site.elsewhere / "record" / CLEANING_RECORD).write_text(json.dumps({"source": "sample:digits",
                                                                        "policies": [SECRETS[0]]}))  # fmt: skip
    (site.elsewhere / "record" / "labels.csv").write_text("image,label\nx.png,a\n")
    (site.ws.datasets / "linked-cleaned-1").symlink_to(site.elsewhere / "record", target_is_directory=True)
    assert cleaned_folders(site.ws) == []
    folder = site.ws.datasets / "inner-cleaned-2"
    folder.mkdir()
    (folder / CLEANING_RECORD).symlink_to(site.elsewhere / "record" / CLEANING_RECORD)
    (folder / "labels.csv").write_text("image,label\nx.png,a\n")
    with pytest.raises(CoreError) as caught:
        cleaning_record(folder)
    assert not site.leaks(str(caught.value))
