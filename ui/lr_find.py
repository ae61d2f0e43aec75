"""The Train page's "Find a learning rate": the sweep (``core.train.lr_find``), its curve, and the suggested rate
put into the form's learning-rate field."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st

from core.common.errors import CoreError
from core.common.words import duration
from core.train.config import choice_words
from core.train.runplan import RunPlan
from ui.state import workspace
from ui.train_form import show_problem

FOUND = "lrfind_result"  # session key: the last sweep of this tab ({lrs, losses, suggested, ...}); not "train_"
RULE_TEXT = ("Suggested by the **valley** rule (fastai's default): within the longest stretch where the loss keeps "
             "falling, the rate a little under halfway along, past the flat start and well before the blow-up.")  # fmt: skip


def find(plan: RunPlan) -> dict | None:
    """Run the sweep for the run ``plan`` describes (the page's), with a progress bar; keeps and returns its result
    (None when it cannot run, said in words)."""
    from core.train.lr_find import find_lr

    bar = st.progress(0.0, text="Finding a learning rate...")

    def progress(what: str, share: float) -> None:
        bar.progress(share, text=f"Finding a learning rate: {what}")

    try:
        finding = find_lr(plan, workspace(), progress=progress)
    except CoreError as exc:
        bar.empty()
        show_problem(exc)
        return None
    bar.empty()
    result = {**finding.to_json(), "optimizer": finding.config.optimizer}
    st.session_state[FOUND] = result
    return result


def show(current_lr: float) -> None:
    """The last sweep's curve (loss against learning rate, log scale) with the suggestion, if there was one."""
    found = st.session_state.get(FOUND)
    if not found:
        return
    suggested = found["suggested"]
    used = (", now in the learning-rate field (Advanced settings)" if math.isclose(current_lr, suggested, rel_tol=1e-6)
            else "")  # fmt: skip
    optimizer = choice_words("optimizer").get(found["optimizer"], found["optimizer"])
    st.plotly_chart(figure(found["lrs"], found["losses"], suggested), width="stretch", key="lrfind_plot")
    st.caption(f"{RULE_TEXT} For {optimizer}: **{suggested:.2g}**{used}. The sweep trained a throwaway "
               f"copy of the network for {found['steps']} steps ({duration(found['seconds'])}); nothing was saved, "
               "and the run you start begins from fresh weights.")  # fmt: skip


def figure(lrs: list[float], losses: list[float], suggested: float) -> go.Figure:
    fig = go.Figure(go.Scatter(x=lrs, y=losses, mode="lines", name="loss (smoothed)", line=dict(color="#4C78A8")))
    at = min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i]) - math.log(suggested)))
    fig.add_trace(go.Scatter(x=[suggested], y=[losses[at]], mode="markers+text", name="suggested",
                             marker=dict(size=12, color="#E45756"), text=[f"{suggested:.2g}"],
                             textposition="top center"))  # fmt: skip
    fig.update_layout(height=320, margin=dict(t=30, b=10, l=10, r=10), xaxis_title="learning rate (log scale)",
                      yaxis_title="training loss", showlegend=False)  # fmt: skip
    fig.update_xaxes(type="log", exponentformat="power")
    top = sorted(losses)[int(0.9 * (len(losses) - 1))]  # the blow-up's last points would flatten the rest
    fig.update_yaxes(range=[min(losses) * 0.95, max(top, losses[0]) * 1.05])
    return fig
