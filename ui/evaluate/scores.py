"""The score cards (each with one sentence anyone can read, and a warning beside a score on too few images) and
the leakage-honest score: all test images, and only those with no copy among the training images."""

from __future__ import annotations

import streamlit as st

from core.common.words import metric_technical, metric_word, split_word
from core.evaluate import words as w
from core.evaluate.evaluation import Evaluation
from core.store.records import RunRecord
from ui.common import titled_metric
from ui.evaluate.loading import ask_for_leak_check
from ui.text import plain


def _card(column, label: str, value: str, sentence: str, help_text: str, warning: str = "") -> None:
    with column.container(border=True):
        titled_metric(st, label, value, help=help_text)
        st.caption(sentence)
        if warning:
            st.warning(warning, icon=":material/warning:")


def cards(ev: Evaluation) -> None:
    """Six cards: the number, one sentence, and beside a score on fewer than ``FEW_IMAGES`` images a warning (the
    full one with the likely range under the accuracy, a short one under the others)."""
    m, split = ev.metrics, split_word(ev.split)
    st.subheader(f"How good is it? Scored on {m.n:,} {split} images it never trained on")
    few = f"Only {m.n} images: treat this as rough." if m.n < w.FEW_IMAGES else ""
    rows = [
        (metric_word("accuracy"), w.pct(m.accuracy, 1), w.score_sentence(m, ev.split),
         f"{metric_technical('accuracy').capitalize()}: the share of images whose top guess is the true label.", w.few_images_warning(m.n, m.accuracy)),
        (metric_word("top_k_accuracy", k=m.top_k), w.pct(m.top_k_accuracy, 1), w.top_k_sentence(m.top_k_accuracy, m.n, m.top_k),
         f"{metric_technical('top_k_accuracy', k=m.top_k).capitalize()}.", few),
        (metric_word("map5"), f"{m.map5:.3f}", w.map5_sentence(m.map5),
         f"{metric_technical('map5')}, the score of Kaggle's humpback whale competition.", few),
        (metric_word("macro_f1"), f"{m.macro['f1']:.3f}", w.f1_sentence(m.macro["f1"], m.n_classes),
         f"{metric_technical('macro_f1').capitalize()}. Precision {m.macro['precision']:.3f}, recall {m.macro['recall']:.3f} (averaged over classes); "
         f"weighted by class size: F1 {m.weighted['f1']:.3f}.", few),
        (metric_word("log_loss"), f"{m.log_loss:.3f}", w.log_loss_sentence(m.log_loss, m.n_classes),
         f"{metric_technical('log_loss').capitalize()} of the true labels: lower is better.", few),
        (metric_word("ece"), w.pct(m.calibration.ece, 1), w.calibration_sentence(m.calibration),
         f"{metric_technical('ece').capitalize()}, over 15 confidence bins (see the reliability diagram below).", few),
    ]  # fmt: skip
    for start in (0, 3):
        for column, row in zip(st.columns(3), rows[start : start + 3], strict=True):
            _card(column, *row)


def leakage(ev: Evaluation, run: RunRecord) -> None:
    split = split_word(ev.split)
    st.subheader(f"Does the score hold on {split} images the model has never seen a copy of?")
    if ev.root is None:
        st.info(f"{plain(ev.root_problem)} Its copies cannot be looked for.", icon=":material/folder_off:")
        return
    if ev.honest is None:
        _offer_check(ev, run)
        return
    h = ev.honest
    a, b, c = st.columns(3)
    titled_metric(a, f"All {h.n_all:,} {split} images", w.pct(h.accuracy_all, 1),
                  help="Accuracy on every image of the split")  # fmt: skip
    gap = f"{-100 * h.gap:+.1f} points" if h.n_leaking and h.gap is not None and abs(h.gap) >= 0.0005 else None
    titled_metric(b, f"The {h.n_clean:,} without a copy in training", w.pct(h.accuracy_clean, 1), delta=gap,
             delta_color="normal", help="Accuracy on the images that have no copy (or near copy) among the "
             "training images: what to expect on new images.")  # fmt: skip
    titled_metric(c, "With a copy in training", f"{h.n_leaking:,}", help="Found by the duplicate search (perceptual hash, "
             f"threshold {ev.leaks.threshold} bits, every match checked on pixels).")  # fmt: skip
    box = st.warning if h.n_leaking and (h.gap or 0) > 0.005 else st.info
    box(w.leakage_sentence(h, ev.split), icon=":material/content_copy:")
    warning = w.few_images_warning(h.n_clean, h.accuracy_clean) if h.n_leaking else ""
    if warning:
        st.caption(f":orange[:material/warning:] {warning}")
    if h.n_leaking:
        st.page_link("app_pages/duplicates.py", label="See the copies and move them out on the Duplicates page",
                     icon=":material/content_copy:")  # fmt: skip


def _offer_check(ev: Evaluation, run: RunRecord) -> None:
    n = len(ev.splits)
    st.info(f"Not checked yet: looking for copies of the {split_word(ev.split)} images among the training "
            f"images reads each of the dataset's {n:,} images once (then it is remembered). A copy in training "
            "makes the score look better than it will be on new images.", icon=":material/content_copy:")  # fmt: skip
    if st.button("Look for copies", key=f"evaluate_leaks_{run.run_id}_{ev.split}", icon=":material/search:"):
        ask_for_leak_check(run, ev.split)
        st.rerun()
