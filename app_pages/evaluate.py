"""Evaluate: how good a finished run is, where it fails and why, in words and pictures, from the predictions the
run stored (nothing is retrained or re-predicted); the leakage-honest score; a report to hand over."""

import streamlit as st

from ui.evaluate import classes, confusion, loading, mistakes, scores
from ui.state import run_store, workspace

st.title("Evaluate")
ws, store = workspace(), run_store()
picked = loading.pick_run(store)
if picked is None:
    st.stop()
run, split = picked
ev = loading.load(ws, store, run, split)
if ev is None:
    st.stop()

mistakes.report_button(ws, store, ev)
scores.cards(ev)
scores.leakage(ev, run)
confusion.matrix(ev)
classes.classes(ev)
mistakes.worst(mistakes.explained(ws, store, ev), ev, ws)  # the only part that runs the model: a few images
mistakes.calibration(ev)
