"""Compare: every training run in one table (settings and scores, in words), filtered and sorted, a chart of the
settings against the result, the curves of the runs ticked, and the table as CSV."""

import streamlit as st

from ui import compare, runs
from ui.common import default_run
from ui.state import run_store, workspace

st.title("Compare runs")
store = run_store()
every = store.list_runs(kind="train")
if not every:
    st.info("No runs to compare yet. Train a model, or let a search try several settings for you.",
            icon=":material/info:")  # fmt: skip
    st.page_link("app_pages/train.py", label="Train a model", icon=":material/model_training:")
    st.page_link("app_pages/search.py", label="Search settings", icon=":material/travel_explore:")
    st.stop()


@st.fragment(run_every=3.0 if runs.any_active(every) else None)
def comparison() -> None:
    fresh = store.list_runs(kind="train")
    frame = compare.filters(compare.table(store, fresh), "compare")
    st.caption(f"{len(frame):,} of {len(fresh):,} runs. Tick runs to overlay their "
               "curves below. Runs of a search, and runs started from another run's weights, say so under "
               "\"Part of\".")  # fmt: skip
    best = default_run(store, [r for r in fresh if r.status == "completed"])  # marked, as on Evaluate and Classify
    ticked = compare.show(frame, "compare_table", best=best.run_id if best is not None else None)
    unchecked = compare.unchecked_datasets(workspace(), fresh)
    if unchecked and st.button("Look for test images copied from training images", key="compare_leaks",
                               icon=":material/content_copy:", help=compare.LEAK_HELP):  # fmt: skip
        with st.spinner("Fingerprinting the images of each dataset once..."):
            compare.check_leaks(store, fresh)
        st.rerun()
    compare.download(frame, "runs.csv", "compare_csv")
    st.subheader("Settings against results")
    compare.settings_chart(frame, "compare_chart")
    if ticked:
        st.subheader("Curves of the ticked runs")
        chosen = [r for r in fresh if r.run_id in set(ticked)]
        runs.curves(store, chosen)


comparison()
