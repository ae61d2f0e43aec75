"""Tests for core.sources: every dataset layout, read from real files, turned into entries and problems."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.common.errors import DatasetError
from core.common.workspace import Workspace
from core.datasets.layouts import one_line
from core.datasets.sources import (
    ZIP_SKIPPED,
    DatasetRef,
    detect_dataset,
    extract_upload,
    list_entries,
    metadata_keys,
    metadata_ref,
    read_label_csv,
    resolve_dataset,
)
from core.images import archive
from tests import imagefactory as f


def labels_of(ref: DatasetRef) -> dict[str, str]:
    entries, _ = list_entries(ref)
    return {e.path: e.label for e in entries}


def problems_of(ref: DatasetRef) -> dict[str, str]:
    _, problems = list_entries(ref)
    return {p.path: p.reason for p in problems}


# --- folder per class -------------------------------------------------------------------------------


def test_folder_per_class_gives_one_entry_per_image_labelled_by_its_folder(class_folder: Path, ws: Workspace) -> None:
    ref = resolve_dataset(str(class_folder), ws)
    entries, problems = list_entries(ref)

    assert ref.kind == "folder"
    assert len(entries) == 12 and problems == []
    assert {e.label for e in entries} == {"cat", "dog", "bird"}
    assert all(e.split == "" for e in entries)
    assert "cat/0.png" in {e.path for e in entries}


def test_split_folders_give_the_split_and_common_split_names_are_understood(tmp_path: Path, ws: Workspace) -> None:
    root = tmp_path / "splits"
    for split_folder in ("Train", "validation", "test"):
        for label in ("a", "b"):
            f.write_rgb(root / split_folder / label / "0.png", size=(8, 8))
    entries, problems = list_entries(resolve_dataset(str(root), ws))

    assert problems == []
    assert sorted((e.path, e.label, e.split) for e in entries) == [
        ("Train/a/0.png", "a", "train"), ("Train/b/0.png", "b", "train"),
        ("test/a/0.png", "a", "test"), ("test/b/0.png", "b", "test"),
        ("validation/a/0.png", "a", "val"), ("validation/b/0.png", "b", "val"),
    ]  # fmt: skip


def test_a_class_named_test_without_class_folders_inside_is_a_class_not_a_split(tmp_path: Path, ws: Workspace) -> None:
    for label in ("test", "real"):
        f.write_rgb(tmp_path / "d" / label / "0.png", size=(8, 8))
    assert labels_of(resolve_dataset(str(tmp_path / "d"), ws)) == {"test/0.png": "test", "real/0.png": "real"}


def test_images_outside_a_class_folder_are_problems_and_junk_is_ignored(class_folder: Path, ws: Workspace) -> None:
    f.write_rgb(class_folder / "stray.png", size=(8, 8))
    (class_folder / "README.txt").write_text("about this data\n")
    f.write_rgb(class_folder / "__MACOSX" / "cat" / "._0.png", size=(8, 8))
    f.write_rgb(class_folder / ".hidden" / "x.png", size=(8, 8))
    (class_folder / "cat" / "Thumbs.db").write_bytes(b"\0")

    ref = resolve_dataset(str(class_folder), ws)
    assert len(labels_of(ref)) == 12
    assert list(problems_of(ref)) == ["README.txt", "stray.png"]  # junk and hidden files are not listed
    assert "not inside a class folder" in problems_of(ref)["stray.png"]
    assert problems_of(ref)["README.txt"] == "not an image (a .txt file)"


def test_a_flat_folder_of_images_is_unlabelled_not_refused(tmp_path: Path, ws: Workspace) -> None:
    for i in range(3):
        f.write_rgb(tmp_path / "flat" / f"{i}.jpg", size=(8, 8), seed=i)
    jpeg = (tmp_path / "flat" / "0.jpg").read_bytes()
    (tmp_path / "flat" / "drawing.svg").write_bytes(jpeg)  # a JPEG misnamed: an image all the same
    (tmp_path / "flat" / "about").write_text("no extension")
    ref = resolve_dataset(str(tmp_path / "flat"), ws)
    assert labels_of(ref) == {"0.jpg": "", "1.jpg": "", "2.jpg": "", "drawing.svg": ""}
    assert problems_of(ref) == {"about": "not an image (a file without an extension)"}


def test_folders_named_like_images_are_listed_and_still_walked(class_folder: Path, ws: Workspace) -> None:
    (class_folder / "cat" / "holiday.jpg").mkdir()
    f.write_rgb(class_folder / "dog" / "album.png" / "inside.png", size=(8, 8))
    ref = resolve_dataset(str(class_folder), ws)
    assert problems_of(ref) == {"cat/holiday.jpg": "a folder named like an image, not an image",
                                "dog/album.png": "a folder named like an image, not an image"}  # fmt: skip
    assert labels_of(ref)["dog/album.png/inside.png"] == "dog"


def test_one_line_escapes_control_characters_and_keeps_accents() -> None:
    assert one_line("café crème.png") == "café crème.png"
    assert one_line("a\nb\rc\td.png") == "a\\nb\\rc\\td.png"


def test_a_symlinked_folder_is_listed_as_a_problem_and_not_entered(odd_folder, ws: Workspace) -> None:
    ref = resolve_dataset(str(odd_folder.root), ws)
    assert not any(path.startswith("elsewhere/") for path in labels_of(ref))
    assert "not followed" in problems_of(ref)["elsewhere"]


# --- CSV of image,label -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "rows"),
    [
        pytest.param("Image,Id", ["a.jpg,w_1", "b.jpg,new_whale"], id="kaggle-whales"),
        pytest.param("filename,label", ["a.jpg,w_1", "b.jpg,new_whale"], id="filename-label"),
        pytest.param("path,class", ["a.jpg,w_1", "b.jpg,new_whale"], id="path-class"),
        pytest.param("id_code,diagnosis", ["a,w_1", "b,new_whale"], id="no-extension-in-csv"),
        pytest.param("label,image", ["w_1,a.jpg", "new_whale,b.jpg"], id="label-first"),
        pytest.param("Image;Id", ["a.jpg;w_1", "b.jpg;new_whale"], id="semicolons"),
        pytest.param("file\tspecies", ["a.jpg\tw_1", "b.jpg\tnew_whale"], id="tabs"),
        pytest.param(" Image , Id ", ["a.jpg , w_1", "b.jpg , new_whale"], id="spaces-around"),
        pytest.param("col_a,col_b", ["a.jpg,w_1", "b.jpg,new_whale"], id="unknown-two-columns"),
        pytest.param("\ufeffImage,Id", ["a.jpg,w_1", "b.jpg,new_whale"], id="excel-bom"),
    ],
)
def test_csv_columns_are_found_by_common_names(tmp_path: Path, ws: Workspace, header: str, rows: list[str]) -> None:
    f.write_rgb(tmp_path / "a.jpg", size=(8, 8))
    f.write_rgb(tmp_path / "b.jpg", size=(8, 8), seed=1)
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")

    ref = resolve_dataset(str(csv), ws)
    assert ref.kind == "csv" and ref.root == tmp_path.resolve()
    assert labels_of(ref) == {"a.jpg": "w_1", "b.jpg": "new_whale"}


def test_csv_split_column_and_paths_in_subfolders(tmp_path: Path, ws: Workspace) -> None:
    f.write_rgb(tmp_path / "imgs" / "a.png", size=(8, 8))
    f.write_rgb(tmp_path / "imgs" / "b.png", size=(8, 8), seed=1)
    csv = tmp_path / "meta.csv"
    csv.write_text("filepath,category,subset\nimgs/a.png,x,Training\nimgs\\b.png,y,valid\n")

    entries, problems = list_entries(resolve_dataset(str(csv), ws))
    assert problems == []
    assert sorted((e.path, e.label, e.split) for e in entries) == [
        ("imgs/a.png", "x", "train"),
        ("imgs/b.png", "y", "val"),
    ]


def test_whale_csv_finds_its_image_folder_and_keeps_new_whale_as_a_label(whale_csv, ws: Workspace) -> None:
    ref = resolve_dataset(str(whale_csv.csv), ws)

    assert ref.kind == "csv"
    assert ref.root == whale_csv.images.resolve()
    labels = labels_of(ref)
    assert len(labels) == 8 and labels["n1.jpg"] == "new_whale"
    assert problems_of(ref) == {}


def test_labels_and_images_options_name_the_csv_and_its_folder(whale_csv, ws: Workspace) -> None:
    ref = resolve_dataset(str(whale_csv.csv.parent), ws, labels=whale_csv.csv, images=whale_csv.images)
    assert ref.kind == "csv" and len(labels_of(ref)) == 8


def test_csv_rows_without_a_file_label_or_a_second_time_are_problems(whale_csv, ws: Workspace) -> None:
    with whale_csv.csv.open("a") as out:
        out.write("missing.jpg,w_9\na1.jpg,w_2\nb1.jpg,\n,w_3\n")
    ref = resolve_dataset(str(whale_csv.csv), ws)

    problems = problems_of(ref)
    assert "no such file" in problems["missing.jpg"]
    assert "listed again" in problems["a1.jpg"]
    assert "no label" in problems["b1.jpg"]
    assert "without an image name" in problems["train.csv:13"]
    assert labels_of(ref)["a1.jpg"] == "w_1"  # the first row wins


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("a,b,c\n1.jpg,x,y\n", "cannot tell which columns", id="three-unknown-columns"),
        pytest.param("image\n1.jpg\n2.jpg\n", "two columns", id="one-column"),
        pytest.param("", "cannot read", id="empty-file"),
    ],
)
def test_csv_without_usable_columns_is_refused_with_the_columns_named(
    tmp_path: Path, content: str, message: str
) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_label_csv(csv)


# --- one JSON per image ----------------------------------------------------------------------------------


def test_bins_metadata_finds_the_image_folder_and_reads_expected_quantity(bins, ws: Workspace) -> None:
    ref = metadata_ref(bins.metadata, "EXPECTED_QUANTITY", ws)

    assert ref.kind == "metadata"
    assert ref.root == bins.images.resolve()
    assert labels_of(ref) == {"101.jpg": "1", "102.jpg": "1", "103.jpg": "2", "104.jpg": "3", "105.jpg": "3"}


def test_each_unusable_bin_image_is_one_problem_with_the_reason(bins, ws: Workspace) -> None:
    _, problems = list_entries(metadata_ref(bins.metadata, "EXPECTED_QUANTITY", ws))
    by_path = {p.path: p.reason for p in problems}

    assert sorted(p.path for p in problems) == ["106.jpg", "107.jpg", "108.jpg"]  # once each
    assert "not valid JSON" in by_path["106.jpg"]
    assert "no 'EXPECTED_QUANTITY' key" in by_path["107.jpg"]
    assert by_path["108.jpg"] == "no metadata file for this image"


def test_metadata_without_an_image_is_a_problem_named_after_the_json(bins, ws: Workspace) -> None:
    (bins.metadata / "999.json").write_text(json.dumps({"EXPECTED_QUANTITY": 4}))
    _, problems = list_entries(metadata_ref(bins.metadata, "EXPECTED_QUANTITY", ws))
    assert any(p.path == "999.json" and "no image named 999" in p.reason for p in problems)


def test_metadata_without_a_label_key_lists_the_keys_found_but_not_per_item_ones(bins, ws: Workspace) -> None:
    with pytest.raises(DatasetError, match="EXPECTED_QUANTITY") as caught:
        metadata_ref(bins.metadata, None, ws)
    assert "--label-key" in str(caught.value)
    assert "BIN_FCSKU_DATA.B0" not in str(caught.value)


def test_metadata_keys_offers_shared_scalar_keys_most_common_first(bins) -> None:
    keys = {k.key: k for k in metadata_keys(bins.metadata)}

    assert "EXPECTED_QUANTITY" in keys
    assert keys["EXPECTED_QUANTITY"].n_distinct == 3
    assert dict(keys["EXPECTED_QUANTITY"].counts) == bins.classes  # the preview of the classes it gives
    assert not any(key.startswith("BIN_FCSKU_DATA.") for key in keys)  # per-ASIN keys differ file to file


def test_a_nested_label_key_and_float_counts_are_read(tmp_path: Path, ws: Workspace) -> None:
    for stem, count in (("a", 2.0), ("b", 5)):
        f.write_rgb(tmp_path / "images" / f"{stem}.png", size=(8, 8))
        (tmp_path / "meta").mkdir(exist_ok=True)
        (tmp_path / "meta" / f"{stem}.json").write_text(json.dumps({"bin": {"count": count}}))
    ref = metadata_ref(tmp_path / "meta", "bin.count", ws)
    assert labels_of(ref) == {"a.png": "2", "b.png": "5"}


def test_label_key_on_a_bins_folder_reads_its_metadata_instead_of_ignoring_the_key(bins, ws: Workspace) -> None:
    ref = resolve_dataset(str(bins.root), ws, label_key="EXPECTED_QUANTITY")
    assert ref.kind == "metadata"
    assert set(labels_of(ref).values()) == {"1", "2", "3"}


def test_label_key_on_a_folder_without_json_is_refused(class_folder: Path, ws: Workspace) -> None:
    with pytest.raises(DatasetError, match="--metadata"):
        resolve_dataset(str(class_folder), ws, label_key="EXPECTED_QUANTITY")


# --- refs and their spec -------------------------------------------------------------------------------------


def test_every_ref_spec_resolves_back_to_the_same_ref(tmp_path: Path, ws: Workspace, whale_csv, bins) -> None:
    odd_name = tmp_path / "my data? café & co=1"
    f.write_rgb(odd_name / "labels" / "x" / "0.png", size=(8, 8))
    (odd_name / "labels.csv").write_text("image,label\nx/0.png,x\n")
    refs = [
        resolve_dataset(str(whale_csv.csv), ws),
        resolve_dataset(str(bins.images), ws, metadata=bins.metadata, label_key="EXPECTED_QUANTITY"),
        resolve_dataset(str(odd_name / "labels"), ws),
        resolve_dataset(str(odd_name / "labels.csv"), ws, images=odd_name / "labels"),
    ]
    for ref in refs:
        again = resolve_dataset(ref.spec, ws)
        assert (again.kind, again.root, again.labels, again.metadata, again.label_key) == (
            ref.kind, ref.root, ref.labels, ref.metadata, ref.label_key)  # fmt: skip
        assert again.key == ref.key


def test_refs_of_different_datasets_have_different_keys(class_folder: Path, whale_csv, ws: Workspace) -> None:
    assert resolve_dataset(str(class_folder), ws).key != resolve_dataset(str(whale_csv.csv), ws).key


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("{tmp}/nope", "dataset not found", id="missing"),
        pytest.param("{tmp}/file.txt", "neither a folder", id="plain-file"),
        pytest.param("csv:{tmp}/nope.csv?images=x", "labels CSV not found", id="missing-csv-spec"),
        pytest.param("sample:nope", "unknown sample", id="unknown-sample"),
    ],
)
def test_unusable_dataset_arguments_are_refused_with_a_reason(
    tmp_path: Path, ws: Workspace, spec: str, message: str
) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match=message):
        resolve_dataset(spec.format(tmp=tmp_path), ws)


# --- ZIP uploads and detection ------------------------------------------------------------------------------


def zipped(folder: Path, tmp_path: Path) -> Path:
    return f.write_zip(tmp_path / "zips" / f"{folder.name}.zip", f.folder_members(folder))


def test_a_zip_of_each_layout_is_detected(tmp_path: Path, ws: Workspace, class_folder: Path, whale_csv, bins) -> None:
    folder_ref = resolve_dataset(str(zipped(class_folder, tmp_path)), ws)
    csv_ref = resolve_dataset(str(zipped(whale_csv.csv.parent, tmp_path)), ws)
    json_ref = resolve_dataset(str(zipped(bins.root, tmp_path)), ws, label_key="EXPECTED_QUANTITY")

    assert (folder_ref.kind, len(labels_of(folder_ref))) == ("folder", 12)
    assert (csv_ref.kind, len(labels_of(csv_ref))) == ("csv", 8)
    assert (json_ref.kind, len(labels_of(json_ref))) == ("metadata", 5)
    for ref in (folder_ref, csv_ref, json_ref):
        assert ref.root.is_relative_to(ws.datasets)


def test_the_same_zip_uploaded_twice_is_extracted_once(class_folder: Path, ws: Workspace) -> None:
    data = f.zip_bytes(f.folder_members(class_folder))
    first = extract_upload(data, "my upload.zip", ws)
    (first / "cat" / "marker.txt").write_text("still here")
    second = extract_upload(data, "my upload.zip", ws)

    assert second == first
    assert (second / "cat" / "marker.txt").exists()
    assert len(list(ws.datasets.iterdir())) == 1


def test_two_processes_extracting_one_zip_at_once_both_get_the_folder_with_its_record(
    class_folder: Path, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two launchers of one run extract the same upload together; the one whose rename comes second goes on.

    The other process's finished copy is made to land just before our rename. The list of members left out
    must be inside every copy as it is renamed, so no reader sees the folder without it.
    """
    members = f.folder_members(class_folder)
    members["classes/dog/tool.exe"] = b"MZ"
    data = f.zip_bytes(members)
    real_rename = archive.os.rename
    records_when_renamed: list[bool] = []

    def other_process_first(src: str, dst: str) -> None:
        records_when_renamed.append((Path(src) / ZIP_SKIPPED).is_file())
        if not Path(dst).exists():
            other = Path(dst).parent / ".other-process"
            shutil.copytree(src, other)
            real_rename(other, dst)
        real_rename(src, dst)

    monkeypatch.setattr(archive.os, "rename", other_process_first)
    ref = detect_dataset(extract_upload(data, "race.zip", ws), ws)
    entries, problems = list_entries(ref)

    assert records_when_renamed == [True]
    assert len(entries) == 12 and [p.reason for p in problems] == ["left out of the ZIP: not an image or label file"]
    assert [p.name for p in ws.datasets.iterdir()] == [ref.root.parent.name]  # no temp copy left behind


def test_a_zip_holding_one_class_folder_keeps_that_class(class_folder: Path, ws: Workspace) -> None:
    only_cats = {name.removeprefix("classes/"): data for name, data in f.folder_members(class_folder).items()
                 if name.startswith("classes/cat/")}  # fmt: skip
    ref = detect_dataset(extract_upload(f.zip_bytes(only_cats), "cats.zip", ws), ws)
    assert labels_of(ref) == {f"cat/{i}.png": "cat" for i in range(4)}


def test_a_flat_zip_without_a_wrapping_folder_is_a_folder_per_class(class_folder: Path, ws: Workspace) -> None:
    members = {name.removeprefix("classes/"): data for name, data in f.folder_members(class_folder).items()}
    ref = detect_dataset(extract_upload(f.zip_bytes(members), "flat.zip", ws), ws)
    assert ref.kind == "folder" and len(labels_of(ref)) == 12


def test_a_zip_wrapped_in_one_train_folder_keeps_its_split(class_folder: Path, ws: Workspace) -> None:
    members = {name.replace("classes/", "train/", 1): data for name, data in f.folder_members(class_folder).items()}
    ref = detect_dataset(extract_upload(f.zip_bytes(members), "train-only.zip", ws), ws)
    entries, _ = list_entries(ref)
    assert len(entries) == 12 and {e.split for e in entries} == {"train"}


def test_zip_members_left_out_by_extraction_are_listed_as_problems(class_folder: Path, ws: Workspace) -> None:
    members = f.folder_members(class_folder)
    members["classes/cat/../../evil.png"] = b"x"
    members["classes/dog/tool.exe"] = b"MZ"
    data = f.zip_bytes(members, symlinks={"classes/cat/passwd.png": "/etc/passwd"})
    entries, problems = list_entries(detect_dataset(extract_upload(data, "mixed.zip", ws), ws))
    reasons = {p.path: p.reason for p in problems}

    assert len(entries) == 12
    assert reasons["classes/cat/passwd.png"] == "left out of the ZIP: symlink"
    assert reasons["classes/cat/../../evil.png"] == "left out of the ZIP: unsafe name"
    assert "not an image" in reasons["classes/dog/tool.exe"]


def test_a_kaggle_zip_uses_train_csv_not_the_sample_submission(whale_csv, ws: Workspace) -> None:
    members = f.folder_members(whale_csv.csv.parent)
    members["whales/test/t1.jpg"] = members["whales/train/a1.jpg"]
    members["whales/sample_submission.csv"] = b"Image,Id\nt1.jpg,new_whale w_1 w_2 w_3 w_4\n"
    ref = detect_dataset(extract_upload(f.zip_bytes(members), "whales.zip", ws), ws)

    assert ref.labels is not None and ref.labels.name == "train.csv"
    assert len(labels_of(ref)) == 8


def test_detect_dataset_needs_a_label_key_for_json_metadata(bins, ws: Workspace) -> None:
    with pytest.raises(DatasetError, match="EXPECTED_QUANTITY"):
        detect_dataset(bins.root, ws)
    assert detect_dataset(bins.root, ws, label_key="EXPECTED_QUANTITY").kind == "metadata"


def test_a_name_too_long_for_any_file_system_is_refused_with_a_message(ws: Workspace) -> None:
    with pytest.raises(DatasetError, match="the dataset is not a usable path .*too long"):
        resolve_dataset("datasets/" + "a" * 300, ws)
