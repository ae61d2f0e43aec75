"""What every page shares: the workspace, the run store, the chosen dataset and run, and widget keys.

The workspace comes from ``streamlit run app.py -- --workspace DIR``, else ``$STUDIO_WORKSPACE``, else
``./workspace``. The chosen dataset lives in ``st.session_state`` (per browser tab) and in the page's URL
(``?dataset=...``, paths relative to the workspace), so a refresh, a bookmark or a shared link opens the same
dataset; the default is the built-in sample so the first screen shows real data. The chosen run is kept in
the URL the same way (``?run=N``).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import streamlit as st

from core.common.errors import CoreError
from core.common.untrusted import whole_number
from core.common.workspace import Workspace
from core.datasets.scan import ScanResult, scan_dataset
from core.datasets.sources import DatasetRef, dataset_title, resolve_dataset
from core.store.runs import RunStore
from core.train.jobs import JobRegistry
from ui.text import plain

if TYPE_CHECKING:
    from core.experiments.search import Searches

DEFAULT_DATASET = "sample:digits"
DATASET = "dataset"  # session key and URL parameter: the chosen DatasetRef (resolved once, not on every rerun)
RUN = "run"  # URL parameter: the run a page shows
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
    from core.train.run_folder import remove_stale_partials

    remove_stale_partials(workspace(), run_store())  # what runs killed mid-write left behind, before any job starts
    return JobRegistry(run_store())


@st.cache_resource(show_spinner=False)
def searches() -> Searches:
    # One per server process, like the registry: a search's driver thread outlives reruns, pages and tabs.
    from core.experiments.search import Searches

    return Searches(jobs(), workspace())


def current_name() -> str:
    """The chosen dataset in words, for the sidebar (resolving it from the page's address on a first visit),
    and the address kept naming it, whichever page the user moved to."""
    ref = current_ref()
    if ref is None:
        return dataset_title(DEFAULT_DATASET)
    if ref.spec != DEFAULT_DATASET or DATASET in st.query_params:
        wanted = workspace().redact(ref.spec)
        if st.query_params.get(DATASET) != wanted:
            st.query_params[DATASET] = wanted
    return dataset_title(ref.spec)


def choose_dataset(ref: DatasetRef) -> None:
    """Make ``ref`` the current dataset of this tab and its URL, and redraw at once (the sidebar names it)."""
    if st.session_state.get(DATASET) == ref:  # a ZIP stays in its uploader: it is offered again on every rerun
        return
    st.session_state[DATASET] = ref
    st.query_params[DATASET] = workspace().redact(ref.spec)  # relative to the workspace: no server path shown
    st.rerun()


def current_ref() -> DatasetRef | None:
    """The chosen dataset: the session's, else the one the URL names, else the sample (None with an error
    shown when not even the sample opens).

    Kept resolved in the session: resolving a JSON-metadata dataset walks its image folder to match file
    names, which must not happen on every click.
    """
    if DATASET not in st.session_state:
        st.session_state[DATASET] = _from_url() or _sample()
    return st.session_state[DATASET]


def _from_url() -> DatasetRef | None:
    wanted = st.query_params.get(DATASET)
    if not wanted:
        return None
    try:  # confined like every path: a link cannot open a folder outside the allowed ones
        return resolve_dataset(wanted, workspace())
    except CoreError as exc:
        st.warning(f"The dataset named in this page's address cannot be opened ({plain(workspace().redact(str(exc)))}); "
                   "showing the built-in sample instead.", icon=":material/link_off:")  # fmt: skip
        return None


def _sample() -> DatasetRef | None:
    try:
        return resolve_dataset(DEFAULT_DATASET, workspace())
    except CoreError as exc:
        st.error(f"The built-in sample cannot be opened: {plain(exc)}")
        return None


def url_run() -> int | None:
    """The run named in the page's address (``?run=N``), if any (anything but ASCII digits is ignored)."""
    return whole_number(st.query_params.get(RUN))


def set_url_run(run_id: int | None) -> None:
    """Keep the shown run in the address, so a refresh or a shared link shows it again."""
    if run_id is None:
        st.query_params.pop(RUN, None)
    elif st.query_params.get(RUN) != str(run_id):
        st.query_params[RUN] = str(run_id)


def scan(ref: DatasetRef, *, force: bool = False) -> ScanResult:
    """Scan ``ref`` once per tab (the on-disk cache makes a new tab's scan cheap), with a progress bar."""
    scans: dict[str, ScanResult] = st.session_state.setdefault(SCANS, {})
    if force or ref.spec not in scans:
        bar = st.progress(0.0, text=f"Scanning {plain(dataset_title(ref.spec))}...")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"Opening images: {done:,} / {total:,}")

        scans[ref.spec] = scan_dataset(ref, workspace().cache, progress=progress)
        bar.empty()
    return scans[ref.spec]
