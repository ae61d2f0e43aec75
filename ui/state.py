"""What every page shares: the workspace, the run store, the chosen dataset, and widget keys.

The workspace comes from ``streamlit run app.py -- --workspace DIR``, else ``$STUDIO_WORKSPACE``, else
``./workspace``. The chosen dataset lives in ``st.session_state`` (per browser tab); the default is the
built-in sample so the first screen shows real data.
"""

from __future__ import annotations

import argparse
import sys

import streamlit as st

from core.common.errors import CoreError
from core.common.workspace import Workspace
from core.datasets.scan import ScanResult, scan_dataset
from core.datasets.sources import DatasetRef, resolve_dataset
from core.store.runs import RunStore
from core.train.jobs import JobRegistry

DEFAULT_DATASET = "sample:digits"
DATASET = "dataset"  # session key: the chosen DatasetRef (resolved once, not on every rerun)
SCANS = "scans"  # session key: {spec: ScanResult}


def _workspace_arg() -> str | None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workspace")
    known, _ = parser.parse_known_args(sys.argv[1:])
    return known.workspace


@st.cache_resource(show_spinner=False)
def workspace() -> Workspace:
    return Workspace.open(_workspace_arg())


@st.cache_resource(show_spinner=False)
def run_store() -> RunStore:
    # One store object for all sessions: it opens one SQLite connection per thread itself.
    return RunStore(workspace().runs_db)


@st.cache_resource(show_spinner=False)
def jobs() -> JobRegistry:
    # One registry per server process: training threads outlive reruns, page changes and browser tabs.
    return JobRegistry(run_store())


def current_name() -> str:
    ref = st.session_state.get(DATASET)
    return ref.display if ref is not None else DEFAULT_DATASET


def choose_dataset(ref: DatasetRef) -> None:
    st.session_state[DATASET] = ref


def current_ref() -> DatasetRef | None:
    """The chosen dataset (the sample until the user picks one), or None with an error shown.

    Kept resolved in the session: resolving a JSON-metadata dataset walks its image folder to match file
    names, which must not happen on every click.
    """
    if DATASET not in st.session_state:
        try:
            st.session_state[DATASET] = resolve_dataset(DEFAULT_DATASET, workspace())
        except CoreError as exc:
            st.error(f"The built-in sample cannot be opened: {exc}")
            return None
    return st.session_state[DATASET]


def scan(ref: DatasetRef, *, force: bool = False) -> ScanResult:
    """Scan ``ref`` once per tab (the on-disk cache makes a new tab's scan cheap), with a progress bar."""
    scans: dict[str, ScanResult] = st.session_state.setdefault(SCANS, {})
    if force or ref.spec not in scans:
        bar = st.progress(0.0, text=f"Scanning {ref.display}...")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"Opening images: {done:,} / {total:,}")

        scans[ref.spec] = scan_dataset(ref, workspace().cache, progress=progress)
        bar.empty()
    return scans[ref.spec]
