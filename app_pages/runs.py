"""Runs: every stored run, live curves while runs train, comparison, and per-run actions."""

import streamlit as st

from core.common.errors import CoreError
from ui import runs as views
from ui.common import show_error
from ui.duplicates.leakage import leakage_notice
from ui.export import export_panel
from ui.state import jobs, run_store, set_url_run, url_run, workspace

st.title("Runs")
store, registry = run_store(), jobs()
runs = store.list_runs(kind="train")
if not runs:
    st.info("No runs yet. Start one on the Train page: the default settings train a model on the built-in "
            "digits in under a minute.", icon=":material/info:")  # fmt: skip
    st.page_link("app_pages/train.py", label="Train a model", icon=":material/model_training:")
    st.stop()


# The table, the curves and the chosen run's result all live in one fragment, polled every 2 s only while
# something trains: the table's accuracy and time move with the curves instead of going stale beside them.
@st.fragment(run_every=2.0 if views.any_active(runs) else None)
def live() -> None:
    fresh = store.list_runs(kind="train")
    table = views.runs_table(store, workspace(), fresh)
    st.caption("Tick runs to see and compare their curves (newest first).")
    event = st.dataframe(table, hide_index=True, width="stretch", key="runs_table", on_select="rerun",
                         selection_mode="multi-row", column_config=views.table_config())  # fmt: skip
    ticked = [int(table.iloc[i]["run_id"]) for i in (event.selection.rows if event else []) if i < len(table)]
    # Nothing ticked: the run the address names (a refresh, a shared link), else the newest, said in words.
    shown = url_run() if url_run() in set(table["run_id"]) else int(table.iloc[0]["run_id"])
    chosen_ids = ticked or [shown]
    if ticked:  # a choice the user made is kept in the address; the default is not (the newest stays the default)
        set_url_run(ticked[0] if len(ticked) == 1 else None)
    else:
        st.caption(f"Showing run {shown}; tick others in the table to compare.")
    views.active_jobs(registry, store)
    by_id = {r.run_id: r for r in fresh}
    views.curves(store, [by_id[i] for i in chosen_ids if i in by_id])
    chosen_run(chosen_ids)
    was_active = views.any_active([r for r in runs if r.run_id in by_id])
    if was_active and not views.any_active(fresh):
        st.rerun()  # everything finished: one full rerun stops the polling


def chosen_run(chosen_ids: list[int]) -> None:
    if len(chosen_ids) > 1:
        st.caption(f"Comparing {len(chosen_ids)} runs. Tick a single run for its result, settings and actions.")
        return
    run = store.get_run(chosen_ids[0])
    views.run_header(store, workspace(), run)
    leakage_notice(views.dataset_ref(run))  # its scores are optimistic when val/test images leak from train
    try:
        views.run_actions(run, store, registry, workspace())
    except CoreError as exc:
        show_error(exc)
    export_panel(run, store, workspace())
    with st.expander("All settings of this run"):
        views.config_view(run)


live()
