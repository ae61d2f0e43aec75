"""Which run the Evaluate page shows, the states where there is nothing to show yet, and the evaluation itself
(cached per run, split and predictions file: a page load reads the stored predictions, never re-predicts)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.common.errors import CoreError
from core.common.words import SCORED_SPLITS, split_word
from core.common.workspace import Workspace
from core.evaluate.evaluation import ACTIVE, EmptySplitError, EvaluateError, Evaluation, check_evaluable, evaluate_run
from core.evaluate.leakage import fingerprints_ready
from core.store.records import RunRecord
from core.store.runs import RunStore
from core.train.predictions import predictions_file
from core.train.run_folder import run_dir, run_splits
from ui.common import default_run, run_label, show_error
from ui.state import set_url_run, url_run
from ui.text import plain

SPLIT_SHORT = {s: split_word(s).capitalize() for s in SCORED_SPLITS}  # "Test", "Validation"
SPLIT_LABELS = {s: f"{word} images" for s, word in SPLIT_SHORT.items()}
LEAK_CHECKS = "evaluate_leak_checks"  # session key: {(run_id, split)} whose copies the user asked to look for


def pick_run(store: RunStore) -> tuple[RunRecord, str] | None:
    """The run and split to show (the best completed run on the chosen dataset by default, or the one in the
    address); None, with what to do said, when there is none yet."""
    runs = store.list_runs(kind="train")
    done = [r for r in runs if r.status == "completed"]
    active = [r for r in runs if r.status in ACTIVE]
    if not done:
        _nothing_yet(active)
        return None
    by_id = {r.run_id: r for r in done}
    wanted = url_run()
    ids = list(by_id)
    best = default_run(store, done)
    default_id = best.run_id if best is not None else ids[0]
    # The choice of images sits under the run, not beside it: beside a run's long label it was cut at 800 px.
    chosen = st.selectbox("Run", ids, index=ids.index(wanted if wanted in by_id else default_id), key="evaluate_run",
                          format_func=lambda i: run_label(store, by_id[i], best=i == default_id),
                          help="A finished training run, newest first; the page opens on the best one on the "
                          "chosen dataset. Its scores come from the images it kept aside and never trained on.")  # fmt: skip
    split = st.segmented_control("Score on", list(SPLIT_LABELS), default="test", key="evaluate_split",
                                 format_func=SPLIT_SHORT.get,
                                 help="Test images: the final, untouched check. Validation images: the ones "
                                 "training used to pick its best epoch (slightly optimistic).") or "test"  # fmt: skip
    set_url_run(chosen if chosen != default_id else None)
    if active:
        names = ", ".join(str(r.run_id) for r in active[:5])
        st.caption(f"Still training: run {names}. Finished runs appear in this list.")
    return by_id[chosen], split


def _nothing_yet(active: list[RunRecord]) -> None:
    if active:
        run = active[0]
        st.info(f"Run {run.run_id} is still training. Its scores appear here as soon as it finishes; follow its "
                "progress on the Runs page.", icon=":material/hourglass_top:")  # fmt: skip
        st.page_link("app_pages/runs.py", label="Watch it on the Runs page", icon=":material/monitoring:")
        return
    st.info("No finished training run yet. Train a model first: with the default settings a model of the built-in "
            "digits is ready in under a minute, and its scores appear here.", icon=":material/info:")  # fmt: skip
    st.page_link("app_pages/train.py", label="Train a model", icon=":material/model_training:")


def _stamp(path: Path) -> int:
    return path.stat().st_mtime_ns if path.is_file() else 0


@st.cache_data(show_spinner=False, max_entries=8)
def _evaluation(run_id: int, split: str, leaks: str, stamp: int, root: str, _ws: Workspace,
                _store: RunStore) -> Evaluation:  # fmt: skip
    # cache_data, not cache_resource: every session gets its own copy, so nothing one page does to its frames
    # reaches another user's page.
    return evaluate_run(_ws, _store, run_id, split, leaks=leaks)


def load(ws: Workspace, store: RunStore, run: RunRecord, split: str) -> Evaluation | None:
    """The evaluation of ``run``'s ``split``; None with what to do said when it cannot be evaluated."""
    try:
        check_evaluable(ws, run, split)
    except EvaluateError as exc:
        _cannot(run, split, exc)
        return None
    path = predictions_file(run_dir(ws, run.run_id), split)
    leaks = "compute" if (run.run_id, split) in st.session_state.setdefault(LEAK_CHECKS, set()) else "cached"
    try:
        if not path.is_file():
            why = "it finished before predictions were kept" if split == "test" else "training stores test ones only"
            with st.spinner(f"Classifying the {SPLIT_LABELS[split].lower()} once with the run's best checkpoint "
                            f"({why}); the result is stored with the run..."):  # fmt: skip
                return _evaluation(run.run_id, split, leaks, -1, str(ws.root), ws, store)
        if leaks == "compute" and not fingerprints_ready(ws, run.dataset):
            with st.spinner(f"Looking for copies: reading the dataset's {len(run_splits(ws, run.run_id)):,} images "
                            "once (remembered for next time)..."):  # fmt: skip
                return _evaluation(run.run_id, split, leaks, _stamp(path), str(ws.root), ws, store)
        return _evaluation(run.run_id, split, leaks, _stamp(path), str(ws.root), ws, store)
    except CoreError as exc:
        show_error(exc, f"Run {run.run_id} cannot be evaluated")
        return None


def _cannot(run: RunRecord, split: str, exc: EvaluateError) -> None:
    if isinstance(exc, EmptySplitError) and exc.split == "test":
        st.info(f"Run {run.run_id} kept no images aside for a final test (its test share was 0), so there is "
                "nothing to score it on. Pick Validation under “Score on” above to score it on its validation "
                "images, or train again with a test share.", icon=":material/info:")  # fmt: skip
        st.page_link("app_pages/train.py", label="Train again", icon=":material/model_training:")
        return
    st.info(plain(str(exc).replace(f"run {run.run_id}", f"Run {run.run_id}", 1)), icon=":material/info:")


def ask_for_leak_check(run: RunRecord, split: str) -> None:
    """Remember that the user asked to look for copies (the next load fingerprints the dataset, once)."""
    st.session_state.setdefault(LEAK_CHECKS, set()).add((run.run_id, split))
