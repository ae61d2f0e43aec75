"""The comparison table (``core.experiments.compare``) on a page: in words, filtered, sorted, charted, downloaded.

Shared by the Compare page (every training run) and the Search page (one search's trials). Numbers stay numbers
(the table sorts them when a header is clicked, and the CSV keeps them exact); the column settings format them.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.common.percent import percent
from core.common.untrusted import spreadsheet_csv
from core.common.words import duration, status_word
from core.experiments.compare import COLUMNS, RESULTS, compare_table
from core.store.records import RunRecord
from core.store.runs import RunStore
from ui.common import value_word
from ui.figures import RUN_COLOURS
from ui.state import dataset_title, workspace

CHOICES = ("arch", "optimizer", "freeze", "augment")  # the settings shown in words (core.common.words)
PERCENT = ("best_val_acc", "test_accuracy", "test_accuracy_clean")
# Results first: they are what a person compares; the settings that explain them follow.
SHOWN = ["run_id", "name", "status", "family", "best_val_acc", "test_accuracy", "test_accuracy_clean", "n_leaking",
         "arch", "optimizer", "lr", "batch_size", "epochs", "freeze", "image_size", "augment", "wall_s", "images_per_s"]  # fmt: skip
# Settings a chart can put against a result; categories are drawn as their words.
CHART_SETTINGS = {k: COLUMNS[k] for k in ("lr", "batch_size", "epochs", "image_size", "optimizer", "arch", "freeze",
                                           "augment")}  # fmt: skip
CHART_RESULTS = {k: COLUMNS[k] for k in RESULTS}


@st.cache_data(show_spinner=False, ttl=2)
def _table(_store: RunStore, ids: tuple[int, ...], stamp: tuple, leaks: str, root: str) -> pd.DataFrame:
    # Cached for the runs as they are now (status, end): a page rerun does not re-read every predictions file.
    # ``root`` (the workspace) is in the key: run ids and their stamps repeat in a copied workspace.
    runs = [r for r in (_store.list_runs(kind="train")) if r.run_id in set(ids)]
    order = {run_id: i for i, run_id in enumerate(ids)}
    return compare_table(_store, workspace(), sorted(runs, key=lambda r: order[r.run_id]), leaks=leaks)


def table(store: RunStore, runs: list[RunRecord], leaks: str = "cached") -> pd.DataFrame:
    """The comparison rows of ``runs`` (numbers as numbers), cached while nothing about them changes."""
    stamp = tuple((r.run_id, r.status, r.ended_at) for r in runs)
    if any(r.status in ("queued", "running") for r in runs):  # scores grow while runs train: read them fresh
        return compare_table(store, workspace(), runs, leaks=leaks)
    return _table(store, tuple(r.run_id for r in runs), stamp, leaks, str(workspace().root))


def in_words(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as a person reads them: statuses, networks and choices in words, datasets by their titles."""
    out = frame.copy()
    out["status"] = out["status"].map(status_word)
    out["dataset"] = out["dataset"].map(dataset_title)
    for column in CHOICES:
        out[column] = out[column].map(lambda v, c=column: value_word(c, v) if isinstance(v, str) else v)
    for column in ("family", "arch", "optimizer", "freeze", "augment"):
        out[column] = out[column].fillna("—")  # a setting an older run left automatic: not recorded as resolved
    return out


def column_config() -> dict:
    """Column titles in words; the numbers' formats come with the table (:func:`_formatted`)."""
    config: dict = {k: COLUMNS[k] for k in COLUMNS}
    config["wall_s"] = "Time"
    for hidden in ("parent_id", "search_id", "trial", "dataset"):
        config[hidden] = None
    return config


FORMATS = {**{k: lambda v: percent(v, 1) for k in PERCENT}, "lr": "{:.3g}", "images_per_s": "{:,.0f}", "n_leaking": "{:.0f}",
           "batch_size": "{:.0f}", "epochs": "{:.0f}", "image_size": "{:.0f}", "wall_s": lambda s: duration(s)}  # fmt: skip


def _formatted(shown: pd.DataFrame, best: int | None):
    """The table as people read it: numbers formatted ("97.4%", "1 min 05 s"), "—" where a value is not known
    (Streamlit would write "None"), the best run highlighted. The "Sort by" choice sorted the numbers before."""
    text = shown.copy()
    for column, form in FORMATS.items():
        if column in text:
            text[column] = [_format(form, v) for v in shown[column]]
    return text.style.apply(_highlight(best), axis=1) if best is not None else text


def _format(form: Any, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return form(value) if callable(form) else form.format(value)


def filters(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Filters on what differs between the rows (dataset, part of, network, optimizer, status) and a sort; returns
    the rows kept, sorted."""
    offered = {c: sorted({v for v in frame[c] if isinstance(v, str) and (v or c == "family")}) for c in FILTERS}
    offered = {c: v for c, v in offered.items() if len(v) > 1}  # a filter with one value would filter nothing
    cols = st.columns([2] * len(offered) + [3] + [2] * (5 - len(offered)))
    kept = frame
    for col, (column, values) in zip(cols, offered.items(), strict=False):
        chosen = col.multiselect(FILTERS[column], values, key=f"{key}_{column}", placeholder="all",
                                 format_func=lambda v, c=column: _filter_word(c, v))  # fmt: skip
        if chosen:
            kept = kept[kept[column].isin(chosen)]
    by = cols[len(offered)].selectbox("Sort by", ["run_id", *RESULTS], key=f"{key}_sort",
                                      format_func=lambda k: "Newest first" if k == "run_id" else
                                      f"{COLUMNS[k]} (best first)" if k in PERCENT else COLUMNS[k])  # fmt: skip
    ascending = by in ("wall_s",)
    return kept.sort_values(by, ascending=ascending, na_position="last", kind="stable")


FILTERS = {"dataset": "Dataset", "family": "Part of", "arch": "Network", "optimizer": "Optimizer", "status": "Status"}


def _filter_word(column: str, value: str) -> str:
    if column == "dataset":
        return dataset_title(value)
    if column == "status":
        return status_word(value)
    if column == "family" and not value:
        return "on its own"
    return value_word(column, value) if column in CHOICES else value


def show(frame: pd.DataFrame, key: str, *, best: int | None = None, select: bool = True,
         notes: dict[int, str] | None = None) -> list[int]:  # fmt: skip
    """The table in words (``best``: a run id marked and highlighted; ``notes``: words beside some runs, e.g. a
    search's trials at chance); returns the run ids ticked."""
    words = in_words(frame)
    if best is not None:
        words.insert(0, "best", ["★ best" if r == best else "" for r in words["run_id"]])
    if notes:
        words["note"] = [notes.get(r, "") for r in words["run_id"]]  # shown after the status
    config = {**column_config(), "best": st.column_config.TextColumn("", width="small"), "note": "Note"}
    order = ["best", *SHOWN[:3], "note", *SHOWN[3:], "parent_id", "search_id", "trial"]  # SHOWN[:3]: run, name, status
    shown = words[[c for c in order if c in words]]
    event = st.dataframe(_formatted(shown, best), hide_index=True, width="stretch", key=key, column_config=config,
                         on_select="rerun" if select else "ignore", selection_mode="multi-row")  # fmt: skip
    rows = event.selection.rows if select and event else []
    return [int(shown.iloc[i]["run_id"]) for i in rows]


def _highlight(best: int | None):
    def style(row: pd.Series) -> list[str]:
        return ["background-color: rgba(84, 162, 75, 0.22)" if row["run_id"] == best else ""] * len(row)

    return style


def table_csv(frame: pd.DataFrame) -> bytes:
    """The table as CSV, headers in words, numbers unformatted, safe to open in a spreadsheet (a dataset or run
    name may start with "=")."""
    return spreadsheet_csv(in_words(frame)[list(COLUMNS)].rename(columns=COLUMNS)).encode()


def download(frame: pd.DataFrame, name: str, key: str) -> None:
    st.download_button("Download as CSV", table_csv(frame), file_name=name, mime="text/csv",
                       icon=":material/download:", key=key, on_click="ignore")  # fmt: skip


def settings_chart(frame: pd.DataFrame, key: str) -> None:
    """Settings against a result: every run as a line through its settings (parallel coordinates), or one
    setting against the result as dots."""
    done = frame[frame[list(PERCENT)].notna().any(axis=1)]  # a score, not only a time (runs still training)
    if len(done) < 2:
        st.caption("The chart of settings against results appears once two runs have a score.")
        return
    left, mid, right = st.columns([2, 2, 3])
    result = left.selectbox("Result", list(CHART_RESULTS), format_func=CHART_RESULTS.get, key=f"{key}_result")
    view = mid.segmented_control("View", ["lines", "dots"], default="lines", key=f"{key}_view",
                                 format_func={"lines": "All settings", "dots": "One setting"}.get) or "lines"  # fmt: skip
    done = done[done[result].notna()]
    if len(done) < 2:
        st.caption(f"Fewer than two runs have a {CHART_RESULTS[result].lower()} yet.")
        return
    varied = [s for s in CHART_SETTINGS if done[s].nunique(dropna=True) > 1] or ["lr"]
    if view == "dots":
        setting = right.selectbox("Setting", varied, format_func=CHART_SETTINGS.get, key=f"{key}_setting")
        st.plotly_chart(_dots(in_words(done), setting, result), width="stretch", key=f"{key}_dots")
    else:
        st.plotly_chart(_lines(in_words(done), varied, result), width="stretch", key=f"{key}_lines")


def _lines(frame: pd.DataFrame, settings: list[str], result: str) -> go.Figure:
    dims = [_dimension(frame, s) for s in settings]
    values = frame[result].astype(float)
    dims.append({"label": CHART_RESULTS[result], "values": values, "tickformat": ".2~%" if result in PERCENT else ""})
    bar = {"title": {"text": ""}, "tickformat": ".2~%" if result in PERCENT else ""}
    line = {"color": values, "colorscale": "Viridis", "showscale": True, "colorbar": bar}
    fig = go.Figure(go.Parcoords(dimensions=dims, line=line))
    fig.update_layout(height=380, margin=dict(t=60, b=30, l=60, r=60))
    return fig


def _dimension(frame: pd.DataFrame, setting: str) -> dict:
    values = frame[setting]
    if values.map(lambda v: isinstance(v, str)).any() or values.isna().all():  # categories: numbered, named
        names = sorted({str(v) for v in values.fillna("automatic")})
        codes = values.fillna("automatic").astype(str).map(names.index)
        return {"label": CHART_SETTINGS[setting], "values": codes, "tickvals": list(range(len(names))),
                "ticktext": names}  # fmt: skip
    numbers = values.astype(float)
    if setting == "lr" and (numbers > 0).all():  # rates span decades: a log axis, labelled in rates
        logs = numbers.map(math.log10)
        ticks = list(range(math.floor(logs.min()), math.ceil(logs.max()) + 1))
        return {"label": CHART_SETTINGS[setting], "values": logs, "tickvals": ticks,
                "ticktext": [f"{10**t:g}" for t in ticks]}  # fmt: skip
    return {"label": CHART_SETTINGS[setting], "values": numbers}


def _dots(frame: pd.DataFrame, setting: str, result: str) -> go.Figure:
    fig = go.Figure()
    for i, (optimizer, part) in enumerate(frame.groupby(frame["optimizer"].fillna("automatic"), sort=True)):
        fig.add_trace(go.Scatter(x=part[setting], y=part[result], mode="markers", name=str(optimizer),
                                 marker=dict(size=11, color=RUN_COLOURS[i % len(RUN_COLOURS)]),
                                 text=[f"run {r}" for r in part["run_id"]], hovertemplate="%{text}: %{y}"))  # fmt: skip
    fig.update_layout(height=360, margin=dict(t=30, b=10, l=10, r=10), xaxis_title=CHART_SETTINGS[setting],
                      yaxis_title=CHART_RESULTS[result], legend_title="Optimizer")  # fmt: skip
    if setting == "lr":
        fig.update_xaxes(type="log")
    if result in PERCENT:
        fig.update_yaxes(tickformat=".2~%")
    return fig


LEAK_HELP = ("Fills the column \"Test accuracy without leaking images\": test images with a copy among a run's "
             "training images are set apart (perceptual hashes, every match checked on pixels). Takes a pass over "
             "each dataset's images once; later views read the stored fingerprints.")  # fmt: skip


def check_leaks(store: RunStore, runs: list[RunRecord]) -> None:
    """Fingerprint the runs' datasets (cached in the workspace) so the table can show the leak-free scores."""
    compare_table(store, workspace(), runs, leaks="compute")
    _table.clear()  # the rows cached without the check


def unchecked_datasets(ws, runs: list[RunRecord]) -> list[str]:
    """The datasets of finished runs whose images were never fingerprinted (their leak column is empty)."""
    from core.experiments.compare import checkable_datasets

    return checkable_datasets(ws, runs)
