"""The Scaling page's parts: the form that starts a sweep (a background job), its progress, and the tables,
charts and plain-words reading of the stored points."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.common.cpu import usable_cores
from core.common.untrusted import spreadsheet_csv
from core.common.words import duration
from core.scaling.points import TASK_WORDS, sweep_task
from core.scaling.reading import reading
from core.scaling.sweep import SweepConfig, submit_sweep
from core.scaling.tables import Table
from core.store.records import group_words
from core.store.runs import RunStore
from core.train.jobs import Job, JobRegistry
from ui.common import count_of
from ui.state import dataset_title, workspace
from ui.text import plain

KINDS = {"prep": "Preparing the data", "train": "Training: threads", "ddp": "Training: processes (distributed)"}
TASKS = TASK_WORDS
COLUMNS = {"workers": "Workers", "threads_per_worker": "Threads each", "time_s": "Time (s)", "speedup": "Speedup",
           "efficiency": "Efficiency", "serial_fraction": "Serial fraction", "images_per_s": "Images per second",
           "repeats": "Repeats", "oversubscribed": "Oversubscribed"}  # fmt: skip


def sweep_form(dataset: str, registry: JobRegistry, store: RunStore) -> None:
    """What to time and with how many workers; starts the sweep as a background job."""
    cores = usable_cores()
    left, middle, right = st.columns([2, 2, 1])
    kind = left.selectbox("What to time", list(KINDS), format_func=KINDS.get, key="sweep_kind")
    options = sorted({1, 2, cores, 2 * cores, 4})
    workers = middle.multiselect("Workers", options, default=[n for n in (1, 2) if n <= max(2, cores)],
                                 key="sweep_workers", help="Processes, threads or ranks to compare; 1 is the "
                                 "baseline every speedup is measured against.")  # fmt: skip
    repeats = right.number_input("Repeats", 1, 9, 3, key="sweep_repeats", help="Each setting is timed this often "
                                 "(interleaved); the tables show the median.")  # fmt: skip
    config = SweepConfig(kind=kind, dataset=dataset, workers=list(workers), repeats=int(repeats))
    with st.expander("More settings"):
        _more(config, cores)
    if config.threads_per_worker and max(workers or [1]) * config.threads_per_worker > cores:
        st.warning(f"{max(workers)} workers x {config.threads_per_worker} threads is more than this machine's {cores} "
                   "cores: those points will be slower and are marked oversubscribed.", icon=":material/warning:")  # fmt: skip
    if st.button("Start the sweep", type="primary", icon=":material/play_arrow:", key="sweep_start",
                 disabled=not workers):  # fmt: skip
        start_sweep(config, registry, store)
        st.rerun()


def _more(config: SweepConfig, cores: int) -> None:
    a, b, c = st.columns(3)
    config.threads_per_worker = int(a.number_input(
        "Threads per worker (0: cores / workers)", 0, 4 * cores, 0, key="sweep_threads",
        help="More than cores / workers oversubscribes the machine, on purpose only."))  # fmt: skip
    if config.kind == "prep":
        config.mode = b.radio("Workers are", ["processes", "threads"], horizontal=True, key="sweep_mode")
        config.task = c.radio("Task", list(TASKS), format_func=TASKS.get, key="sweep_task")
    elif config.kind == "train":
        config.steps = int(b.number_input("Timed steps per point", 5, 500, 30, key="sweep_steps"))
    else:
        config.epochs = int(b.number_input("Epochs per point", 1, 20, 1, key="sweep_epochs"))


def start_sweep(config: SweepConfig, registry: JobRegistry, store: RunStore) -> int:
    """The command line's sweep, queued on the page's registry (``core.scaling.sweep.submit_sweep``)."""
    return submit_sweep(registry, workspace(), config)


def sweeps_running(registry: JobRegistry, store: RunStore) -> bool:
    """A progress line per running sweep, with its ETA and a stop button; True while one runs."""
    jobs = [j for j in registry.active() if store.get_run(j.run_id).kind == "sweep"]
    for job in jobs:
        _sweep_row(job, registry)
    return bool(jobs)


def _sweep_row(job: Job, registry: JobRegistry) -> None:
    p = job.progress()
    done, total = p.step, p.total_steps
    eta = job.eta_s()
    text = f"Sweep {job.run_id}: point {min(done + 1, total)} of {total} · {p.message or 'starting'}"
    if eta is not None:
        text += f" · about {duration(eta)} left"
    left, right = st.columns([5, 1], vertical_alignment="center")
    left.progress(done / total if total else 0.0, text=text)
    if right.button("Stop", key=f"sweep_stop_{job.run_id}", icon=":material/stop:"):
        registry.cancel(job.run_id)


def table_view(table: Table, store: RunStore) -> None:
    """The report's table (workers, time, speedup, efficiency) plus serial fraction and throughput, the charts,
    the reading in words and a CSV."""
    title = KINDS["ddp"] if table.mode == "ddp" else KINDS.get(table.kind, table.kind)
    task = sweep_task(store, table.group)
    st.markdown(f"**{title}**{f' ({task})' if task else ''} · {group_words(table.group)} · workers are {table.mode}")
    frame = pd.DataFrame([r.to_json() for r in table.rows])
    shown = frame[list(COLUMNS)].rename(columns=COLUMNS)
    st.dataframe(_words(shown), hide_index=True, width="stretch")
    for sentence in reading(table):
        st.markdown(f"- {sentence}")
    for note in table.notes:
        st.caption(note[0].upper() + note[1:] + ".")
    left, right = st.columns(2)
    left.plotly_chart(time_chart(table), key=f"time_{table.group}_{table.mode}")
    right.plotly_chart(speedup_chart(table), key=f"speedup_{table.group}_{table.mode}")
    st.download_button("Download this table (CSV)", spreadsheet_csv(frame), file_name=f"{table.group}.csv",
                       key=f"csv_{table.group}_{table.mode}", icon=":material/download:", on_click="ignore")  # fmt: skip


def _words(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as people read them; "—" where a value does not exist (speedup without a one-worker point)."""
    out = frame.copy()
    for column, fmt in (("Time (s)", "{:.2f}"), ("Speedup", "{:.2f}x"), ("Efficiency", "{:.0%}"),
                        ("Serial fraction", _serial_words), ("Images per second", "{:,.0f}")):  # fmt: skip
        out[column] = [(fmt(v) if callable(fmt) else fmt.format(v)) if v is not None and v == v else "—"
                       for v in frame[column]]  # fmt: skip
    out["Oversubscribed"] = ["yes: more threads than cores" if v else "" for v in frame["Oversubscribed"]]
    return out


def _serial_words(fraction: float) -> str:
    """Karp-Flatt's serial fraction as a share; above 1 (more workers took longer than one) it is not a share of
    anything, so it says that instead of "2.75"."""
    return f"{fraction:.0%}" if fraction <= 1 else "over 100%: slower than one worker"


def time_chart(table: Table) -> go.Figure:
    fair = [r for r in table.rows if not r.oversubscribed]
    fig = go.Figure()
    fig.add_scatter(x=[r.workers for r in fair], y=[r.time_s for r in fair], mode="lines+markers", name="measured",
                    error_y=dict(type="data", symmetric=False, array=[r.time_max - r.time_s for r in fair],
                                 arrayminus=[r.time_s - r.time_min for r in fair]))  # fmt: skip
    crowded = [r for r in table.rows if r.oversubscribed]
    if crowded:
        fig.add_scatter(x=[r.workers for r in crowded], y=[r.time_s for r in crowded], mode="markers",
                        name="oversubscribed", marker=dict(symbol="x", size=11, color="#d62728"))  # fmt: skip
    t1 = next((r.time_s for r in table.rows if r.workers == 1), None)
    if t1 is not None:
        ns = sorted({r.workers for r in table.rows})
        fig.add_scatter(x=ns, y=[t1 / n for n in ns], mode="lines", name="ideal (T1 / n)", line=dict(dash="dot"))
    _layout(fig, "time (s)")
    return fig


def speedup_chart(table: Table) -> go.Figure:
    fig = go.Figure()
    rows = [r for r in table.rows if r.speedup is not None and not r.oversubscribed]
    ns = sorted({r.workers for r in table.rows})
    fig.add_scatter(x=[r.workers for r in rows], y=[r.speedup for r in rows], mode="lines+markers", name="measured")
    fig.add_scatter(x=ns, y=ns, mode="lines", name="ideal", line=dict(dash="dot"))
    if table.amdahl_serial is not None:
        f = table.amdahl_serial
        fig.add_scatter(x=ns, y=[1 / (f + (1 - f) / n) for n in ns], mode="lines", name=f"Amdahl, serial {f:.0%}",
                        line=dict(dash="dash"))  # fmt: skip
    _layout(fig, "speedup (x)")
    return fig


def _layout(fig: go.Figure, y: str) -> None:
    fig.update_layout(height=300, margin=dict(t=20, b=10, l=10, r=10), xaxis_title="workers", yaxis_title=y,
                      legend=dict(orientation="h", y=-0.3))  # fmt: skip
    fig.update_xaxes(tickmode="linear", dtick=1, rangemode="tozero")


def intro(dataset: str) -> str:
    return (f"Time the same work on **{plain(dataset_title(dataset))}** with 1, 2, ... workers; every point is stored as "
            f"a run, so the tables below are built from the run store. This machine has "
            f"{count_of(usable_cores(), 'core')}.")  # fmt: skip
