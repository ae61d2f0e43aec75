"""The Train page's "Find a learning rate": the button with the sweep's time beside it, the sweep
(``core.train.lr_find``), its curve, and the suggested rate put into the form's learning-rate field, only when the
curve suggests one (a flat curve leaves the field as it was and says why)."""

from __future__ import annotations

import json
import math

import plotly.graph_objects as go
import streamlit as st

from core.common.errors import CoreError
from core.common.words import duration
from core.train.config import TrainConfig, choice_words
from core.train.plan import RunPreview
from core.train.runplan import RunPlan
from ui.state import workspace
from ui.train_form import show_problem

FOUND = "lrfind_result"  # session key: the last sweep of this tab ({lrs, losses, suggested, why, ...}); not "train_"
# Timed while the page draws only when a step is quick: the network's activations and weights for one batch under
# this many bytes (LeNet, ResNet-18 up to about 64 px). A bigger network's steps are timed when the button is
# pressed, before the sweep begins (a ResNet-18 step at 112 px took 2-6 s on 2 cores: seconds on every redraw).
QUICK_BYTES = 300 * 2**20


def button(column, seen: RunPreview, config: TrainConfig) -> None:
    """The "Find a learning rate" button in ``column`` with the sweep's time beside it; on a click, the sweep, and
    its suggested rate put into the form (``config`` with that rate) when there is one."""
    from ui.runs import TRAIN_PREFILL

    seconds = _estimate(seen) if _quick(seen) else None
    clicked = column.button("Find a learning rate", icon=":material/query_stats:", key="train_find_lr",
                            help="A short sweep of rising rates on the training images (fastai's lr_find); the rate "
                            "it suggests goes into the learning-rate field, and none when the loss never fell. "
                            "Nothing is saved.")  # fmt: skip
    said = column.empty()
    if seconds is not None:
        said.caption(f"about {duration(seconds)}")
    if not clicked:
        return
    if seconds is None:  # timed now, said before the sweep begins
        seconds = _estimate(seen)
        if seconds is not None:
            said.caption(f"about {duration(seconds)}")
    found = find(seen.plan, seconds)
    if found is not None and found["suggested"] is not None:  # the form starts again with the suggested rate
        st.session_state[TRAIN_PREFILL] = {**config.to_dict(), "lr": found["suggested"]}
        st.rerun()


def _quick(seen: RunPreview) -> bool:
    from core.train.checkpoints import device_for

    return seen.memory.training <= QUICK_BYTES or device_for(seen.plan.settings.device).type == "cuda"


def _estimate(seen: RunPreview) -> float | None:
    """About how long the sweep takes (None when its steps cannot be timed: a run too big for the memory)."""
    s = seen.plan.settings
    # What a step's time depends on: one timing per network, input, batch and device, whatever else changes.
    key = json.dumps([s.arch, s.image_size, min(s.batch_size, max(2, seen.splits["train"])), s.freeze, s.optimizer,
                      s.amp, s.device, max(2, seen.n_classes)])  # fmt: skip
    return _timed(key, seen)


@st.cache_data(show_spinner="Timing a few training steps...", max_entries=64)
def _timed(key: str, _seen: RunPreview) -> float | None:
    from core.train.lr_find import estimate_seconds

    try:
        return estimate_seconds(_seen)
    except CoreError:  # too big for the memory: the plan's warning says so
        return None


def find(plan: RunPlan, estimate: float | None = None) -> dict | None:
    """Run the sweep for the run ``plan`` describes (the page's), with a progress bar; keeps and returns its result
    (None when it cannot run, said in words)."""
    from core.train.lr_find import find_lr

    about = f" (about {duration(estimate)})" if estimate is not None else ""
    bar = st.progress(0.0, text=f"Finding a learning rate{about}...")

    def progress(what: str, share: float) -> None:
        bar.progress(share, text=f"Finding a learning rate{about}: {what}")

    try:
        finding = find_lr(plan, workspace(), progress=progress)
    except CoreError as exc:
        bar.empty()
        show_problem(exc)
        return None
    bar.empty()
    result = {**finding.to_json(), "optimizer": finding.config.optimizer, "estimated_seconds": estimate}
    st.session_state[FOUND] = result
    return result


def show(current_lr: float) -> None:
    """The last sweep's curve (loss against learning rate, log scale) with the suggestion, or why there is none."""
    found = st.session_state.get(FOUND)
    if not found:
        return
    suggested = found["suggested"]
    st.plotly_chart(figure(found["lrs"], found["losses"], suggested), width="stretch", key="lrfind_plot")
    took = duration(found["seconds"])
    if found.get("estimated_seconds") is not None:
        took += f"; about {duration(found['estimated_seconds'])} was estimated"
    sweep = (f"The sweep trained a throwaway copy of the network for {found['steps']} steps ({took}); nothing was "
             "saved, and the run you start begins from fresh weights.")  # fmt: skip
    if suggested is None:
        st.info(f"**No rate suggested.** {_sentence(found['why'])}. The learning-rate field was left as it was. "
                f"{sweep}", icon=":material/info:")  # fmt: skip
        return
    used = (", now in the learning-rate field (Advanced settings)" if math.isclose(current_lr, suggested, rel_tol=1e-6)
            else "")  # fmt: skip
    optimizer = choice_words("optimizer").get(found["optimizer"], found["optimizer"])
    st.caption(f"For {optimizer}: **{suggested:.2g}**{used}. {_sentence(found['why'])}. {sweep}")


def _sentence(words: str) -> str:
    return words[:1].upper() + words[1:]


def figure(lrs: list[float], losses: list[float], suggested: float | None) -> go.Figure:
    fig = go.Figure(go.Scatter(x=lrs, y=losses, mode="lines", name="loss (smoothed)", line=dict(color="#4C78A8")))
    if suggested is not None:
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
