"""Datasets: choose a dataset, then see its balance, samples, properties, broken files and a 2-D map."""

import streamlit as st

from ui import dataset_views as views
from ui.dataset_picker import pick_dataset
from ui.state import choose_dataset, current_ref, scan

st.title("Datasets")

with st.expander("Choose a dataset", expanded=False, icon=":material/folder_open:"):
    opened = pick_dataset()
    if opened is not None:
        choose_dataset(opened)

ref = current_ref()
if ref is None:
    st.stop()

head, action = st.columns([4, 1])
head.subheader(ref.display)
rescan = action.button("Rescan", icon=":material/refresh:", help="Look for new, changed or removed files")
result = scan(ref, force=rescan)

if result.manifest.empty and result.unreadable.empty:
    st.info("This dataset holds no images yet. Put images in one folder per class (cat/1.jpg, dog/2.jpg...), "
            "or choose another source above.", icon=":material/info:")  # fmt: skip
    st.stop()

views.summary(result)
tabs = st.tabs(["Class balance", "Samples", "Sizes and types", f"Unreadable ({len(result.unreadable)})", "2-D map"])
with tabs[0]:
    views.balance(result)
with tabs[1]:
    views.samples(result)
with tabs[2]:
    views.properties(result)
with tabs[3]:
    views.unreadable(result)
with tabs[4]:
    views.projection(result)
