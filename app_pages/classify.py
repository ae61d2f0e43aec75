"""Classify: drop one image or many, or take a webcam photo; top-5 classes with probabilities, the time taken,
and a heat map of where the model looked. A batch gets a gallery and a CSV of predictions; bad files are named,
never fatal."""

import streamlit as st

from ui import classify as views
from ui.state import run_store, workspace
from ui.text import plain_list

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
uploads = views.source_picker()
views.forget_others(uploads)
if not uploads:
    st.caption(f"This model knows {len(predictor.classes):,} classes: "
               f"{plain_list(predictor.classes[:12])}{', ...' if len(predictor.classes) > 12 else ''}.")  # fmt: skip
    st.stop()

if len(uploads) == 1:
    views.single(predictor, model, uploads[0])
else:
    preds = views.batch(predictor, model, uploads)
    one = views.pick_one(uploads, preds)
    if one is not None:
        st.divider()
        views.single(predictor, model, one)
