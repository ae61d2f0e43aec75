"""Drawing runs: active jobs with progress and cancel, live curves, a run's details. Shared by Train and Runs."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import fields

import pandas as pd
import streamlit as st

from core.common.errors import CoreError
from core.common.percent import interval_words, percent
from core.common.words import AUTOMATIC, duration, metric_word, status_word
from core.common.workspace import Workspace
from core.store.ranking import best_before
from core.store.records import ACTIVE_STATUSES, RunRecord
from core.store.runs import RunStore
from core.train import run_folder
from core.train import runner as train_run
from core.train.archs import arch_label
from core.train.config import TrainConfig, label_of
from core.train.jobs import Job, JobRegistry, Progress
from core.train.plan import SMALL_SPLIT
from core.train.runner import EPOCH_KEYS, RESUMABLE, STEP_KEYS
from core.train.verdict import DID_NOT_LEARN, outcome_of
from ui import figures
from ui.common import value_word
from ui.state import dataset_title
from ui.text import plain


def active_jobs(registry: JobRegistry, store: RunStore) -> None:
    """One line per queued or running job: progress bar, phase, ETA and a cancel button."""
    jobs = registry.active()
    if not jobs:
        return
    st.subheader("Training now")
    for job in jobs:
        _job_row(job, registry, store)


def _job_row(job: Job, registry: JobRegistry, store: RunStore) -> None:
    p = job.progress()
    name = plain(store.get_run(job.run_id).name)
    left, right = st.columns([5, 1], vertical_alignment="center")
    text = f"**{name}** (run {job.run_id}) · {_phase_text(job, p)}"
    left.progress(p.fraction, text=text)
    if right.button("Cancel", key=f"cancel_{job.run_id}", icon=":material/stop:", disabled=job.context.cancel.is_set()):
        registry.cancel(job.run_id)
        st.toast(f"Stopping {name}: it saves a checkpoint and stops at its next step.")


def _phase_text(job: Job, p: Progress) -> str:
    if job.context.cancel.is_set():
        return "stopping..."
    if p.phase != "training":
        return plain(p.message or p.phase)
    eta = p.eta_s()
    # Auto epochs: the planned length is the current cycle's end (cycles) or the cap (plateau); either may end
    # sooner or (cycles) grow while the network still learns.
    planned, cap, open_ended = p.epochs or "?", p.max_epochs, p.until_converged
    capped = open_ended and planned == cap
    epoch_text = f"epoch {p.epoch}/{planned}"
    if open_ended:
        epoch_text += (
            " (ends once it stops learning)" if capped else f" (more only while it still learns, at most {cap})"
        )
    parts = [epoch_text, f"step {p.step:,}/{p.total_steps:,}"]
    if p.images_per_s:
        parts.append(f"{p.images_per_s:,.0f} img/s")
    if eta is not None:
        parts.append(f"at most {duration(eta)} left" if capped else f"about {duration(eta)} left")
    return " · ".join(parts)


def curves(store: RunStore, runs: list[RunRecord]) -> None:
    """Loss and accuracy of the given runs: per epoch (train and validation) and per step (with the learning rate
    and a smoothing control), overlaid in distinct colours when several."""
    if not runs:
        st.caption("Tick one or more runs in the table to see their curves.")
        return
    names = {r.run_id: f"{r.name} ({r.run_id})" for r in runs}
    frame = store.metrics([r.run_id for r in runs], [*STEP_KEYS, *EPOCH_KEYS])
    if frame.empty:
        st.caption("No curves yet: the first values appear after the first logged steps.")
        return
    frame["run"] = frame["run_id"].map(names)
    log_loss = st.toggle("Loss on a log scale", key="runs_log_loss", help="Shows a loss that spans orders of "
                         "magnitude (a spike of thousands next to values near 0.1) without flattening the rest.")  # fmt: skip
    per_epoch, per_step = st.tabs(["Per epoch", "Per step"])
    with per_epoch:
        _pair(frame, ("epoch_train_loss", "val_loss"), ("epoch_train_acc", "val_acc"), "epoch", log_loss)
    with per_step:
        smoothing = st.slider("Smoothing", 0.0, 0.95, 0.6, 0.05, key="runs_smoothing",
                              help="Exponential moving average of the per-step values (0: raw). The raw values "
                                   "stay as faint lines.")  # fmt: skip
        stepped = figures.smoothed(frame, smoothing)
        _pair(stepped, ("train_loss",), ("train_acc",), "step", log_loss)
        rate = frame[frame["key"] == "lr"]
        if not rate.empty:
            st.plotly_chart(figures.learning_rate(rate), width="stretch", key="lr_step")


def _pair(frame: pd.DataFrame, losses: tuple[str, ...], accs: tuple[str, ...], x: str, log_loss: bool) -> None:
    left, right = st.columns(2)
    loss, acc = frame[frame["key"].isin(losses)], frame[frame["key"].isin(accs)]
    if loss.empty and acc.empty:
        st.caption(f"No per-{x} values yet.")
        return
    left.plotly_chart(figures.run_curves(loss, "loss", x, log=log_loss), width="stretch", key=f"loss_{x}")
    right.plotly_chart(figures.run_curves(acc, "accuracy", x), width="stretch", key=f"acc_{x}")


# What to try after a run that did not learn, most likely cause first: labels that do not match the images (a
# network cannot learn what is not there), then too few images, then the recipe.
TRY_NEXT = ("check that each class's images really differ from the other classes', add images per class, or try a "
            "lower learning rate or another network")  # fmt: skip


def run_header(store: RunStore, ws: Workspace, run: RunRecord) -> None:
    """A run's name, status and scores, each beside the number of images it was measured on."""
    summary = store.summary(run)
    splits = run_folder.split_sizes(store, ws, run.run_id)
    went = outcome_of(store, run.run_id)
    failed_to_learn = went["outcome"] == DID_NOT_LEARN
    verdict = f" · {DID_NOT_LEARN}" if failed_to_learn else ""
    st.subheader(f"{plain(run.name)} · {status_word(run.status)}{verdict}")
    relations(store, run)
    if run.error:  # it may quote a file name or a label
        st.warning(plain(run.error), icon=":material/warning:")
    if failed_to_learn:
        st.warning(f"This run did not learn: {plain(went['why'])}. Its scores are no better than guessing: "
                   f"{TRY_NEXT}.", icon=":material/warning:")  # fmt: skip
    runaways(went["runaways"])
    cards = st.columns(4)
    test, best = summary["test_accuracy"], summary["best_val_acc"]
    chance = {"delta": f"chance {percent(went['chance'], 1)}", "delta_color": "off", "delta_arrow": "off"} \
        if failed_to_learn and went["chance"] is not None else {}  # fmt: skip
    cards[0].metric(metric_word("test_accuracy"), percent(test, 1) if test is not None else "not yet",
                    help=f"Share of the {splits.get('test', 0):,} test images, never used in training, that get "
                         "the right label (best checkpoint)." if test is not None else
                         "Measured on the test images once the run finishes.", **chance)  # fmt: skip
    cards[1].metric(metric_word("best_val_acc"), percent(best, 1) if best is not None else "not yet",
                    help=f"The best epoch's score on the {splits.get('val', 0):,} validation images.",
                    **chance)  # fmt: skip
    cards[2].metric("Epochs", f"{train_run.epochs_trained(store, run.run_id):,}")
    cards[3].metric("Time", duration(run.wall_s) if run.wall_s is not None else "not started")
    small_split_warning(splits.get("test", 0), "test")
    small_split_warning(splits.get("val", 0), "validation")


def runaways(events: list[str]) -> None:
    """What the divergence guard did in the run, one line per time its loss ran away."""
    for words in events:
        st.info(f"Divergence guard: {plain(words)}.", icon=":material/restart_alt:")


def relations(store: RunStore, run: RunRecord) -> None:
    """Where the run comes from, with links: a search it is a trial of, a run whose weights it started from."""
    search = run.in_group("search")
    links = []
    if search is not None:
        trial = store.params(run.run_id).get("search_trial")
        words = f"Trial {trial + 1} of search {search}" if isinstance(trial, int) else f"A trial of search {search}"
        links.append(("app_pages/search.py", words, {"search": str(search)}, ":material/travel_explore:"))
    parent = run.config.get("from_run")
    if parent:
        links.append(
            ("app_pages/runs.py", f"Started from run {parent}'s weights", {"run": parent}, ":material/call_split:")
        )
    for column, (page, words, query, icon) in zip(st.columns(max(len(links), 1) + 2), links, strict=False):
        column.page_link(page, label=words, query_params=query, icon=icon)


def any_active(runs: list[RunRecord]) -> bool:
    return any(r.status in ACTIVE_STATUSES for r in runs)


TABLE_COLUMNS = {"run_id": "Run", "name": "Name", "status": "Status", "network": "Network", "dataset": "Dataset",
                 "best_val_acc": metric_word("best_val_acc"), "test_accuracy": metric_word("test_accuracy"),
                 "test_images": "Test images", "wall_s": "Time", "error": "Problem"}  # fmt: skip


def runs_table(store: RunStore, ws: Workspace, runs: list[RunRecord]) -> pd.DataFrame:
    """One row per run, in words: what a person compares (no raw field names; "—" where a value is not known yet,
    where a number column would show "None")."""
    rows = []
    for run in runs:
        summary = store.summary(run)
        n_test = run_folder.split_sizes(store, ws, run.run_id).get("test")
        went = outcome_of(store, run.run_id)
        failed = went["outcome"] == DID_NOT_LEARN  # never a plain "finished" beside a score: chance said beside it
        chance = f" (chance {percent(went['chance'], 1)})" if failed and went["chance"] is not None else ""
        problem = run.error or (f"{DID_NOT_LEARN}: {went['why']}" if failed else "; ".join(went["runaways"]))
        rows.append({"run_id": run.run_id, "name": run.name,
                     "status": status_word(run.status) + (f", {DID_NOT_LEARN}" if failed else ""),
                     "network": arch_label(run.arch) if run.arch else "chosen when it starts",
                     "dataset": dataset_title(run.dataset), "best_val_acc": _percent(summary["best_val_acc"]) + chance,
                     "test_accuracy": _percent(summary["test_accuracy"]) + chance,
                     "test_images": f"{n_test:,}" if n_test is not None else "—",
                     "wall_s": duration(run.wall_s) if run.wall_s is not None else "—",
                     "error": problem})  # fmt: skip
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    return table if (table["error"] != "").any() else table.drop(columns="error")


def _percent(value: float | None) -> str:
    return percent(value, 1, missing="—")


def _score_words(test: float | None, n_test: int, best_val: float | None, chance: float | None) -> str:
    """ "**99.4%** of its 310 test images get the right label (likely between 97.7% and 99.8% with this many;
    chance level 10.3%; best validation accuracy 99.7%)." """
    if test is None or not n_test:
        score, notes = "it has no test images, so no test score", []
    else:
        score = f"**{percent(test, 1)}** of its {n_test:,} test images get the right label"
        notes = [f"with this many images the true figure is likely {interval_words(test, n_test)}"]
    notes += [f"chance level {percent(chance, 1)}"] if chance is not None else []
    notes += [f"best validation accuracy {percent(best_val, 1)}"] if best_val is not None else []
    return score + (f" ({'; '.join(notes)})." if notes else ".")


def _against_earlier(store: RunStore, run: RunRecord, test: float | None) -> str:
    """The best earlier run on the same data, so a result is read against what was already reached."""
    earlier = best_before(store, run)
    if earlier is None:
        return ""
    what = "test" if earlier.split == "test" else "validation"
    side = "" if test is None else (" This run is better." if test > earlier.accuracy else
                                    " This run is not better." if test < earlier.accuracy else " The same score.")  # fmt: skip
    return (f" The best earlier run on this data, run {earlier.run.run_id}, scored {percent(earlier.accuracy, 1)} on "
            f"its {what} images.{side}")  # fmt: skip


def run_words(run: RunRecord) -> str:
    """ "run 3 (lenet-3, ResNet-18 on flowers)": a run named so a user knows which one is meant."""
    network = f"{arch_label(run.arch)} on " if run.arch else ""
    return f"run {run.run_id} ({plain(run.name)}, {network}{plain(dataset_title(run.dataset))})"


def last_result(store: RunStore) -> int | None:
    """The run whose result the Train page shows to a tab that started none: the newest run trained on its own
    (not a search's trial) once it has ended, so a run that finished while the user was away is still reported."""
    for run in store.list_runs(kind="train"):
        if run.run_group is None:
            return None if run.status in ACTIVE_STATUSES else run.run_id
    return None


def table_config() -> dict:
    """Column titles for ``runs_table``."""
    return {k: st.column_config.NumberColumn(t, format="%d") if k == "run_id" else t for k, t in TABLE_COLUMNS.items()}


def run_result(store: RunStore, ws: Workspace, run_id: int) -> None:
    """How a run ended, in a sentence or two, with where to go next (the Train page, after a run)."""
    try:
        run = store.get_run(run_id)
    except CoreError:
        return
    summary = store.summary(run)
    n_test, test = run_folder.split_sizes(store, ws, run_id).get("test", 0), summary["test_accuracy"]
    went = outcome_of(store, run_id)
    if run.status == "completed" and went["outcome"] == DID_NOT_LEARN:
        chance = f"{percent(went['chance'], 1)}" if went["chance"] is not None else "unknown"
        score = f"{percent(test, 1)} of its {n_test:,} test images right" if test is not None else "no test score"
        st.warning(f"**{plain(run.name)}** finished in {duration(run.wall_s or 0)} but **did not learn**: "
                   f"{plain(went['why'])}. Its score ({score}; chance level {chance}) is not a result: "
                   f"{TRY_NEXT}.", icon=":material/warning:")  # fmt: skip
        runaways(went["runaways"])
    elif run.status == "completed":
        st.success(f"**{plain(run.name)}** finished in {duration(run.wall_s or 0)}: "
                   f"{_score_words(test, n_test, summary['best_val_acc'], went['chance'])}"
                   f"{_against_earlier(store, run, test)}", icon=":material/check_circle:")  # fmt: skip
        runaways(went["runaways"])
        small_split_warning(n_test, "test")
    else:
        st.info(f"**{plain(run.name)}** {status_word(run.status)}" + (f": {plain(run.error)}" if run.error else "."),
                icon=":material/info:")  # fmt: skip
    links = st.columns(3)
    links[0].page_link(
        "app_pages/runs.py", label="Its curves", icon=":material/monitoring:", query_params={"run": run_id}
    )
    links[1].page_link("app_pages/classify.py", label="Classify photos with it", icon=":material/image_search:",
                       query_params={"run": run_id})  # fmt: skip


def small_split_warning(n: int, what: str) -> None:
    """Beside a score measured on few images: it can mislead, say so."""
    if 0 < n < SMALL_SPLIT:
        st.warning(f"Measured on only {n} {what} image{'s' * (n != 1)}: one image more or less right moves it by "
                   f"{100 / n:.0f} points. Treat it as a rough sign, not a result.", icon=":material/warning:")  # fmt: skip


def config_view(run: RunRecord) -> None:
    """Every setting of the run, named in words, with what ``auto`` became in the run's plan (its stored plan,
    ``core.train.checkpoints.stored_plan``; "Automatic" alone while it has none)."""
    from core.train.checkpoints import stored_plan
    from ui.state import run_store, workspace

    plan = stored_plan(run_store(), workspace(), run)
    decided = plan.settings.to_dict() if plan is not None else {}
    rows = []
    for name, value in run.config.items():
        if name == "dataset":
            continue
        words = _value_words(name, value)
        if words == AUTOMATIC and plan is not None:
            chosen = plan.epochs.words().rstrip(".") if name == "epochs" else _value_words(name, decided.get(name))
            words = f"{AUTOMATIC}: {chosen}" if chosen != AUTOMATIC else words
        rows.append({"Setting": label_of(name), "Value": words})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _value_words(option: str, value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    if value == 0:
        return AUTOMATIC
    return f"{value:g}" if isinstance(value, float) else value_word(option, value)


TRAIN_PREFILL = "train_prefill"  # session key: a run's config to start the Train form from ("rerun with changes")
PREFILLED_FROM = "train_prefilled_from"  # session key: whose settings the form holds, in words, until a run starts
FORM_EXTRAS = ("train_weights_parent", "train_weights_file")  # the form's widgets that are not an option's own


def forget_form(state: MutableMapping) -> None:
    """Drop the Train form's widget values from the tab's ``state``, so the form starts from a prefill ("Rerun with
    changes", "Start a run from it", a found learning rate): each option's widget (``train_<option>``) and its
    "automatic" box (``train_<option>_auto``), and the weights widgets. The tab's other state stays, the run it
    started last (``train_last_started``, whose result the page shows) included."""
    options = {f"train_{f.name}" for f in fields(TrainConfig)}
    form = [k for k in state if k in options or str(k).removesuffix("_auto") in options or k in FORM_EXTRAS]
    for key in form:
        del state[key]


def run_actions(run: RunRecord, store: RunStore, registry: JobRegistry, ws: Workspace) -> None:
    """Resume, rerun with changes, download the best checkpoint, delete."""
    resume, rerun, child, download, delete = st.columns(5)
    resumable = run.status in RESUMABLE and run_folder.checkpoint_path(ws, run.run_id, "last").is_file()
    why = (
        "continues from its last checkpoint with the same run id"
        if resumable
        else "only stopped runs with a checkpoint"
    )
    if resume.button("Resume", icon=":material/play_arrow:", disabled=not resumable, help=why, key="run_resume"):
        try:
            train_run.resume_training(registry, ws, run.run_id)
        except CoreError as e:  # e.g. its last checkpoint was damaged since the page was drawn
            st.error(f"This run cannot be resumed: {plain(e)}")
        else:
            st.rerun()
    if rerun.button("Rerun with changes", icon=":material/tune:", key="run_rerun",
                    help="opens the Train form filled in with this run's settings"):  # fmt: skip
        st.session_state[TRAIN_PREFILL] = dict(run.config)
        st.session_state[PREFILLED_FROM] = f"the settings of {run_words(run)}"
        st.switch_page("app_pages/train.py")
    best = run_folder.checkpoint_path(ws, run.run_id, "best")
    if child.button("Start a run from it", icon=":material/call_split:", key="run_child", disabled=not best.is_file(),
                    help="opens the Train form starting from this run's best weights (on the dataset chosen there)"):  # fmt: skip
        st.session_state[TRAIN_PREFILL] = {"from_run": run.run_id}
        st.session_state[PREFILLED_FROM] = f"the best weights of {run_words(run)} to start from"
        st.switch_page("app_pages/train.py")
    download.download_button("Weights", data=best.read_bytes if best.is_file() else b"",
                             file_name=f"{run.name}-best.pt", disabled=not best.is_file(), on_click="ignore",
                             icon=":material/download:", help="Download the best checkpoint's weights: a state dict; "
                             "load it with torch.load(weights_only=True)")  # fmt: skip
    with delete.popover("Delete", icon=":material/delete:", disabled=run.status in ACTIVE_STATUSES):
        st.write(f"Delete **{plain(run.name)}** with its curves and checkpoints? This cannot be undone.")
        if st.button("Delete for good", type="primary", key="run_delete"):
            try:  # the status is checked again as it is deleted: another tab may have resumed it meanwhile
                run_folder.delete_run(store, ws, run.run_id)
            except CoreError as e:
                st.error(f"Not deleted: {plain(e)}.")
            else:
                st.rerun()


def dataset_ref(run: RunRecord):
    """The run's dataset as a ref, or None when it cannot be opened any more (moved, deleted)."""
    from core.datasets.sources import resolve_dataset
    from ui.state import workspace

    try:
        return resolve_dataset(run.dataset, workspace())
    except (CoreError, OSError):
        return None
