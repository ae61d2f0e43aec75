"""The Label issues tab: images whose label is probably wrong (``core.labels``), and a person's decisions on them
(keep the label, take the suggestion, drop the image), which the Clean up tab's ``relabel`` and ``drop-suspects``
turn into a cleaned copy."""

from __future__ import annotations

import streamlit as st

from core.datasets.sources import DatasetRef

DECISIONS = "label_decisions"  # session key: {dataset spec: {path: new label, or None to drop}}


def label_decisions(ref: DatasetRef) -> dict[str, str | None]:
    """The decisions made on this dataset's suspects in this session (path -> label to take, or None: drop)."""
    return dict(st.session_state.get(DECISIONS, {}).get(ref.spec, {}))
