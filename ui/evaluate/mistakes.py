"""The most confidently wrong images with the heat map of what the model looked at, the reliability diagram, and
the report download."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.common.errors import CoreError
from core.common.words import split_word
from core.common.workspace import Workspace
from core.evaluate.calibration import Calibration
from core.evaluate.evaluation import Evaluation
from core.evaluate.mistakes import Explained, enlarged, explain_rows, overlay_of, unexplained, worst_images
from core.evaluate.words import calibration_sentence, pct
from core.explain.words import describe_layer
from core.store.runs import RunStore
from ui.text import plain

PER_ROW = 3


@st.cache_resource(show_spinner=False, max_entries=8)
def _explained(
    run_id: int, split: str, stamp: tuple, root: str, _ws: Workspace, _store: RunStore, _ev: Evaluation
) -> list[Explained]:
    worst = worst_images(_ev.frame)
    try:
        return explain_rows(_ws, _store, _ev, worst)
    except CoreError as exc:
        return unexplained(worst, f"No heat map: {_ws.redact(str(exc))}")


def explained(ws: Workspace, store: RunStore, ev: Evaluation) -> list[Explained]:
    stamp = (len(ev.frame), float(ev.frame["loss"].sum()), ev.predictions.meta.get("made"))
    with st.spinner("Drawing what the model looked at in its worst mistakes..."):
        # The workspace is in the key: run ids repeat across workspaces.
        return _explained(ev.run.run_id, ev.split, stamp, str(ws.root), ws, store, ev)


def worst(items: list[Explained], ev: Evaluation, ws: Workspace) -> None:
    leaking = set(ev.leaks.leaking) if ev.leaks is not None else set()
    st.subheader("Its most confident mistakes, and what it looked at")
    if not items:
        st.success(f"No mistakes on the {split_word(ev.split)} images.", icon=":material/check_circle:")
        return
    suspects = _suspects(ws, ev)
    layer = next((i for i in items if i.layer), None)
    st.caption("The images it got wrong while most sure, worst first. Beside each, where the evidence for the "
               "class it chose lies (red: the most).")  # fmt: skip
    if layer is not None:
        st.caption(describe_layer(layer.layer, layer.map_size, layer.input_size))
    for start in range(0, len(items), PER_ROW):
        for cell, item in zip(st.columns(PER_ROW), items[start : start + PER_ROW], strict=False):
            with cell.container(border=True):
                _one(item, item.image in leaking, suspects.get(item.image))


def _suspects(ws: Workspace, ev: Evaluation) -> dict[str, str]:
    """The split's mistakes whose label a stored label check of the run's dataset doubts (image -> suggested
    class), said in one sentence with the way to the check; empty when the dataset was never checked."""
    from core.labels.probabilities import stored_checks
    from ui.duplicates.labels import checked

    found = stored_checks(ws, ev.run.dataset)  # newest first; read and ranked once per file (cached)
    issues = next((i for run_id, mode, _ in found if (i := checked(ev.run.dataset, run_id, mode)[1]) is not None), None)
    if issues is None:
        return {}
    frame = ev.frame
    wrong = set(frame.loc[frame["pred1"] != frame["label"], "image"])
    doubted = {r.path: r.suggested for r in issues.suspects.itertuples() if r.path in wrong}
    n_wrong = len(wrong)
    if doubted:
        st.info(f"{len(doubted):,} of the {n_wrong:,} mistakes are probably mislabelled: the label check doubts "
                "their label, so the model may be right and the label wrong. Look at them on the Duplicates page's "
                "Label issues tab.", icon=":material/label_off:")  # fmt: skip
        st.page_link("app_pages/duplicates.py", label="Check the labels", icon=":material/fact_check:")
    return doubted


def _one(item: Explained, has_copy: bool, suggested: str | None = None) -> None:
    if item.picture is not None:
        left, right = st.columns(2)
        left.image(enlarged(item.picture), width="stretch", caption="the image")
        blended = overlay_of(item)
        if blended is not None:
            right.image(enlarged(blended), width="stretch", caption=f"evidence for {plain(item.predicted)}")
    # "Labelled", not "True": the label is what the dataset says, and the label check may doubt it (below).
    st.markdown(f"Labelled: **{plain(item.label)}** · said: **{plain(item.predicted)}** ({pct(item.p_predicted)} sure)")
    st.caption(f"{pct(item.p_true, 1)} on its labelled class · {plain(item.image)}")
    if has_copy:
        st.caption(":material/content_copy: has a copy among the training images")
    if suggested is not None:
        st.caption(f":material/label_off: its label is probably wrong (the label check says {plain(suggested)})")
    if item.note:
        st.caption(f":orange[{plain(item.note)}]")


def reliability_figure(cal: Calibration) -> go.Figure:
    used = cal.count > 0
    mids = (cal.edges[:-1] + cal.edges[1:]) / 2
    width = float(cal.edges[1] - cal.edges[0])
    fig = go.Figure()
    fig.add_bar(x=100 * mids[used], y=100 * cal.accuracy[used], width=100 * width * 0.9, marker_color="#4C78A8",
                name="share right", text=[f"{int(n)}" for n in cal.count[used]], textposition="outside", cliponaxis=False,
                textfont=dict(size=10, color="#666"), customdata=np.column_stack([cal.count[used], 100 * cal.confidence[used]]),
                hovertemplate="sure %{customdata[1]:.0f}% on average: %{y:.0f}% right (%{customdata[0]} images)"
                "<extra></extra>")  # fmt: skip
    fig.add_scatter(x=[0, 100], y=[0, 100], mode="lines", line=dict(dash="dash", color="#E45756"),
                    name="perfectly calibrated", hoverinfo="skip")  # fmt: skip
    # Room above 100% for the counts over full bars, and the legend above that room, not over the bars.
    fig.update_layout(height=380, margin=dict(t=50, b=10, l=10, r=10), bargap=0,
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0), xaxis=dict(title="how sure the model was",
                      range=[0, 100], ticksuffix="%"), yaxis=dict(title="share of right answers", range=[0, 112],
                      tickvals=[0, 20, 40, 60, 80, 100], ticksuffix="%"))  # fmt: skip
    return fig


def calibration(ev: Evaluation) -> None:
    cal = ev.metrics.calibration
    st.subheader("Can its confidence be trusted?")
    chart, words = st.columns([3, 2], gap="large")
    chart.plotly_chart(reliability_figure(cal), key="evaluate_reliability", config={"displayModeBar": False})
    words.markdown(calibration_sentence(cal))
    words.caption("Images are grouped by how sure the model was (15 groups from 0% to 100%; the number above a bar "
                  "is how many images). A bar on the dashed line means it is right as often as it says; below the "
                  "line, it is overconfident.")  # fmt: skip


def report_button(ws: Workspace, store: RunStore, ev: Evaluation) -> None:
    from core.evaluate.report import report_for

    def build() -> bytes:  # on the click, in Streamlit's download thread: no st.* here (heat maps made again)
        return report_for(ws, store, ev).encode("utf-8")

    st.download_button("Download the report (one HTML file)", build, file_name=f"evaluation-run-{ev.run.run_id}.html",
                       mime="text/html", icon=":material/download:", key="evaluate_report", on_click="ignore",
                       help="Everything on this page in one file that opens in any browser, offline: scores, "
                       "charts, the worst images with their heat maps, the settings and the data.")  # fmt: skip
