"""Train: the few choices that matter on top (the rest under Advanced), what automatic chose, warnings before
the start, an estimate, the runs training now and the result of the last one.

The run's plan is made once per page run, after the widgets (``core.train.plan.preview``): the "Automatic: ..."
captions, the estimate, the learning-rate finder and the run the Start button queues all use that one plan."""

import streamlit as st

from core.common.errors import CoreError
from core.scaling.points import best_setting
from core.train import runner as train_run
from core.train.config import TrainConfig
from core.train.estimate import estimate_epoch_seconds
from core.train.plan import memory_words, preview
from ui import lr_find, runs, train_form
from ui.state import current_ref, dataset_title, jobs, run_store, scan, workspace
from ui.text import plain

LAST_STARTED = "train_last_started"  # session key: the run this tab started last (its result is shown)

st.title("Train")
ref = current_ref()
if ref is None:
    st.stop()
scanned = scan(ref)
prefill = st.session_state.pop(runs.TRAIN_PREFILL, None)
if prefill is not None:  # "Rerun with changes": the widgets start from that run's settings, not from their state
    runs.forget_form(st.session_state)
if st.session_state.get(runs.PREFILLED_FROM):
    st.info(f"The form holds {st.session_state[runs.PREFILLED_FROM]}: change what you want, then start.",
            icon=":material/tune:")  # fmt: skip
# The same defaults as the command line's (TrainConfig's): a page run and `python -m core train` train alike.
defaults = TrainConfig.from_dict({**TrainConfig().to_dict(), **(prefill or {}), "dataset": ref.spec})
st.caption(f"Dataset: **{plain(dataset_title(ref.spec))}** · {len(scanned.manifest):,} images, "
           f"{scanned.manifest['label'].nunique()} classes · change it on the Datasets page.")  # fmt: skip
values, slots = train_form.form(defaults)
weights_file = st.file_uploader("...or start from a weights file of your own", type=["pth", "pt"],
                                key="train_weights_file", help="A state dict (.pth) of the same network, e.g. "
                                "torchvision's ImageNet file; the classification head is replaced.")  # fmt: skip
values |= train_form.advanced(defaults, slots)

try:
    if weights_file is not None:
        values["weights"] = str(train_run.save_weights_upload(workspace(), weights_file.getvalue(), weights_file.name))
    config = train_form.with_parent(train_form.config_from(defaults, values).validate())
    seen = preview(config, scanned.manifest)  # the run's plan: made here, once, and handed to whatever runs it
    train_form.show_automatic(slots, seen.plan, values)
    st.caption(train_form.split_caption(seen))
    st.caption(memory_words(seen.memory))  # the estimate that refuses a run too big
    for warning in seen.warnings:
        st.warning(plain(warning), icon=":material/warning:")
except CoreError as exc:
    train_form.show_problem(exc)
    st.stop()
measured = best_setting(run_store(), ref.spec, config.arch)
if measured is not None and (config.ranks, config.threads) != measured[:2]:  # offered, never applied by itself
    if st.button(f"Use the fastest setting {measured[2].words} measured: {measured[0]} process(es) x {measured[1]} "
                 "thread(s)", key="train_use_measured", icon=":material/speed:",
                 help="Sets the processes and threads under Advanced (Scaling page)."):  # fmt: skip
        st.session_state[runs.TRAIN_PREFILL] = {**config.to_dict(), "ranks": measured[0], "threads": measured[1]}
        st.rerun()

estimate, go, find, _ = st.columns([1, 1, 1, 2])
if estimate.button("Estimate the time", icon=":material/timer:", key="train_estimate"):
    try:
        with st.spinner("Timing a few real training steps..."):
            seconds = estimate_epoch_seconds(seen)
        st.info(seen.plan.epochs.time_words(seconds), icon=":material/timer:")
    except CoreError as exc:  # a run too big for the memory: its steps are not timed either
        train_form.show_problem(exc)
lr_find.button(find, seen, config)  # its time beside it; a suggested rate fills the form
lr_find.show(config.lr)
if go.button("Start training", type="primary", icon=":material/play_arrow:", key="train_start"):
    try:
        st.session_state[LAST_STARTED] = train_run.submit_training(jobs(), workspace(), seen.plan)
        st.session_state.pop(runs.PREFILLED_FROM, None)
        st.success(f"Run {st.session_state[LAST_STARTED]} started. It trains in the background: switch pages "
                   "freely, its curves update on the Runs page.", icon=":material/check:")  # fmt: skip
    except CoreError as exc:
        train_form.show_problem(exc)

polling = bool(jobs().active())


@st.fragment(run_every=2.0 if polling else None)
def training_now() -> None:
    if polling and not jobs().active():
        # The last run ended: a full rerun stops the polling and draws its result once (drawn here too, the
        # result showed twice while the page redrew).
        st.rerun()
    runs.active_jobs(jobs(), run_store())
    if not jobs().active():
        # This tab's run, else the newest run of its own: one that finished while the user was away (or before a
        # refresh, which starts a new session) still shows how it went.
        last = st.session_state.get(LAST_STARTED) or runs.last_result(run_store())
        if last is not None:
            runs.run_result(run_store(), workspace(), last)
    st.page_link("app_pages/runs.py", label="See the curves on the Runs page", icon=":material/monitoring:")


training_now()
