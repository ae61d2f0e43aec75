"""The dataset picker: the sample, a folder, a CSV of labels, a folder of JSON metadata, a ZIP upload, or a
cleaned copy written by the Duplicates page (``<workspace>/datasets/<name>-cleaned-<hash>/``).

Every path a user types or picks goes through ``Workspace.confine`` (the allowed roots), inside the core
functions the picker calls; it returns a ``DatasetRef`` when the user opens a dataset, and None while they
are still choosing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.common.errors import CoreError
from core.datasets.samples import SAMPLES
from core.datasets.sources import (
    DatasetRef,
    came_from_zip,
    csv_ref,
    detect_dataset,
    extract_upload,
    find_metadata_folder,
    metadata_keys,
    metadata_ref,
    resolve_dataset,
    spec_paths,
)
from core.dedup.cleaning import CLEANING_RECORD, cleaned_folders, cleaning_record, open_cleaned
from ui.common import show_error
from ui.state import workspace
from ui.text import plain

SOURCES = ("Built-in sample", "Folder", "CSV of labels", "JSON metadata", "Upload a ZIP", "Cleaned datasets")
ZIP_LIMIT_MB = 2048


def pick_dataset() -> DatasetRef | None:
    """Draw the picker; the ref the user just opened, else None."""
    source = st.radio("Source", SOURCES, horizontal=True, key="picker_source", label_visibility="collapsed")
    try:
        return {
            "Built-in sample": _sample,
            "Folder": _folder,
            "CSV of labels": _csv,
            "JSON metadata": _metadata,
            "Upload a ZIP": _zip,
            "Cleaned datasets": _cleaned,
        }[source]()
    except CoreError as exc:
        show_error(exc)
        return None


def _sample() -> DatasetRef | None:
    name = st.selectbox("Sample", list(SAMPLES), format_func=lambda n: f"{n}: {SAMPLES[n].description}")
    if st.button("Open sample", key="open_sample", type="primary"):
        return resolve_dataset(f"sample:{name}", workspace())
    return None


def _folder() -> DatasetRef | None:
    ws = workspace()
    found = ws.list_folders()
    st.caption(f"A folder per class (optionally under train/val/test). {_roots()}")
    chosen = st.selectbox("Folders in the workspace", found, format_func=ws.relative_name, index=None,
                          placeholder="No folders yet: upload a ZIP, or type a path below" if not found else "Choose")  # fmt: skip
    typed = st.text_input("...or type a folder path", key="folder_path")
    if st.button("Open folder", key="open_folder", type="primary"):
        if not typed.strip() and chosen is None:
            raise CoreError("choose a folder from the list or type the path of an existing folder")
        folder = ws.confine(typed if typed.strip() else chosen, "folder")
        if not folder.is_dir():
            raise CoreError(f"no such folder: {ws.relative_name(folder)}")
        if (folder / CLEANING_RECORD).is_file():  # a cleaned copy: its images live in the source's folder
            return open_cleaned(folder, ws)
        return detect_dataset(folder, ws)
    return None


def _csv() -> DatasetRef | None:
    st.caption("A CSV with an image column and a label column (e.g. Kaggle's train.csv with Image,Id).")
    labels = st.text_input("CSV file", key="csv_path", placeholder="datasets/whales/train.csv")
    images = st.text_input("Image folder (leave empty to find it next to the CSV)", key="csv_images")
    if st.button("Open CSV", key="open_csv", type="primary"):
        ws = workspace()
        return csv_ref(ws.confine(labels, "CSV file"), ws, images=Path(images) if images.strip() else None)
    return None


def _metadata() -> DatasetRef | None:
    st.caption("One JSON file per image, the label under a key (e.g. Amazon bins: EXPECTED_QUANTITY).")
    folder_text = st.text_input("Metadata folder", key="meta_path", placeholder="datasets/bins/metadata")
    if not folder_text.strip():
        return None
    ws = workspace()
    folder = ws.confine(folder_text, "metadata folder")
    if not folder.is_dir():
        raise CoreError(f"no such folder: {folder_text}")
    keys = metadata_keys(folder, reach=ws.allowed_roots)
    if not keys:
        raise CoreError(f"no JSON files with single-value keys in {folder_text}")
    st.dataframe(pd.DataFrame([{"key": k.key, "files": k.n_files, "distinct values": k.n_distinct,
                                "examples": ", ".join(k.examples)} for k in keys]), hide_index=True)  # fmt: skip
    key = st.selectbox("Label key", [k.key for k in keys], key="meta_key")
    chosen = next(k for k in keys if k.key == key)
    preview = ", ".join(f"{plain(value)} ({n})" for value, n in chosen.counts)  # values from the files: text
    st.caption(f"Classes this key gives in the first {chosen.n_files} files: {preview}"
               + (f" and {chosen.n_distinct - len(chosen.counts)} more" if chosen.n_distinct > len(chosen.counts) else ""))  # fmt: skip
    images = st.text_input("Image folder (leave empty to find it by matching file names)", key="meta_images")
    if st.button("Open metadata", key="open_meta", type="primary"):
        return metadata_ref(folder, key, ws, images=Path(images) if images.strip() else None)
    return None


def _zip() -> DatasetRef | None:
    st.caption("A ZIP of any of the layouts above. It is extracted safely into the workspace once.")
    upload = st.file_uploader("ZIP file", type=["zip"], key="zip_upload", max_upload_size=ZIP_LIMIT_MB)
    if upload is None:
        return None
    ws = workspace()
    folder = extract_upload(upload.getvalue(), upload.name, ws)
    try:
        return detect_dataset(folder, ws)
    except CoreError:
        keys = _meta_keys_in(folder)
        if not keys:
            raise
    key = st.selectbox("This ZIP holds JSON metadata: which key is the label?", keys, key="zip_key")
    if st.button("Open", key="open_zip", type="primary"):
        return detect_dataset(folder, ws, label_key=key)
    return None


def _cleaned() -> DatasetRef | None:
    ws = workspace()
    found = cleaned_folders(ws)
    if not found:
        st.info("No cleaned datasets yet. The Duplicates page writes them (Clean up tab).", icon=":material/info:")
        return None
    rows, usable = [], []
    for folder in found:
        try:
            record = cleaning_record(folder)
        except CoreError as exc:  # one bad record is a row with its reason; the others still open
            rows.append({"name": folder.name, "from": f"cannot be opened: {ws.redact(str(exc))}"})
            continue
        usable.append(folder)
        counts = record.get("counts", {})
        rows.append({"name": folder.name, "from": _source_name(folder, record), "policies": ", ".join(record.get(
            "policies", [])), **{k: counts.get(k, 0) for k in ("kept", "removed", "relabelled", "moved")}})  # fmt: skip
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if not usable:
        return None
    chosen = st.selectbox("Cleaned dataset", usable, format_func=lambda p: p.name, key="cleaned_choice")
    if st.button("Open cleaned dataset", key="open_cleaned", type="primary"):
        return open_cleaned(chosen, ws)
    return None


def _source_name(folder: Path, record: dict) -> str:
    """Where a cleaned copy came from, in words: never a server path, never what an uploaded record claims."""
    ws = workspace()
    if came_from_zip(folder, ws):
        return "a ZIP upload (images inside it)"
    source = str(record.get("source", ""))
    paths = spec_paths(source)
    if not paths:  # a built-in sample
        return source or "unknown"
    return ws.relative_name(ws.confine(paths[0])) if ws.allows(paths[0]) else "a folder outside the allowed ones"


def _meta_keys_in(folder: Path) -> list[str]:
    ws = workspace()
    meta = find_metadata_folder(folder, ws)
    return [k.key for k in metadata_keys(meta, reach=ws.allowed_roots)] if meta else []


def _roots() -> str:
    """Where a typed path may point: paths relative to the workspace, or inside the operator's data folders."""
    names = list(workspace().root_names())
    where = ""
    if names:
        shared = ", ".join(f"`{n}`" for n in names)
        where = f", or inside the shared data folder{'s' if len(names) > 1 else ''} {shared} (e.g. `{names[0]}/...`)"
    return f"Type a path inside the workspace (e.g. `datasets/cats`){where}."
