"""The Search page: a space of settings set in the page, the searches with their trials (best highlighted), stop and
resume. The engine is ``core.experiments.search``; the trials table is the comparison table (``ui.compare``).

The learning rate is drawn around each trial's own optimizer's usual rate unless the user types a range
(``core.experiments.rates``); a typed range far from an optimizer's usual one is kept and said. Trials at chance are
marked in the table, and the best is chosen among the trials that learned: with none, no best is highlighted and a
warning says so (``core.experiments.results``)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.common.errors import CoreError
from core.common.percent import percent
from core.common.untrusted import whole_number
from core.common.words import AUTOMATIC, STATUS_WORDS
from core.experiments.rates import USUAL, USUAL_SPAN, factor_words
from core.experiments.results import best_trial, best_words, scored_trials, search_group, trial_rows, trials
from core.experiments.search import DEFAULT_TRIALS, MAX_TRIALS, SearchSpec
from core.experiments.space import METRICS, Space, SpaceError, metric, parse_space, rate_warnings
from core.store.records import RunRecord
from core.store.runs import RunStore
from core.train.archs import ARCHS
from core.train.config import AUGMENT_CHOICES, OPTIMIZERS, TrainConfig, choices, is_automatic, label_of, limits
from ui import compare
from ui.common import show_error, value_word
from ui.state import dataset_title, run_store, searches, workspace
from ui.text import plain

SEARCH = "search"  # URL parameter: the search shown
OFFERED = {  # option -> (values offered, chosen at first)
    "optimizer": (list(OPTIMIZERS), ["sgd", "adam"]),
    "batch_size": ([0, 8, 16, 32, 64, 128, 256], [0]),  # automatic: small sets get smaller steps, as on Train
    "epochs": ([1, 2, 3, 4, 6, 8, 12, 24], [2]),
    "arch": (["auto", *ARCHS], ["auto"]),
    "freeze": (list(choices()["freeze"]), ["none"]),
    "image_size": ([0, 16, 32, 64, 112, 128, 224], [0]),
    "augment": (list(AUGMENT_CHOICES), ["auto"]),
}
LISTS = {name: (label_of(name), *rest) for name, rest in OFFERED.items()}  # option -> (label, offered, chosen)
SEARCH_STATUS = {**STATUS_WORDS, "running": "searching"}  # a search runs trials: it is not itself training
RATE_HOW = {"usual": "Around each optimizer's usual rate", "range": "Between two values, for every optimizer",
            "fixed": "Not varied: each optimizer's usual rate"}  # fmt: skip
RATE_HELP = (f"Around the usual rate: a tenth to 3 times it, on a log scale "
             f"({factor_words(USUAL_SPAN, ('sgd', 'adam'), False, span=True)}). Between two values: one range on a log "
             "scale for every optimizer, though their usual rates lie 100 times apart.")  # fmt: skip


def _word(name: str, value: Any) -> str:
    return AUTOMATIC if is_automatic(name, value) else value_word(name, value)


def new_search(dataset: str) -> SearchSpec | None:
    """The space form; returns the search to start when "Start the search" was pressed with a usable space."""
    # Only the button starts a search: Enter in a box (the trials, a rate) must not start minutes of training.
    with st.form("search_form", border=False, enter_to_submit=False):
        st.markdown("**What to vary.** An option with one value is fixed for every trial; with several, the trials "
                    "try them.")  # fmt: skip
        how = st.radio("Learning rate", list(RATE_HOW), format_func=RATE_HOW.get, key="search_lr", horizontal=True,
                       help=RATE_HELP)  # fmt: skip
        low_col, high_col, note_col = st.columns([1, 1, 2], vertical_alignment="bottom")
        top = float(limits("lr")[1])  # the training option's own bound (core.train.config.BOUNDS)
        low = low_col.number_input("from", value=0.01, min_value=1e-6, max_value=top, format="%g", key="search_lr_low")
        high = high_col.number_input("to", value=0.3, min_value=1e-6, max_value=top, format="%g", key="search_lr_high")
        note_col.caption("These two values are used with “Between two values” (on a log scale).")
        values = {}
        for cols in (list(LISTS)[:4], list(LISTS)[4:]):
            for col, name in zip(st.columns(4), cols, strict=False):
                label, offered, default = LISTS[name]
                values[name] = col.multiselect(label, offered, default=default, key=f"search_{name}",
                                               format_func=lambda v, n=name: _word(n, v))  # fmt: skip
        st.markdown("**How.**")
        method_col, trials_col, metric_col, prune_col = st.columns(4)
        method = method_col.radio("Method", ["random", "grid"], key="search_method", horizontal=True,
                                  format_func={"random": "Random draws", "grid": "Every combination"}.get)  # fmt: skip
        n = trials_col.number_input("Trials", value=4, min_value=1, max_value=MAX_TRIALS, step=1, key="search_trials",
                                    help="Random: how many draws. Every combination: at most this many of them.")  # fmt: skip
        ranked = metric_col.selectbox("Best by", list(METRICS), format_func=lambda m: METRICS[m].words,
                                      key="search_metric")  # fmt: skip
        prune = prune_col.toggle("Stop hopeless trials", key="search_prune", help=PRUNE_HELP)
        started = st.form_submit_button("Start the search", type="primary", icon=":material/travel_explore:")
    if not started:
        return None
    try:
        space, fixed = _space(values, how, (low, high))
        base = TrainConfig(dataset=dataset, **fixed).validate()
        return SearchSpec(base, space, int(n), method, ranked, prune)
    except CoreError as exc:
        show_error(exc)
        return None


PRUNE_HELP = ("Successive halving: after epochs 1, 3, 9... a trial goes on only while its validation accuracy is in "
              "the top third of the trials that got that far; the others stop there and free their cores.")  # fmt: skip


def _space(values: dict[str, list], how: str, rate: tuple[float, float]) -> tuple[Space, dict[str, Any]]:
    """The space (options given several values, the rate as ``how`` says: ``RATE_HOW``) and the fixed settings
    (options given one)."""
    raw: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for name, chosen in values.items():
        if not chosen:
            raise SpaceError(f"choose at least one value for {LISTS[name][0]}")
        if len(chosen) == 1:
            fixed[name] = chosen[0]
        else:
            raw[name] = list(chosen)
    if how == "usual":
        raw["lr"] = USUAL
    elif how == "range":
        raw["lr"] = {"low": min(rate), "high": max(rate), "log": True}
    if not raw:
        raise SpaceError("nothing varies: choose two or more values of a setting, or vary the learning rate")
    return parse_space(raw), fixed


def search_label(run: RunRecord) -> str:
    spec = run.config
    how = "random draws" if spec.get("method") == "random" else "every combination"
    return (f"Search {run.run_id} · {how}, {spec.get('trials', DEFAULT_TRIALS)} trials · "
            f"{dataset_title(run.dataset)} · {SEARCH_STATUS.get(run.status, run.status)}")  # fmt: skip


def pick(store: RunStore) -> RunRecord | None:
    """The search shown: the one in the address, else the newest."""
    found = store.list_runs(kind="search")
    if not found:
        return None
    by_id = {r.run_id: r for r in found}
    wanted = whole_number(st.query_params.get(SEARCH))  # "?search=²" is ignored, never int()'s ValueError
    ids = list(by_id)
    start = ids.index(wanted) if wanted in by_id else 0
    chosen = st.selectbox("Search", ids, index=start, format_func=lambda i: search_label(by_id[i]), key="search_pick")
    if chosen != ids[0] or SEARCH in st.query_params:
        st.query_params[SEARCH] = str(chosen)
    return by_id[chosen]


def show_next(search_id: int) -> None:
    """Show ``search_id`` after the rerun (call before the search picker is drawn)."""
    st.query_params[SEARCH] = str(search_id)
    st.session_state["search_pick"] = search_id


def show_search(store: RunStore, search: RunRecord) -> None:
    """One search: its state, stop/resume, its trials with the best highlighted, the best's links, a chart."""
    driven = searches().active(search.run_id)
    spec = search.config
    chosen = metric(spec["metric"])
    rows = trial_rows(store, search.run_id, chosen.name, workspace())
    ended = [r for r in rows if r["status"] not in ("queued", "running")]
    st.markdown(f"**{SEARCH_STATUS.get(search.status, search.status).capitalize()}** · {len(ended)} of "
                f"{spec['trials']} trials ended · best by {chosen.words.lower()}"
                + (" · hopeless trials stop early" if spec.get("prune") else ""))  # fmt: skip
    space, base = parse_space(spec["space"]), TrainConfig.from_dict(spec["base"])
    st.caption("Varied: " + "; ".join(space.describe(base)))
    for warning in rate_warnings(space, base):  # a typed rate range is kept: said once, beside the space
        st.warning(warning, icon=":material/warning:")
    if search.error:
        st.warning(plain(search.error), icon=":material/warning:")
    _controls(search, bool(driven))
    best = best_trial(rows, chosen.direction)
    if chosen.name == "test_accuracy":
        st.warning("Trials are ranked by their test score, so the best one's test score is itself optimistic: the "
                   "test images chose it. Rank by validation accuracy to keep the test honest.",
                   icon=":material/warning:")  # fmt: skip
    runs = trials(store, search.run_id)
    if not runs:
        st.caption("The first trials are being queued.")
        return
    frame = compare.table(store, list(reversed(runs)))
    notes = {r["run_id"]: r["note"] for r in rows if r["note"]}  # "about chance (33.3% on ...)", "did not learn"
    compare.show(frame, f"search_table_{search.run_id}", best=best["run_id"] if best else None, select=False,
                 notes=notes)  # fmt: skip
    if best is not None:
        _best(best, chosen.words, best_words(rows))
    elif scored_trials(rows):  # finished trials, none of them learned: no best to highlight
        st.warning(best_words(rows), icon=":material/warning:")
    compare.download(frame, f"{search_group(search.run_id)}.csv", f"search_csv_{search.run_id}")
    compare.settings_chart(frame, f"search_chart_{search.run_id}")


def _controls(search: RunRecord, driven: bool) -> None:
    stop, resume, _ = st.columns([1, 1, 4])
    if stop.button("Stop", icon=":material/stop:", key="search_stop", disabled=not driven,
                   help="Cancels the running trials (they keep their checkpoints) and drops the queued ones"):  # fmt: skip
        searches().stop(search.run_id)
        st.toast(f"Stopping search {search.run_id}: its running trials save a checkpoint and stop.")
    resumable = not driven and search.status in ("cancelled", "crashed", "failed")
    if resume.button("Resume", icon=":material/play_arrow:", key="search_resume", disabled=not resumable,
                     help="Continues the stopped trials from their checkpoints, then the trials still owed"):  # fmt: skip
        try:
            searches().resume(search.run_id)
            st.rerun()
        except CoreError as exc:
            show_error(exc)


def _best(best: dict, words: str, why: str) -> None:
    value = best["value"]
    shown = percent(value, 1) if "accuracy" in words.lower() else f"{value:.4f}"
    text, evaluate, curves = st.columns([3, 2, 2], vertical_alignment="center")
    text.success(f"Best so far: **run {best['run_id']}** ({words.lower()} {shown})" + (f"; {why}" if why else ""),
                 icon=":material/star:")  # fmt: skip
    evaluate.page_link("app_pages/evaluate.py", label="Open its evaluation", icon=":material/fact_check:",
                       query_params={"run": best["run_id"]})  # fmt: skip
    curves.page_link("app_pages/runs.py", label="Its curves", icon=":material/monitoring:",
                     query_params={"run": best["run_id"]})  # fmt: skip


def active(search: RunRecord) -> bool:
    return bool(searches().active(search.run_id)) or search.status in ("queued", "running")


def fresh(search_id: int) -> RunRecord:
    return run_store().get_run(search_id)
