"""Datasets: choose a dataset, then see its balance, samples, properties, broken files and a 2-D map."""

import streamlit as st

from ui.datasets import views
from ui.datasets.picker import pick_dataset
from ui.state import choose_dataset, current_ref, dataset_title, scan
from ui.text import plain

st.title("Datasets")

with st.expander("Choose a dataset", expanded=False, icon=":material/folder_open:"):
    opened = pick_dataset()
    if opened is not None:
        choose_dataset(opened)

ref = current_ref()
if ref is None:
    st.stop()

head, action = st.columns([4, 1])
head.subheader(plain(dataset_title(ref.spec)))
rescan = action.button("Rescan", icon=":material/refresh:", help="Look for new, changed or removed files")
result = scan(ref, force=rescan)

if result.manifest.empty and result.unreadable.empty:
    st.info("This dataset holds no images yet. Put images in one folder per class (cat/1.jpg, dog/2.jpg...), "
            "or choose another source above.", icon=":material/info:")  # fmt: skip
    st.stop()

views.summary(result)
# Stateful tabs: only the open one runs, so thumbnails and charts of hidden tabs cost nothing.
VIEWS = {"Class balance": views.balance, "Samples": views.samples, "Sizes and types": views.properties,
         "Unreadable files": views.unreadable, "2-D map": views.projection}  # fmt: skip
for tab, draw in zip(st.tabs(list(VIEWS), key="dataset_tab", on_change="rerun"), VIEWS.values(), strict=True):
    if tab.open:
        with tab:
            draw(result)
