"""One hostile JSON file is one listed problem, never a crash (issue 22): metadata files, cleaning records,
ZIP records, all read through ``core.common.jsonfile`` (size, depth and type checked)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from core.common.errors import DatasetError
from core.common.jsonfile import JsonFileError, parse_json, read_json
from core.common.workspace import Workspace
from core.datasets.layouts import metadata_keys
from core.datasets.scan import scan_dataset
from core.datasets.sources import ZIP_SKIPPED, extract_upload, metadata_ref, resolve_dataset
from core.dedup.cleaning import CLEANING_RECORD, cleaned_folders, cleaning_record, open_cleaned
from tests import imagefactory as f

DEEP = "[" * 100_000  # the report's file: RecursionError in json.loads


def bins_with(folder: Path, hostile: dict[str, str]) -> Path:
    """``folder/images/{1..}.jpg`` with ``folder/metadata/1.json`` = {"label": "cat"} and one file per ``hostile``
    entry (stem -> raw text) beside it, each with its image."""
    (folder / "metadata").mkdir(parents=True)
    for k, (stem, text) in enumerate({"1": json.dumps({"label": "cat"}), **hostile}.items()):
        f.write_rgb(folder / "images" / f"{stem}.jpg", size=(8, 8), seed=k)
        (folder / "metadata" / f"{stem}.json").write_text(text)
    return folder / "metadata"


# --- the loader ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (DEEP, "nested deeper than 64 levels"),
        ("[" * 100 + "]" * 100, "nested deeper than 64 levels"),  # parses, but nothing downstream should walk it
        ('{"a": ' * 65 + "1" + "}" * 65, "nested deeper than 64 levels"),
        ('{"a": 1,', "not valid JSON"),
        ("1" * 5000, "not valid JSON"),  # past Python's integer-conversion limit: a ValueError, not JSONDecodeError
        ("[]", "holds a list, not an object"),
        ("true", "holds true or false, not an object"),
        ("null", "holds null, not an object"),
    ],
)
def test_a_bad_document_is_refused_with_a_short_reason(text: str, words: str) -> None:
    with pytest.raises(JsonFileError) as caught:
        parse_json(text, "x.json", expect=dict)
    assert words in caught.value.reason and str(caught.value).startswith("x.json: ")


def test_a_document_within_the_limits_is_returned_as_parsed() -> None:
    assert parse_json('{"a": ' * 63 + "[1]" + "}" * 63, expect=dict)["a"]["a"]["a"]
    assert parse_json(b'{"label": "caf\xe9"}', expect=dict) == {"label": "caf\ufffd"}  # Latin-1 byte: replaced
    with pytest.raises(JsonFileError, match="true or false, not a number"):
        parse_json("true", expect=int)


def test_a_large_file_is_refused_after_reading_only_up_to_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"pad": "x" * 4096}))
    with pytest.raises(JsonFileError, match="too large"):
        read_json(big, max_bytes=1024)


def test_a_fifo_named_json_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(JsonFileError, match="not a regular file"):
        read_json(fifo)  # a plain open() would block here forever


# --- JSON metadata --------------------------------------------------------------------------------------------


HOSTILE_METADATA = {"2": DEEP, "3": "[1, 2]", "4": '"just a text"', "5": '{"a": ' * 70 + "1" + "}" * 70}


def test_hostile_metadata_files_are_listed_and_the_others_still_open(ws: Workspace, tmp_path: Path) -> None:
    meta = bins_with(tmp_path / "bins", HOSTILE_METADATA)
    result = scan_dataset(metadata_ref(meta, "label", ws), ws.cache)
    assert result.classes == {"cat": 1}
    reasons = dict(zip(result.unreadable["path"], result.unreadable["reason"], strict=True))
    assert reasons == {
        "2.jpg": "2.json: nested deeper than 64 levels",
        "3.jpg": "3.json: holds a list, not an object",
        "4.jpg": "4.json: holds a text, not an object",
        "5.jpg": "5.json: nested deeper than 64 levels",
    }


def test_the_keys_are_offered_from_the_readable_metadata_files(tmp_path: Path) -> None:
    meta = bins_with(tmp_path / "bins", HOSTILE_METADATA)
    assert [(k.key, k.n_files) for k in metadata_keys(meta)] == [("label", 1)]


def test_a_deep_file_in_a_folder_named_without_a_key_lists_the_keys_of_the_others(
    ws: Workspace, tmp_path: Path
) -> None:
    bins_with(tmp_path / "bins", {"2": DEEP})
    with pytest.raises(DatasetError, match="keys found in metadata: label"):
        resolve_dataset(str(tmp_path / "bins"), ws, metadata=tmp_path / "bins" / "metadata")


# --- records: cleaned copies and ZIPs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ("[]", "holds a list, not an object"),
        (DEEP, "nested deeper than 64 levels"),
        ('{"source": 5}', "holds a number as its source, not a text"),
        ('{"source": "sample:digits", "counts": []}', "holds a list as its counts, not an object"),
        ('{"source": "sample:digits", "counts": {"kept": "many"}}', "counts that are not whole numbers"),
        ('{"source": "sample:digits", "policies": [["keep-one"]]}', "policies that are not names"),
    ],
)
def test_a_cleaning_record_not_shaped_as_the_studio_writes_it_is_refused_in_words(
    ws: Workspace, record: str, words: str
) -> None:
    folder = ws.datasets / "x-cleaned-1"
    folder.mkdir()
    (folder / CLEANING_RECORD).write_text(record)
    (folder / "labels.csv").write_text("image,label\na.png,a\n")
    with pytest.raises(DatasetError) as caught:
        cleaning_record(folder)
    assert words in str(caught.value)
    with pytest.raises(DatasetError):
        open_cleaned(folder, ws)


def test_a_zip_named_like_a_cleaned_copy_with_a_list_for_a_record_still_opens_as_data(ws: Workspace) -> None:
    png = (Path(f.write_rgb(ws.root / "scratch" / "a.png", size=(8, 8)))).read_bytes()
    members = {CLEANING_RECORD: b"[]", "labels.csv": b"image,label\na.png,a\n", "a.png": png}
    folder = extract_upload(f.zip_bytes(members), "x-cleaned-1.zip", ws)
    assert folder in cleaned_folders(ws)
    with pytest.raises(DatasetError, match="holds a list, not an object"):
        cleaning_record(folder)
    assert scan_dataset(open_cleaned(folder, ws)).manifest["path"].tolist() == ["a.png"]  # its record is ignored


@pytest.mark.parametrize("record", [DEEP, '{"path": "x"}', '[{"path": 1, "reason": "r"}, "text"]'])
def test_a_hostile_zip_record_is_ignored(ws: Workspace, tmp_path: Path, record: str) -> None:
    f.write_rgb(tmp_path / "cats" / "cat" / "0.png", size=(8, 8))
    (tmp_path / "cats" / ZIP_SKIPPED).write_text(record)
    result = scan_dataset(resolve_dataset(str(tmp_path / "cats"), ws))
    assert result.manifest["path"].tolist() == ["cat/0.png"] and result.unreadable.empty


# --- a FIFO where a file is expected ------------------------------------------------------------------------


def _refused_without_blocking(fifo: Path, call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` on a thread; fail if it waits on ``fifo`` (then release it by opening the writing end)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():
        with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "wb"):  # the reader is waiting: let it go
            pass
        pytest.fail(f"{fifo.name}: the reader waited on a FIFO")
    return outcome[0]


def test_a_fifo_named_like_a_labels_csv_is_refused_without_waiting(ws: Workspace, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "labels.csv")
    caught = _refused_without_blocking(
        tmp_path / "labels.csv", lambda: resolve_dataset(str(tmp_path / "labels.csv"), ws)
    )
    assert isinstance(caught, DatasetError) and "not a regular file" in str(caught)


def test_a_fifo_among_metadata_files_is_listed_without_waiting(ws: Workspace, tmp_path: Path) -> None:
    meta = bins_with(tmp_path / "bins", {})
    f.write_rgb(tmp_path / "bins" / "images" / "9.jpg", size=(8, 8))
    os.mkfifo(meta / "9.json")
    box: list = []
    scan = lambda: box.append(scan_dataset(metadata_ref(meta, "label", ws)))  # noqa: E731
    assert _refused_without_blocking(meta / "9.json", scan) is None
    result = box[0]
    assert dict(zip(result.unreadable["path"], result.unreadable["reason"], strict=True)) == {
        "9.jpg": "9.json: not a regular file"
    }
