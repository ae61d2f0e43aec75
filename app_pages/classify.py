"""Classify: drop one image or many; top-5 classes with probabilities, the time taken, and a CAM heat map of
where the model looked. A batch gets a gallery and a CSV of predictions; bad files are named, never fatal."""

import streamlit as st

from ui import classify as views
from ui.state import run_store, workspace

st.title("Classify")
ws, store = workspace(), run_store()
choices = views.model_choices(ws, store)
if not choices:
    views.no_model()
    st.stop()

model = views.pick_model(choices)
predictor = views.load(model, ws, store)
if predictor is None:
    st.stop()
files = st.file_uploader("Drop one image or many", accept_multiple_files=True, key="classify_files",
                         max_upload_size=views.MAX_UPLOAD_MB,
                         help="JPEG, PNG, WebP, BMP, GIF or TIFF. Each file's content is checked, whatever its "
                         "name says.")  # fmt: skip
views.forget_others(files)
if not files:
    st.caption(f"{predictor.source} knows {len(predictor.classes):,} classes: "
               f"{', '.join(predictor.classes[:12])}{', ...' if len(predictor.classes) > 12 else ''}.")  # fmt: skip
    st.stop()

if len(files) == 1:
    views.single(predictor, model, files[0])
else:
    preds = views.batch(predictor, model, files)
    one = views.pick_one(files, preds)
    if one is not None:
        st.divider()
        views.single(predictor, model, one)
