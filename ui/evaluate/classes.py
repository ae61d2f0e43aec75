"""The classes, worst first (a table the user can sort by any column), and the pairs of classes most often
confused with each other."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.common.words import split_word
from core.evaluate.evaluation import Evaluation
from core.evaluate.metrics import confused_pairs, worst_classes
from core.evaluate.words import FEW_IMAGES, pct
from ui.text import plain


def table_of_classes(ev: Evaluation) -> pd.DataFrame:
    """The per-class table in words, worst F1 first."""
    rows = worst_classes(ev.metrics)
    split = split_word(ev.split)
    note = [("no " + split + " images" if n == 0 else f"only {n}: rough" if n < FEW_IMAGES else "")
            for n in rows["support"]]  # fmt: skip
    mistaken = [
        f"{c} ({int(k)})" if c else "" for c, k in zip(rows["confused_with"], rows["confused_count"], strict=True)
    ]
    return pd.DataFrame({
        "Class": rows["label"], f"{split.capitalize()} images": rows["support"], "Right": rows["correct"],
        "Share right": 100 * rows["accuracy"], "Found (recall)": rows["recall"],
        "Right when named (precision)": rows["precision"], "Balance (F1)": rows["f1"],
        "Most often called": mistaken, "Note": note,
    })  # fmt: skip


def classes(ev: Evaluation) -> None:
    st.subheader("Class by class, worst first")
    table = table_of_classes(ev)
    split = split_word(ev.split)
    st.dataframe(table, hide_index=True, width="stretch", key="evaluate_classes", column_config={
        "Share right": st.column_config.ProgressColumn(
            format="%.0f%%", min_value=0, max_value=100,
            help=f"Share of the class's {split} images the model labels right"),
        "Found (recall)": st.column_config.NumberColumn(
            format="%.2f", help="Of the images of this class, the share the model calls by this class"),
        "Right when named (precision)": st.column_config.NumberColumn(
            format="%.2f", help="Of the images the model calls by this class, the share that really are"),
        "Balance (F1)": st.column_config.NumberColumn(format="%.2f", help="Balance of the two: 1 is perfect"),
        "Note": st.column_config.TextColumn(help=f"Classes with fewer than {FEW_IMAGES} {split} images: each "
                                            "image moves their scores a lot"),
    })  # fmt: skip
    st.caption("Click a column's name to sort by it.")
    pairs = confused_pairs(ev.metrics, limit=8)
    st.subheader("The classes it mixes up most")
    if pairs.empty:
        st.success(f"No mistakes on the {split} images.", icon=":material/check_circle:")
        return
    lines = [f"- **{plain(p.true)}** taken for **{plain(p.predicted)}**: {int(p.count)} image{'s' if p.count != 1 else ''} "
             f"({pct(p.share)} of class {plain(p.true)})" for p in pairs.itertuples()]  # fmt: skip
    st.markdown("\n".join(lines))
