"""From a stored label check to decisions the cleaning policies apply (``core.dedup.cleaning``: ``relabel``,
``drop-suspects``), for the command line and the Evaluate page, which have no person clicking through the cards."""

from __future__ import annotations

from core.common.workspace import Workspace
from core.labels.confident import LabelIssues, find_label_issues
from core.labels.probabilities import load_out_of_sample, stored_checks

# With both policies and no person deciding: a suspect whose suggested class the model gives at least this
# probability takes it; the others are dropped (an image the model is unsure about is not relabelled by guess).
RELABEL_WHEN_SURE = 0.5


def stored_issues(ws: Workspace, dataset: str, run_id: int | None = None) -> LabelIssues | None:
    """The label issues of the newest stored check of ``dataset`` (of run ``run_id`` when given; a thorough
    check before a quick one of the same age); None when the dataset was never checked."""
    for found_run, mode, _ in stored_checks(ws, dataset):
        if run_id is not None and found_run != run_id:
            continue
        oos = load_out_of_sample(ws, dataset, found_run, mode)
        if oos is not None:
            return find_label_issues(oos)
    return None


def automatic_fixes(issues: LabelIssues, relabel: bool, drop: bool) -> dict[str, str | None]:
    """Decisions for every suspect without a person: ``relabel`` alone takes every suggestion, ``drop`` alone drops
    every suspect, both take the suggestions the model is sure of (:data:`RELABEL_WHEN_SURE`) and drop the rest."""
    fixes: dict[str, str | None] = {}
    for row in issues.suspects.itertuples():
        sure = row.p_suggested >= RELABEL_WHEN_SURE
        if relabel and (sure or not drop):
            fixes[row.path] = row.suggested
        elif drop:
            fixes[row.path] = None
    return fixes
