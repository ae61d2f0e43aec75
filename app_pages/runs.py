"""Runs: every stored run. Live curves, comparison and actions come with the training issue."""

import pandas as pd
import streamlit as st

from ui.state import run_store

st.title("Runs")
store = run_store()
rows = [store.summary(run) for run in store.list_runs()]
if not rows:
    st.info("No runs yet. Runs you start on the Train page, or with `python -m core train`, appear here.",
            icon=":material/info:")  # fmt: skip
else:
    table = pd.DataFrame(rows)[["run_id", "name", "status", "arch", "dataset", "best_val_acc", "wall_s"]]
    st.dataframe(table, hide_index=True, width="stretch")
st.caption("Coming next (issue 5): live loss and accuracy curves while a run trains, overlays to compare "
           "runs, and resume, rerun, delete and download actions.")  # fmt: skip
