"""Plotly figures for the pages. Pure functions of data frames: they draw nothing themselves."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from core.common.naming import natural_key
from core.common.words import split_word

SPLIT_COLOURS = {"train": "#4C78A8", "val": "#F58518", "test": "#54A24B", "unsplit": "#8C8C8C"}
MAX_SCATTER_POINTS = 5000


def class_balance(counts: pd.DataFrame) -> go.Figure:
    """Stacked bars: images per class, one colour per split (columns label, split, images)."""
    order = list(dict.fromkeys(counts["label"]))
    fig = px.bar(counts, x="label", y="images", color="split", color_discrete_map=SPLIT_COLOURS,
                 category_orders={"label": order, "split": list(SPLIT_COLOURS)})  # fmt: skip
    fig.update_layout(xaxis_title="class", yaxis_title="images", legend_title="split", bargap=0.15,
                      margin=dict(t=30, b=10, l=10, r=10), height=360)  # fmt: skip
    fig.update_xaxes(type="category")
    return fig


def image_sizes(manifest: pd.DataFrame) -> go.Figure:
    """Width against height, one dot per image (sampled above 5,000), with histograms at the margins."""
    data = manifest.sample(MAX_SCATTER_POINTS, random_state=0) if len(manifest) > MAX_SCATTER_POINTS else manifest
    fig = px.scatter(data, x="width", y="height", hover_data=["path", "label"], opacity=0.5,
                     marginal_x="histogram", marginal_y="histogram")  # fmt: skip
    fig.update_layout(height=420, margin=dict(t=30, b=10, l=10, r=10))
    return fig


def counts_bar(table: pd.DataFrame, column: str) -> go.Figure:
    fig = px.bar(table, x=column, y="images", text="images")
    fig.update_layout(height=260, margin=dict(t=20, b=10, l=10, r=10))
    fig.update_xaxes(type="category")
    return fig


def file_sizes(manifest: pd.DataFrame) -> go.Figure:
    kb = manifest.assign(kb=manifest["bytes"] / 1024)
    fig = px.histogram(kb, x="kb", nbins=40, labels={"kb": "file size (KB)"})
    fig.update_layout(height=260, margin=dict(t=20, b=10, l=10, r=10), yaxis_title="images")
    return fig


def projection(frame: pd.DataFrame, method: str) -> go.Figure:
    """The 2-D view: one dot per image coloured by class; hover shows the file and its class."""
    fig = px.scatter(frame, x="x", y="y", color="label", hover_name="path", hover_data={"x": False, "y": False},
                     category_orders={"label": list(dict.fromkeys(sorted(frame["label"], key=natural_key)))})  # fmt: skip
    fig.update_traces(marker=dict(size=6, opacity=0.75))
    axis = "component" if method == "pca" else "t-SNE"
    fig.update_layout(height=520, margin=dict(t=30, b=10, l=10, r=10), legend_title="class",
                      xaxis_title=f"{axis} 1", yaxis_title=f"{axis} 2", dragmode="lasso")  # fmt: skip
    return fig


# Distinct colours per run: Streamlit's theme would draw the first two runs in two shades of blue.
RUN_COLOURS = px.colors.qualitative.D3


def run_curves(frame: pd.DataFrame, what: str, x: str, *, log: bool = False) -> go.Figure:
    """Lines of one quantity (loss or accuracy) against step or epoch: colour = run, dash = train/validation.

    A ``raw`` column (from :func:`smoothed`) adds the unsmoothed values as faint lines under the smooth ones.
    """
    data = frame.assign(curve=frame["key"].map(_curve_name))
    fig = px.line(data, x="step", y="value", color="run", line_dash="curve", markers=x == "epoch",
                  color_discrete_sequence=RUN_COLOURS, labels={"step": x, "value": what, "curve": "", "run": "run"})  # fmt: skip
    if "raw" in data:
        _faint_raw(fig, data)
    fig.update_layout(height=320, margin=dict(t=30, b=10, l=10, r=10), title=dict(text=what, x=0.02),
                      legend=dict(orientation="h", y=-0.25, title_text=""))  # fmt: skip
    if x == "epoch":
        last = int(data["step"].max()) if len(data) else 1
        fig.update_xaxes(tickmode="linear", tick0=1, dtick=max(1, -(-last // 12)), range=[0.6, last + 0.4])
    else:
        fig.update_xaxes(rangemode="nonnegative", tickformat=",d")
    if what == "accuracy":
        fig.update_yaxes(tickformat=".2~%")
    if log:
        fig.update_yaxes(type="log")
    return fig


def _faint_raw(fig: go.Figure, data: pd.DataFrame) -> None:
    colours = {t.name: t.line.color for t in fig.data}
    for (run, curve), part in data.groupby(["run", "curve"], sort=False):
        name = f"{run}, {curve}" if f"{run}, {curve}" in colours else run
        fig.add_trace(go.Scatter(x=part["step"], y=part["raw"], mode="lines", showlegend=False, hoverinfo="skip",
                                 line=dict(width=1, color=colours.get(name, "#999999")), opacity=0.25))  # fmt: skip


def smoothed(frame: pd.DataFrame, weight: float) -> pd.DataFrame:
    """Per-step values smoothed by an exponential moving average per run and key (TensorBoard's rule, with its
    start-up bias corrected); the raw values are kept in a ``raw`` column."""
    if weight <= 0 or frame.empty:
        return frame
    parts = []
    for _, part in frame.sort_values("step").groupby(["run_id", "key"], sort=False):
        ema = part["value"].ewm(alpha=1 - weight, adjust=True, ignore_na=True).mean()
        parts.append(part.assign(raw=part["value"], value=ema))
    return pd.concat(parts, ignore_index=True)


def learning_rate(frame: pd.DataFrame) -> go.Figure:
    """The learning rate at each step, one line per run: where the schedule warmed up, peaked, restarted."""
    fig = px.line(frame, x="step", y="value", color="run", color_discrete_sequence=RUN_COLOURS,
                  labels={"step": "step", "value": "learning rate", "run": "run"})  # fmt: skip
    fig.update_layout(height=240, margin=dict(t=30, b=10, l=10, r=10), title=dict(text="learning rate", x=0.02),
                      legend=dict(orientation="h", y=-0.35, title_text=""))  # fmt: skip
    fig.update_xaxes(rangemode="nonnegative", tickformat=",d")
    return fig


def _curve_name(key: str) -> str:
    return split_word("val") if key.startswith("val_") else split_word("train")
