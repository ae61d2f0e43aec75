"""The Export panel of the Runs page: the chosen run as ONNX or TorchScript (``core.export``), proven to answer like
the studio, downloaded as one ZIP."""

from __future__ import annotations

import shutil
from pathlib import Path

import streamlit as st

from core.common.errors import CoreError
from core.common.percent import percent
from core.export.folder import NO_DEMO
from core.store.records import RunRecord
from core.store.runs import RunStore
from core.train import run_folder
from ui.common import default_run, show_error
from ui.text import plain

FORMAT_WORDS = {
    "onnx": "ONNX: any language, and the browser demo",
    "torchscript": "TorchScript: for PyTorch programs",
}
EXPORTED = "export_done"  # session key: {run_id: (format, demo, zip path)}


def export_panel(run: RunRecord, store: RunStore, ws) -> None:
    """Choices, the button, and the download of the last export of ``run`` made in this session."""
    with st.expander("Take the model with you (export)", icon=":material/ios_share:"):
        if run.status != "completed" or not run_folder.checkpoint_path(ws, run.run_id, "best").is_file():
            st.caption("Only a finished run with its best weights can be exported.")
            return
        _better_run(run, store)
        st.caption("A folder that works without the studio: the model, its classes, exactly how photos are prepared "
                   "for it, 20 test photos with the studio's own answers (the proof that it answers the same), a "
                   "model card, and a script that classifies without the studio.")  # fmt: skip
        fmt = st.segmented_control("Format", list(FORMAT_WORDS), default="onnx", format_func=FORMAT_WORDS.get,
                                   key="export_format") or "onnx"  # fmt: skip
        demo = st.checkbox("With the browser demo: a page that classifies photos and the webcam offline, no Python",
                           value=True, disabled=fmt != "onnx", key="export_demo") and fmt == "onnx"  # fmt: skip
        if st.button("Export", icon=":material/ios_share:", key="export_go", type="primary"):
            _export(run, store, ws, fmt, demo)
        _download(run)


def _better_run(run: RunRecord, store: RunStore) -> None:
    best = default_run(store, store.list_runs(kind="train", status="completed"))
    if best is not None and best.run_id != run.run_id and best.dataset == run.dataset:
        st.caption(f"Run {best.run_id} is the best on this data: tick it in the table to export it instead.")


def _export(run: RunRecord, store: RunStore, ws, fmt: str, demo: bool) -> None:
    from core.export.folder import export_run

    with st.spinner("Exporting and checking it against the studio's own answers..."):
        try:
            result = export_run(ws, store, run.run_id, fmt, demo=demo)
        except CoreError as exc:
            show_error(exc)
            return
        archive = Path(shutil.make_archive(str(result.folder), "zip", result.folder.parent, result.folder.name))
    st.session_state.setdefault(EXPORTED, {})[run.run_id] = (fmt, result.demo, str(archive), result.parity,
                                                            result.notes)  # fmt: skip


def _download(run: RunRecord) -> None:
    done = st.session_state.get(EXPORTED, {}).get(run.run_id)
    if done is None:
        return
    fmt, demo, archive, p, notes = done
    path = Path(archive)
    if not path.is_file():
        return
    st.success(f"Exported as {FORMAT_WORDS[fmt].split(':')[0]}. It answers like the studio: the same best guess on "
               f"{p['top1_equal']} of {p['images']} test photos, probabilities at most "
               f"{percent(p['max_top5_difference'], 2)} apart.", icon=":material/verified:")  # fmt: skip
    st.download_button("Download the export (ZIP)", data=path.read_bytes, file_name=path.name, on_click="ignore",
                       icon=":material/download:", key="export_download", type="primary")  # fmt: skip
    if any(n.startswith(NO_DEMO) for n in notes):  # the core's note names server folders: said here in general words
        st.warning("The browser demo was not included: its runtime (onnxruntime-web) is not installed on this "
                   "server. Whoever runs the studio installs it by running ./studio once with npm installed.",
                   icon=":material/warning:")  # fmt: skip
    for note in (n for n in notes if not n.startswith(NO_DEMO)):
        st.caption(plain(note[:1].upper() + note[1:] + "."))
    how = ("Unzip it and open index.html in a browser (tried in Chromium, the engine of Chrome and Edge): drop "
           "photos or use the webcam." if demo else
           "Unzip it; its README.md says how to call the model.")  # fmt: skip
    st.caption(plain(how))
