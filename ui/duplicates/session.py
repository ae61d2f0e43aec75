"""The duplicate search of the current dataset, kept in the session: fingerprinted once per hash method
(``search``); the threshold slider only regroups (``at_threshold``: no image is opened)."""

from __future__ import annotations

import streamlit as st

from core.datasets.scan import ScanResult
from core.datasets.sources import DatasetRef
from core.dedup.groups import DedupConfig, DedupResult, find_duplicates, group_duplicates
from ui.state import dataset_title, workspace
from ui.text import plain

RESULTS = "dedup_results"  # session key: {(spec, method): DedupResult at the method's default threshold}
VIEW = "dedup_view"  # session key: ((spec, method, threshold), DedupResult regrouped for the slider)
CURRENT = "dedup_current"  # session key: the DedupResult the page showed last (what leakage_notice reports)
MAX_RESULTS = 4  # fingerprint tables kept per tab (a 100k-image table is ~40 MB)
AUTO_LIMIT = 5_000  # datasets up to this size are searched on the first visit; larger ones wait for a click


def remember(key: str, default: object) -> None:
    """Keep a widget's value while its tab or page is not drawn (Streamlit drops the state of undrawn widgets).

    Call before the widget, and create the widget without ``value=``: its value comes from the session.
    """
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(f"_{key}", default)
    st.session_state[f"_{key}"] = st.session_state[key]


def stored(ref: DatasetRef, method: str) -> DedupResult | None:
    return st.session_state.get(RESULTS, {}).get((ref.spec, method))


def search(ref: DatasetRef, scan: ScanResult, method: str) -> DedupResult:
    """Fingerprint (cached on disk: only new or changed files are opened) and group, with a progress bar."""
    bar = st.progress(0.0, text=f"Fingerprinting {plain(dataset_title(ref.spec))} ({method})...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Fingerprinting images ({method}): {done:,} / {total:,}")

    result = find_duplicates(ref, workspace().cache, DedupConfig(method=method), scan=scan, progress=progress)
    bar.empty()
    results: dict = st.session_state.setdefault(RESULTS, {})
    results.pop((ref.spec, method), None)
    results[(ref.spec, method)] = result
    while len(results) > MAX_RESULTS:
        results.pop(next(iter(results)))
    st.session_state.pop(VIEW, None)
    return result


def at_threshold(base: DedupResult, threshold: int) -> DedupResult:
    """``base`` regrouped at ``threshold`` (core.dedup.groups.group_duplicates: no decoding), kept for the next rerun."""
    result = base
    if threshold != base.config.threshold:
        key = (base.ref.spec, base.config.method, threshold)
        view = st.session_state.get(VIEW)
        if view is None or view[0] != key:
            config = DedupConfig(method=base.config.method, threshold=threshold, workers=base.config.workers)
            view = (key, group_duplicates(base.hashes, base.scan, config))
            st.session_state[VIEW] = view
        result = view[1]
    st.session_state[CURRENT] = result
    return result
