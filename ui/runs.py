"""Drawing runs: active jobs with progress and cancel, live curves, a run's details. Shared by Train and Runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from core.common.errors import CoreError
from core.common.workspace import Workspace
from core.store.records import ACTIVE_STATUSES, RunRecord
from core.store.runs import RunStore
from core.train import runner as train_run
from core.train.config import FIRST_CYCLE, TrainConfig, effective_schedule, planned_epochs
from core.train.jobs import Job, JobRegistry
from core.train.runner import EPOCH_KEYS, RESUMABLE, STEP_KEYS
from ui import figures


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
    step, total = p.get("step", 0), p.get("total_steps") or 0
    name = store.get_run(job.run_id).name
    left, right = st.columns([5, 1], vertical_alignment="center")
    text = f"**{name}** (run {job.run_id}) · {_phase_text(job, p)}"
    left.progress(min(step / total, 1.0) if total else 0.0, text=text)
    if right.button("Cancel", key=f"cancel_{job.run_id}", icon=":material/stop:", disabled=job.context.cancel.is_set()):
        registry.cancel(job.run_id)
        st.toast(f"Stopping {name}: it saves a checkpoint and stops at its next step.")


def _phase_text(job: Job, p: dict) -> str:
    if job.context.cancel.is_set():
        return "stopping..."
    phase = p.get("phase", job.status)
    if phase != "training":
        return str(p.get("message") or phase)
    eta = job.eta_s()
    # Auto epochs: the planned length is the current cycle's end (cycles) or the cap (plateau); either may end
    # sooner or (cycles) grow while the network still learns.
    planned, cap, open_ended = p.get("epochs", "?"), p.get("max_epochs"), bool(p.get("until_converged"))
    capped = open_ended and planned == cap
    epoch_text = f"epoch {p.get('epoch', 0)}/{planned}"
    if open_ended:
        epoch_text += (
            " (ends once it stops learning)" if capped else f" (more only while it still learns, at most {cap})"
        )
    parts = [epoch_text, f"step {p.get('step', 0):,}/{p.get('total_steps', 0):,}"]
    if p.get("images_per_s"):
        parts.append(f"{p['images_per_s']:,.0f} img/s")
    if eta is not None:
        parts.append(f"at most {_duration(eta)} left" if capped else f"about {_duration(eta)} left")
    return " · ".join(parts)


def estimate_text(seconds: float, config: TrainConfig) -> str:
    """The Train page's answer to "Estimate time per epoch"."""
    epochs, open_ended = planned_epochs(config)
    per_epoch = f"About **{seconds:,.1f} s per epoch** (while nothing else trains)"
    if not open_ended:
        return f"{per_epoch}, so about {seconds * epochs / 60:,.1f} min for {epochs} epoch{'s' * (epochs != 1)}."
    if effective_schedule(config) == "cycles":
        first = min(FIRST_CYCLE, epochs)
        return (f"{per_epoch}. The run trains {first} epochs (about {seconds * first / 60:,.1f} min), then cycles "
                f"twice as long only while the network is still learning: at most {epochs} epochs "
                f"({seconds * epochs / 60:,.1f} min).")  # fmt: skip
    return (f"{per_epoch}. The run stops when validation stops improving, at most after {epochs} epochs "
            f"({seconds * epochs / 60:,.1f} min).")  # fmt: skip


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def curves(store: RunStore, runs: list[RunRecord]) -> None:
    """Loss and accuracy of the given runs: per epoch (train and val) and per step, overlaid when several."""
    if not runs:
        st.caption("Select one or more runs in the table to see their curves.")
        return
    names = {r.run_id: f"{r.name} ({r.run_id})" for r in runs}
    frame = store.metrics([r.run_id for r in runs], [*STEP_KEYS, *EPOCH_KEYS])
    if frame.empty:
        st.caption("No curves yet: the first values appear after the first logged steps.")
        return
    frame["run"] = frame["run_id"].map(names)
    per_epoch, per_step = st.tabs(["Per epoch", "Per step"])
    with per_epoch:
        _pair(frame, ("epoch_train_loss", "val_loss"), ("epoch_train_acc", "val_acc"), "epoch")
    with per_step:
        _pair(frame, ("train_loss",), ("train_acc",), "step")


def _pair(frame: pd.DataFrame, losses: tuple[str, ...], accs: tuple[str, ...], x: str) -> None:
    left, right = st.columns(2)
    loss, acc = frame[frame["key"].isin(losses)], frame[frame["key"].isin(accs)]
    if loss.empty and acc.empty:
        st.caption(f"No per-{x} values yet.")
        return
    left.plotly_chart(figures.run_curves(loss, "loss", x), width="stretch", key=f"loss_{x}")
    right.plotly_chart(figures.run_curves(acc, "accuracy", x), width="stretch", key=f"acc_{x}")


def any_active(runs: list[RunRecord]) -> bool:
    return any(r.status in ACTIVE_STATUSES for r in runs)


def runs_table(store: RunStore, runs: list[RunRecord]) -> pd.DataFrame:
    rows = [store.summary(r) for r in runs]
    table = pd.DataFrame(rows)[["run_id", "name", "status", "arch", "dataset", "best_val_acc", "wall_s", "error"]]
    table["dataset"] = table["dataset"].map(_short_dataset)
    return table if table["error"].notna().any() else table.drop(columns="error")


def _short_dataset(spec: str) -> str:
    if spec.startswith(("csv:", "json:")):
        return Path(spec.split(":", 1)[1].split("?", 1)[0]).parent.name or spec
    return spec if spec.startswith("sample:") else Path(spec).name


def config_view(run: RunRecord) -> None:
    st.code(json.dumps(run.config, indent=2, sort_keys=True, default=str), language="json")


TRAIN_PREFILL = "train_prefill"  # session key: a run's config to start the Train form from ("rerun with changes")


def run_actions(run: RunRecord, store: RunStore, registry: JobRegistry, ws: Workspace) -> None:
    """Resume, rerun with changes, download the best checkpoint, delete."""
    resume, rerun, download, delete = st.columns(4)
    resumable = run.status in RESUMABLE and train_run.checkpoint_path(ws, run.run_id, "last").is_file()
    why = (
        "continues from its last checkpoint with the same run id"
        if resumable
        else "only stopped runs with a checkpoint"
    )
    if resume.button("Resume", icon=":material/play_arrow:", disabled=not resumable, help=why, key="run_resume"):
        train_run.resume_training(registry, ws, run.run_id)
        st.rerun()
    if rerun.button("Rerun with changes", icon=":material/tune:", key="run_rerun",
                    help="opens the Train form filled in with this run's settings"):  # fmt: skip
        st.session_state[TRAIN_PREFILL] = dict(run.config)
        st.switch_page("app_pages/train.py")
    best = train_run.checkpoint_path(ws, run.run_id, "best")
    download.download_button("Download best checkpoint", data=best.read_bytes if best.is_file() else b"",
                             file_name=f"{run.name}-best.pt", disabled=not best.is_file(), on_click="ignore",
                             icon=":material/download:", help="a state dict; load it with torch.load(weights_only=True)")  # fmt: skip
    with delete.popover("Delete", icon=":material/delete:", disabled=run.status in ACTIVE_STATUSES):
        st.write(f"Delete **{run.name}** with its curves and checkpoints? This cannot be undone.")
        if st.button("Delete for good", type="primary", key="run_delete"):
            train_run.delete_run(store, ws, run.run_id)
            st.rerun()


def dataset_ref(run: RunRecord):
    """The run's dataset as a ref, or None when it cannot be opened any more (moved, deleted)."""
    from core.datasets.sources import resolve_dataset
    from ui.state import workspace

    try:
        return resolve_dataset(run.dataset, workspace())
    except (CoreError, OSError):
        return None
