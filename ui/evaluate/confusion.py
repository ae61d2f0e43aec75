"""The confusion matrix as a scatter of squares (a plotly heatmap's cells report no clicks in Streamlit): a
click on a square, or a pick in the list beside it, shows the images behind that cell."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.evaluate.evaluation import Evaluation
from core.evaluate.metrics import confusion_view
from core.evaluate.mistakes import cell_images
from core.evaluate.words import pct
from ui.state import workspace
from ui.text import plain

CHART = "evaluate_matrix"  # the chart's selection state
CELL = "evaluate_cell"  # the chosen cell: "true\x1fpredicted"
EMPTY = "evaluate_cell_empty"  # a click on an empty square: which one (nothing to show)
SEP = "\x1f"
CELL_IMAGES = 24
COLUMNS = 6


def figure(labels: list[str], matrix: np.ndarray) -> go.Figure:
    """One square per (true, predicted) pair: blue on the diagonal (right), red elsewhere (mistakes); the colour's
    strength is the share of the true class's images; the number is how many."""
    n = len(labels)
    totals = np.maximum(matrix.sum(1, keepdims=True), 1)
    share = matrix / totals
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    counts, shares = matrix.ravel(), share.ravel()
    colours = [_colour(int(c), float(s), i == j) for c, s, i, j in zip(counts, shares, ii, jj, strict=True)]
    cell = max(16, min(60, 600 // max(n, 1)))  # px per square; the figure is drawn at exactly this size
    longest = max((len(label) for label in labels), default=1)
    tilt = longest * 7 > cell
    margin = min(200, 12 + 7 * longest)  # room for the class names
    size = cell * n
    fig = go.Figure(go.Scatter(
        x=[labels[j] for j in jj], y=[labels[i] for i in ii], mode="markers+text",
        marker=dict(symbol="square", size=cell - 3, color=colours, line=dict(width=1, color="#d0d0d0")),
        text=[str(int(c)) if c else "" for c in counts], textfont=dict(color=[
            "white" if s > 0.55 and c else "#222" for c, s in zip(counts, shares, strict=True)], size=max(9, cell // 3)),
        customdata=[[labels[i], labels[j], int(c), float(s), "image" if c == 1 else "images"]
                    for i, j, c, s in zip(ii, jj, counts, shares, strict=True)],
        hovertemplate="true %{customdata[0]}, said %{customdata[1]}: %{customdata[2]} %{customdata[4]} "
        "(%{customdata[3]:.0%} of %{customdata[0]})<extra>click to see them</extra>",
        unselected=dict(marker=dict(opacity=0.55)),  # the chosen square stands out, the others stay readable
    ))  # fmt: skip
    top = margin if tilt else 50
    fig.update_layout(width=size + margin + 40, height=size + top + 10, showlegend=False, plot_bgcolor="white",
                      margin=dict(t=top, b=10, l=margin + 30, r=10), dragmode=False, clickmode="event+select")  # fmt: skip
    fig.update_xaxes(title="what the model said", type="category", categoryorder="array", categoryarray=labels,
                     side="top", showgrid=False, tickangle=-60 if tilt else 0, range=[-0.5, n - 0.5])  # fmt: skip
    fig.update_yaxes(title="true class", type="category", categoryorder="array", categoryarray=labels,
                     range=[n - 0.5, -0.5], showgrid=False)  # fmt: skip
    return fig


def _colour(count: int, share: float, diagonal: bool) -> str:
    if not count:
        return "rgba(255,255,255,1)"
    if diagonal:
        return f"rgba(76,120,168,{0.15 + 0.85 * share:.2f})"
    return f"rgba(228,87,86,{0.3 + 0.7 * share:.2f})"  # a single mistake must still catch the eye


def _picked_on_chart() -> None:
    """The chart's click, written into the list's choice (a callback, so the list shows it on this rerun)."""
    state = st.session_state.get(CHART)
    points = state.selection.points if state is not None else []
    if not points:
        return
    true, said, count = points[0]["customdata"][:3]
    if count:
        st.session_state[CELL] = f"{true}{SEP}{said}"
        st.session_state.pop(EMPTY, None)
    else:
        st.session_state[EMPTY] = (true, said)


def matrix(ev: Evaluation) -> None:
    labels, counts = confusion_view(ev.metrics)
    st.subheader("Where does it go wrong? Click a square to see its images")
    if len(labels) < ev.metrics.n_classes:
        st.caption(f"The {len(labels)} classes involved in the most mistakes, of {ev.metrics.n_classes:,}.")
    st.caption(
        "Rows: the true class. Columns: what the model said. Blue squares on the diagonal are right "
        "answers; red squares are mistakes. The stronger the colour, the larger the share of the row."
    )
    st.plotly_chart(figure(labels, counts), key=CHART, on_select=_picked_on_chart, selection_mode="points",
                    width="content", config={"displayModeBar": False})  # fmt: skip
    options = _cells(labels, counts)
    pick, _ = st.columns([2, 3])
    pick.selectbox("Show the images of", list(options), index=None, key=CELL, format_func=options.get,
                   placeholder="click a square above, or pick one here")  # fmt: skip
    empty = st.session_state.get(EMPTY)
    if empty and not st.session_state.get(CELL):
        st.caption(f"No {plain(empty[0])} image was called {plain(empty[1])}.")
    chosen = st.session_state.get(CELL)
    if chosen:
        true, said = chosen.split(SEP)
        _cell_gallery(ev, true, said)


def _cells(labels: list[str], counts: np.ndarray) -> dict[str, str]:
    """Non-empty cells, mistakes first (most first), then the right answers."""
    rows = [
        (int(counts[i, j]), i == j, a, b) for i, a in enumerate(labels) for j, b in enumerate(labels) if counts[i, j]
    ]
    rows.sort(key=lambda r: (r[1], -r[0], r[2], r[3]))
    return {f"{a}{SEP}{b}": (f"{a}, right: {c}" if right else f"{a} called {b}: {c}") + f" image{'s' if c != 1 else ''}"
            for c, right, a, b in rows}  # fmt: skip


def _cell_gallery(ev: Evaluation, true: str, said: str) -> None:
    from core.datasets.thumbs import thumbnail_files

    rows = cell_images(ev.frame, true, said)
    # "1 image of class “7” the model called “8”": a class named by a number must not read as a count.
    noun = "image" if len(rows) == 1 else "images"
    what = (f"{noun} of class “{plain(true)}” the model got right" if true == said
            else f"{noun} of class “{plain(true)}” the model called “{plain(said)}”")  # fmt: skip
    st.markdown(f"**{len(rows):,} {what}**, most confident first")
    if ev.root is None:
        st.info(f"{plain(ev.root_problem)} The images cannot be shown.")
        return
    shown = rows.head(CELL_IMAGES)
    leaking = set(ev.leaks.leaking) if ev.leaks is not None else set()
    ws = workspace()
    thumbs = thumbnail_files([ev.root / p for p in shown["image"]], ws.cache, 160)
    for start in range(0, len(shown), COLUMNS):
        for cell, row, thumb in zip(st.columns(COLUMNS), shown.iloc[start : start + COLUMNS].itertuples(),
                                    thumbs[start : start + COLUMNS], strict=False):  # fmt: skip
            with cell:
                if isinstance(thumb, Exception):
                    st.caption(f":red[cannot be shown: {plain(getattr(thumb, 'reason', thumb))}]")
                else:
                    st.image(str(thumb), width="stretch")
                st.caption(f"{pct(row.p1)} sure · {plain(row.image)}" + (" · has a copy in training" if row.image in leaking
                                                                     else ""))  # fmt: skip
    if len(rows) > CELL_IMAGES:
        st.caption(f"The first {CELL_IMAGES} of {len(rows):,}; the report and the predictions table list them all.")
