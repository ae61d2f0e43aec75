"""The Quality tab: a slider per check (which scores are bad is core's DIRECTIONS), the worst examples of each."""

from __future__ import annotations

from dataclasses import asdict

import streamlit as st

from core.common.errors import CoreError
from core.dedup.groups import DedupResult
from core.dedup.quality import ISSUES, QualityReport, QualityThresholds, quality_report, worst_first
from ui.common import show_error
from ui.duplicates.cards import name, thumb_grid
from ui.duplicates.session import remember

QUALITY_EXAMPLES = 6
_FORMATS = {0.01: "%.2f", 0.1: "%.1f", 0.5: "%.1f", 1.0: "%.0f"}  # slider value format by step
# issue -> (title, slider min, max, step, what the score is)
QUALITY = {
    "dark": ("Dark", 0.0, 255.0, 1.0, "brightest 1% of pixels darker than this (0-255)"),
    "bright": ("Bright", 0.0, 255.0, 1.0, "darkest 1% of pixels brighter than this (0-255)"),
    "blurry": ("Blurry", 0.0, 1.0, 0.01, "edge strength / contrast below this"),
    "low_information": ("Low information", 0.0, 1.0, 0.01,
                        "share of the picture away from its main gray level below this"),
    "odd_aspect": ("Odd aspect", 1.0, 10.0, 0.1, "longer side / shorter side above this"),
    "odd_size": ("Odd size", 0.5, 10.0, 0.5, "area this many robust deviations from the median"),
    "grayscale": ("Grayscale", 0.0, 64.0, 1.0, "colour spread below this (0-255), in a set that is 80% colour"),
}  # fmt: skip


def _reset_quality() -> None:
    for issue in ISSUES:
        st.session_state.pop(f"q_{issue}", None)
        st.session_state.pop(f"_q_{issue}", None)


def quality(result: DedupResult) -> None:
    defaults = asdict(QualityThresholds())
    top = st.columns([4, 1], vertical_alignment="center")
    top[0].caption("Each image gets a score per check, from the same decode as its fingerprint; move a threshold "
                   "and the flags follow at once. The examples are the worst-scoring images.")  # fmt: skip
    top[1].button("Reset thresholds", key="q_reset", on_click=_reset_quality, icon=":material/restart_alt:")
    for issue in ISSUES:
        remember(f"q_{issue}", float(defaults[issue]))
    values = {issue: st.session_state[f"q_{issue}"] for issue in ISSUES}
    try:
        report = quality_report(result.hashes.table, QualityThresholds(**{**defaults, **values}))
    except CoreError as exc:
        show_error(exc)
        return
    for issue in ISSUES:
        _quality_row(result, report, issue)
    if not report.issues.empty:
        with st.expander(f"All {len(report.issues):,} flags"):
            st.dataframe(report.issues, hide_index=True, width="stretch")


def _quality_row(result: DedupResult, report: QualityReport, issue: str) -> None:
    title, low, high, step, text = QUALITY[issue]
    flagged = report.issues[report.issues["issue"] == issue]
    with st.container(border=True):
        left, right = st.columns([2, 5])
        left.markdown(f"**{title}** · {len(flagged):,} flagged")
        left.slider(text, low, high, step=step, key=f"q_{issue}", format=_FORMATS[step])
        scores = report.scores[["path", issue]].dropna()
        ranked = worst_first(scores, issue)
        with right:
            if flagged.empty and issue == "grayscale" and (scores[issue] < report.thresholds.grayscale).mean() > 0.5:
                st.caption("Most images here are gray: grayscale is only an issue among colour images.")
                return
            if flagged.empty:
                closest = f" The closest: {_FORMATS[step] % ranked.iloc[0][issue]} ({name(ranked.iloc[0]['path'])})." if len(
                    ranked) else ""  # fmt: skip
                st.caption(f"No image flagged.{closest}")
                return
            examples = ranked[ranked["path"].isin(flagged["path"])].head(QUALITY_EXAMPLES)
            captions = [f"{name(p)}  \nscore {s:.2f}" for p, s in zip(examples["path"], examples[issue], strict=True)]
            thumb_grid(result.ref.root, examples["path"].tolist(), captions, QUALITY_EXAMPLES)
