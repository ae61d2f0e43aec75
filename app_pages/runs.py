"""Runs: every stored run, live curves while runs train, comparison, and per-run actions."""

import streamlit as st

from core.common.errors import CoreError
from ui import runs as views
from ui.common import show_error
from ui.duplicates.leakage import leakage_notice
from ui.state import jobs, run_store, workspace

st.title("Runs")
store, registry = run_store(), jobs()
runs = store.list_runs(kind="train")
if not runs:
    st.info("No runs yet. Start one on the Train page, or with `python -m core train sample:digits`.",
            icon=":material/info:")  # fmt: skip
    st.page_link("app_pages/train.py", label="Train a model", icon=":material/model_training:")
    st.stop()

table = views.runs_table(store, runs)
st.caption("Select runs to see and compare their curves (newest first).")
event = st.dataframe(table, hide_index=True, width="stretch", key="runs_table", on_select="rerun",
                     selection_mode="multi-row",
                     column_config={"best_val_acc": st.column_config.NumberColumn("best val acc", format="percent"),
                                    "wall_s": st.column_config.NumberColumn("time (s)", format="%.0f")})  # fmt: skip
rows = event.selection.rows if event and event.selection.rows else [0]
chosen_ids = [int(table.iloc[i]["run_id"]) for i in rows]


# Polls every 2 s only while something trains; the timer is set on each full run of this script.
@st.fragment(run_every=2.0 if views.any_active(runs) else None)
def live() -> None:
    fresh = {r.run_id: r for r in store.list_runs(kind="train")}
    views.active_jobs(registry, store)
    chosen = [fresh[i] for i in chosen_ids if i in fresh]
    views.curves(store, chosen)
    was_active = views.any_active([r for r in runs if r.run_id in fresh])
    if was_active and not views.any_active(list(fresh.values())):
        st.rerun()  # everything finished: one full rerun updates the table and stops the polling


live()

if len(chosen_ids) == 1:
    run = store.get_run(chosen_ids[0])
    st.subheader(f"{run.name} · {run.status}")
    if run.error:
        st.warning(run.error, icon=":material/warning:")
    leakage_notice(views.dataset_ref(run))  # its scores are optimistic when val/test images leak from train
    try:
        views.run_actions(run, store, registry, workspace())
    except CoreError as exc:
        show_error(exc)
    with st.expander("Configuration"):
        views.config_view(run)
elif len(chosen_ids) > 1:
    st.caption(f"Comparing {len(chosen_ids)} runs. Select a single run for its configuration and actions.")
