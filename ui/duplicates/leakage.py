"""The Leakage tab, and ``leakage_notice`` for every page that shows a score."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.common.errors import CoreError
from core.datasets.scan import ScanResult
from core.datasets.sources import DatasetRef
from core.dedup.fingerprints import fingerprint_cache
from core.dedup.groups import SPLIT_ORDER, DedupResult, LeakageReport, cached_leakage_report
from ui.duplicates.cards import pager, pair_cards
from ui.duplicates.groups import PAIRS_PER_PAGE
from ui.duplicates.session import CURRENT, RESULTS
from ui.state import SCANS, workspace


def leak_sentence(counts: dict[str, int]) -> str:
    """ "7 test images have a copy in train: scores on the test split are optimistic." ("" when nothing leaks)."""
    parts, later = [], []
    for key, n in counts.items():
        if n:
            a, b = key.split("-")
            parts.append(f"{n:,} {b} image{'s have' if n != 1 else ' has'} a copy in {a}")
            later += [b] if b not in later else []
    if not parts:
        return ""
    splits = " and ".join(later) + (" splits" if len(later) > 1 else " split")
    return f"{', '.join(parts)}: scores on the {splits} are optimistic."


def leakage(result: DedupResult) -> None:
    present = set(result.hashes.table["split"])
    if len(present & set(SPLIT_ORDER)) < 2:
        st.info("This dataset has no train/val/test folders, so nothing leaks between splits yet. Training splits "
                "it at random: copies may then land on both sides, so keep one per group first (Clean up tab).",
                icon=":material/info:")  # fmt: skip
        return
    sizes = result.hashes.table["split"].value_counts()
    table = result.leakage.table
    shown = pd.DataFrame({
        "splits": table["split_a"] + " → " + table["split_b"],
        "images with a copy": table["n_images"],
        "of": table["split_b"].map(lambda s: int(sizes.get(s, 0))),
        "pairs": table["n_pairs"],
    })  # fmt: skip
    st.dataframe(shown, hide_index=True, width="content",
                 column_config={"images with a copy": st.column_config.NumberColumn(
                     help="Images of the later split with a copy in the earlier one")})  # fmt: skip
    sentence = leak_sentence(result.leakage.counts)
    if not sentence:
        st.success("No val or test image has a copy in an earlier split at this threshold.", icon=":material/check:")
        return
    st.warning(sentence + " The Clean up tab's move-leaks policy fixes it.", icon=":material/warning:")
    pairs = result.leakage.pairs
    pair_of = pairs["split_a"] + "-" + pairs["split_b"]
    options = [
        f"{a}-{b}" for a, b in zip(table["split_a"], table["split_b"], strict=True) if (pair_of == f"{a}-{b}").any()
    ]
    chosen = st.selectbox("Pairs of", options, key="dup_leak_pair", format_func=lambda o: o.replace("-", " → "),
                          width=260)  # fmt: skip
    rows = pairs[pair_of == chosen]
    page = pager(len(rows), PAIRS_PER_PAGE, "dup_leak_page", "pairs")
    rows = rows.iloc[page * PAIRS_PER_PAGE : (page + 1) * PAIRS_PER_PAGE]
    texts = [f"**{r.distance} bits**" + ("  \n:red-badge[labels differ]" if r.label_a != r.label_b else "")
             for r in rows.itertuples()]  # fmt: skip
    pair_cards(result.ref.root, rows, texts)
    with st.expander(f"All {len(pairs):,} leaking pairs"):
        st.dataframe(pairs, hide_index=True, width="stretch")


def _known_leakage(ref: DatasetRef) -> LeakageReport | None:
    """The leak report of ``ref`` if this tab found its duplicates, or if its fingerprints are cached on disk."""
    current = st.session_state.get(CURRENT)
    if current is not None and current.ref.spec == ref.spec:
        return current.leakage
    for (spec, _), result in reversed(st.session_state.get(RESULTS, {}).items()):
        if spec == ref.spec:
            return result.leakage
    ws = workspace()
    try:  # not fingerprinted yet: nothing to say, and asked again next time (another tab may hash it meanwhile)
        stamp = fingerprint_cache(ref, ws.cache).stat().st_mtime_ns
    except OSError:
        return None
    try:
        return _leak_report(str(ws.root), ref.spec, stamp, ref, st.session_state.get(SCANS, {}).get(ref.spec))
    except CoreError:
        return None


@st.cache_data(show_spinner="Checking for copies across splits...", max_entries=32)
def _leak_report(root: str, spec: str, stamp: int, _ref: DatasetRef, _scan: ScanResult | None) -> LeakageReport | None:
    """Kept for every tab of this server until the fingerprints change (``stamp``: their cache file's time, so a new
    search of the dataset, on any tab, is reported), per workspace (``root``)."""
    return cached_leakage_report(_ref, workspace().cache, scan=_scan)


def leakage_notice(ref: DatasetRef | None) -> None:
    """For any page that shows a score: a warning when val/test images have copies in an earlier split.

    Silent when the dataset was never fingerprinted (nothing is hashed here) or nothing leaks.
    """
    report = _known_leakage(ref) if ref is not None else None
    sentence = leak_sentence(report.counts) if report is not None else ""
    if sentence:
        st.warning(sentence, icon=":material/content_copy:")
        st.page_link("app_pages/duplicates.py", label="See the copies and fix them on the Duplicates page",
                     icon=":material/content_copy:")  # fmt: skip
