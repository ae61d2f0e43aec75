"""The classes, worst first (a table the user can sort by any column), and the pairs of classes most often
confused with each other."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.common.words import CLASS_COLUMN_WORDS, class_column, split_word
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
    c = {k: class_column(k, ev.split) for k in CLASS_COLUMN_WORDS}  # the report's titles too
    return pd.DataFrame({
        c["label"]: rows["label"], c["support"]: rows["support"], c["correct"]: rows["correct"],
        c["accuracy"]: 100 * rows["accuracy"], c["recall"]: rows["recall"], c["precision"]: rows["precision"],
        c["f1"]: rows["f1"], c["confused_with"]: mistaken, "Note": note,
    })  # fmt: skip


def classes(ev: Evaluation) -> None:
    st.subheader("Class by class, worst first")
    table = table_of_classes(ev)
    split = split_word(ev.split)
    st.dataframe(table, hide_index=True, width="stretch", key="evaluate_classes", column_config={
        class_column("accuracy"): st.column_config.ProgressColumn(
            format="%.0f%%", min_value=0, max_value=100,
            help=f"Share of the class's {split} images the model labels right"),
        class_column("recall"): st.column_config.NumberColumn(
            format="%.2f", help="Recall: of the images of this class, the share the model calls by this class"),
        class_column("precision"): st.column_config.NumberColumn(
            format="%.2f", help="Precision: of the images the model calls by this class, the share that really are"),
        class_column("f1"): st.column_config.NumberColumn(format="%.2f", help="F1, the balance of the two: 1 is "
                                                          "perfect"),
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
