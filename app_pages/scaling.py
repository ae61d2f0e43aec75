"""Scaling: start a sweep (data preparation, training threads, distributed ranks) and read honest tables of
workers against time, built from the runs it stored."""

import streamlit as st

from core.scaling.points import stored_tables
from core.store.records import group_words
from ui import scaling as views
from ui.state import current_ref, jobs, run_store

st.title("Scaling")
ref = current_ref()
if ref is None:
    st.stop()
store, registry = run_store(), jobs()
st.markdown(views.intro(ref.spec))

with st.expander("Start a sweep", expanded=not store.list_runs(kind="sweep"), icon=":material/speed:"):
    views.sweep_form(ref.spec, registry, store)


@st.fragment(run_every=2.0 if registry.active() else None)
def running() -> None:
    busy = views.sweeps_running(registry, store)
    if st.session_state.get("sweep_was_running") and not busy:
        st.session_state["sweep_was_running"] = False
        st.rerun()  # the sweep ended: redraw the tables with its points
    st.session_state["sweep_was_running"] = busy


running()

include = st.toggle("Include points measured beside other work or resumed", key="scaling_all",
                    help="Left out by default: their times measure a busy machine, not the method.")  # fmt: skip
tables = stored_tables(store, include_flagged=include)
if not tables:
    st.info("No sweep has finished yet. Start one above: data preparation with 1 and 2 processes takes a minute "
            "on the built-in digits.", icon=":material/info:")  # fmt: skip
    st.stop()
groups = list(dict.fromkeys(t.group for t in reversed(tables)))
group = st.selectbox("Sweep", groups, format_func=lambda g: group_words(g).capitalize(), key="scaling_group")
for table in [t for t in tables if t.group == group]:
    views.table_view(table, store)
