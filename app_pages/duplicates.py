"""Duplicates: exact and near copies, label conflicts, train/val/test leaks, labels that are probably wrong, a cleaned
copy, and data quality.

The current dataset is fingerprinted once per hash method (cached on disk and in the session); the threshold
slider only regroups the fingerprints, so moving it is instant.
"""

import streamlit as st

from core.common.errors import CoreError
from core.dedup.groups import DEFAULT_THRESHOLDS, known_methods
from ui.common import show_error
from ui.duplicates import cleanup, groups, labels, leakage, quality, session
from ui.state import current_ref, dataset_title, scan
from ui.text import plain

METHOD_HELP = ("Perceptual hash. phash (default) is robust to resizing, re-encoding and brightness; dhash is "
               "close behind; whash and average_hash are weaker on smooth pictures (pixel checks catch the rest).")  # fmt: skip
THRESHOLD_HELP = ("Largest number of differing hash bits (of 64) for two images to count as near copies. Lower "
                  "finds fewer, surer copies; the Borderline tab shows what one bit more or less changes.")  # fmt: skip


def _method_changed() -> None:
    st.session_state["dup_threshold"] = DEFAULT_THRESHOLDS[st.session_state["dup_method"]]


st.title("Duplicates")
ref = current_ref()
if ref is None:
    st.stop()
cleanup.cleaned_banner(ref)

session.remember("dup_method", "phash")
session.remember("dup_threshold", DEFAULT_THRESHOLDS[st.session_state["dup_method"]])
head = st.columns([3, 1.2, 2.4, 1.1], vertical_alignment="bottom")
head[0].subheader(plain(dataset_title(ref.spec)))
head[0].caption("Change the dataset on the Datasets page.")
method = head[1].selectbox("Hash", known_methods(), key="dup_method", on_change=_method_changed, help=METHOD_HELP)
threshold = head[2].slider("Threshold (bits)", 0, 16, key="dup_threshold", help=THRESHOLD_HELP)
again = head[3].button("Rescan", key="dup_again", icon=":material/refresh:",
                       help="Look for new, changed or removed files (unchanged ones come from the cache)")  # fmt: skip

try:
    scanned = scan(ref, force=again)
    if scanned.manifest.empty:
        st.info("This dataset holds no readable images, so there is nothing to compare. Choose another dataset on "
                "the Datasets page.", icon=":material/info:")  # fmt: skip
        if not scanned.unreadable.empty:
            st.dataframe(scanned.unreadable, hide_index=True, width="stretch")
        st.stop()
    base = None if again else session.stored(ref, method)
    if base is None:
        n = len(scanned.manifest)
        if n > session.AUTO_LIMIT and not again and not st.button("Find duplicates", type="primary", key="dup_run"):
            st.info(f"{n:,} images: the first search opens every image once (with a progress bar); later "
                    "searches, other pages and threshold changes use the cache.", icon=":material/schedule:")  # fmt: skip
            st.stop()
        base = session.search(ref, scanned, method)
    result = session.at_threshold(base, threshold)
except CoreError as exc:
    show_error(exc)
    st.stop()

groups.summary(result)
# Stateful tabs: only the open one runs, so the thumbnails of hidden tabs cost nothing.
TABS = {"Groups": groups.groups, "Borderline": groups.borderline, "Leakage": leakage.leakage,
        "Label issues": labels.label_issues, "Clean up": cleanup.clean_up, "Quality": quality.quality}  # fmt: skip
for tab, draw in zip(st.tabs(list(TABS), key="dup_tab", on_change="rerun"), TABS.values(), strict=True):
    if tab.open:
        with tab:
            draw(result)
