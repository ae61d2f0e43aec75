"""Search: try many training settings at once (random draws or every combination, on the chosen dataset), each
trial an ordinary run; follow the trials, stop and resume a search, open the best trial."""

import streamlit as st

from core.common.errors import CoreError
from ui import search as view
from ui.common import show_error
from ui.state import current_ref, dataset_title, run_store, searches
from ui.text import plain

st.title("Search settings")
ref = current_ref()
if ref is None:
    st.stop()
store = run_store()
known = store.list_runs(kind="search")
with st.expander(f"New search on {plain(dataset_title(ref.spec))}", expanded=not known, icon=":material/add:"):
    spec = view.new_search(ref.spec)
    if spec is not None:
        try:
            started = searches().start(spec)
            view.show_next(started)
            st.rerun()
        except CoreError as exc:
            show_error(exc)

chosen = view.pick(store)
if chosen is None:
    st.info("No search yet. Set what to vary above and start one: every trial is an ordinary run, queued beside "
            "the others so the cores are never oversubscribed.", icon=":material/info:")  # fmt: skip
    st.stop()


@st.fragment(run_every=2.0 if view.active(chosen) else None)
def progress() -> None:
    search = view.fresh(chosen.run_id)
    view.show_search(store, search)
    if view.active(chosen) and not view.active(search):
        st.rerun()  # it ended: one full rerun updates the list and stops the polling


progress()
