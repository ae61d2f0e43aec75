"""The Clean up tab: policies, a preview of what they do, and writing the cleaned copy; the banner after."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.common.errors import CoreError
from core.datasets.sources import DatasetRef
from core.dedup.cleaning import POLICIES, CleaningPlan, plan_cleaning, write_cleaned
from core.dedup.groups import SPLIT_ORDER, DedupResult
from ui.common import show_error
from ui.duplicates.labels import label_decisions
from ui.state import choose_dataset, dataset_title, workspace
from ui.text import plain

CLEANED = "dedup_cleaned"  # session key: what "Write cleaned dataset" wrote (a banner while it is current)
POLICY_TEXT = {
    "prefer-known": "a group holding one real class plus the unknown label (e.g. new_whale) relabels its unknown "
    "copies to that class",
    "relabel": "images you chose to relabel on the Label issues tab take the suggested label",
    "drop-suspects": "images you chose to drop on the Label issues tab are left out",
    "drop-conflicts": "groups that still hold several labels are removed whole: no copy's label can be trusted",
    "move-leaks": "val/test copies of a train image move to train (test copies of a val image to val)",
    "keep-one": "one image per group stays (train first, then the largest, then path order)",
}


def clean_up(result: DedupResult) -> None:
    st.markdown("Choose how to resolve the groups. Nothing is written until you press the button; the source "
                "files are never changed: the cleaned dataset is a new list of images (a CSV) in the workspace.")  # fmt: skip
    chosen = st.multiselect("Policies", POLICIES, default=["keep-one"], key="dup_policies",
                            placeholder="Choose at least one policy")  # fmt: skip
    unknown = ""
    if "prefer-known" in chosen:
        unknown = st.text_input("The label that means 'unknown'", key="dup_unknown", placeholder="found by itself "
                                "(new_whale, unknown, other...)")  # fmt: skip
    st.markdown("\n".join(f"{k}. **{p}**: {POLICY_TEXT[p]}" for k, p in enumerate(
        [p for p in POLICIES if p in chosen], 1)))  # fmt: skip
    if not chosen:
        return
    try:
        plan = plan_cleaning(result, chosen, unknown_label=unknown.strip() or None,
                             label_fixes=label_decisions(result.ref))  # fmt: skip
    except CoreError as exc:
        show_error(exc)
        return
    _plan_preview(result, plan)
    changes = len(plan.removed) + len(plan.relabelled) + len(plan.moved)
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    name = c1.text_input("Name of the cleaned dataset", value=_default_name(result.ref), key="dup_clean_name")
    if c2.button("Write cleaned dataset", type="primary", key="dup_write", disabled=not changes,
                 icon=":material/save:", help=None if changes else "These policies change nothing"):  # fmt: skip
        try:
            ref = write_cleaned(plan, workspace(), name.strip() or None)
        except (CoreError, OSError) as exc:
            show_error(exc, "Cannot write the cleaned dataset")
            return
        st.session_state[CLEANED] = {"spec": ref.spec, "name": ref.display, "source": dataset_title(result.ref.spec),
                                     **plan.counts()}  # fmt: skip
        choose_dataset(ref)


def _plan_preview(result: DedupResult, plan: CleaningPlan) -> None:
    counts = plan.counts()
    before = result.hashes.table
    cols = st.columns(5)
    cols[0].metric("Images now", f"{len(before):,}")
    cols[1].metric("Kept", f"{counts['kept']:,}", delta=f"{counts['kept'] - len(before):,}", delta_color="off")
    cols[2].metric("Removed", f"{counts['removed']:,}")
    cols[3].metric("Relabelled", f"{counts['relabelled']:,}")
    cols[4].metric("Moved", f"{counts['moved']:,}")
    splits = [s for s in (*SPLIT_ORDER, "") if s in set(before["split"]) | set(plan.kept["split"])]
    st.caption("Splits: " + " · ".join(f"{s or 'unsplit'} {int((before['split'] == s).sum()):,} → "
                                        f"{int((plan.kept['split'] == s).sum()):,}" for s in splits))  # fmt: skip
    for title, frame in (("Removed", plan.removed), ("Relabelled", plan.relabelled), ("Moved", plan.moved)):
        if not frame.empty:
            st.markdown(f"**{title}** ({len(frame):,})")
            st.dataframe(frame, hide_index=True, width="stretch", height=min(36 + 35 * len(frame), 260))


def _default_name(ref: DatasetRef) -> str:
    return Path(ref.display).stem.replace("sample:", "") or "dataset"


def cleaned_banner(ref: DatasetRef | None) -> None:
    """After "Write cleaned dataset": what was written, while the cleaned dataset is the current one."""
    done = st.session_state.get(CLEANED)
    if not done or ref is None or ref.spec != done["spec"]:
        return
    st.success(f"Wrote **{plain(done['name'])}** from {plain(done['source'])}: {done['kept']:,} images kept, {done['removed']:,} "
               f"removed, {done['relabelled']:,} relabelled, {done['moved']:,} moved. It is now the current dataset "
               "(also listed under Datasets → Cleaned datasets); the source files are untouched.",
               icon=":material/check_circle:")  # fmt: skip
    c1, c2, _ = st.columns([1, 1, 3])
    c1.page_link("app_pages/datasets.py", label="Look at it on Datasets", icon=":material/photo_library:")
    c2.page_link("app_pages/train.py", label="Train on it", icon=":material/model_training:")
