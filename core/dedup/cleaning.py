"""Resolving duplicate groups into a cleaned dataset: a plan first (shown to the user), then a new CSV dataset.

Policies, always applied in this order whatever order they are given in (each later one sees the result of
the earlier ones):

1. ``prefer-known``: a group whose labels are one real class plus the unknown label (``new_whale``) is the
   same individual, so its unknown-labelled copies are **relabelled** to the real class. Relabelled rather than
   removed: without ``keep-one`` the user keeps every image, now with the right label; with it, ``keep-one``
   still chooses the best copy (train split, largest) instead of the one that happened to be labelled.
2. ``relabel`` and ``drop-suspects``: the label check's decisions (``core.labels``: images whose label is probably
   wrong), given as ``label_fixes`` (path -> the label to take, or None to drop the image): an image relabelled
   here takes part in the later policies with its new label, so a conflict it caused disappears.
3. ``drop-conflicts``: groups still holding several labels are removed whole; no copy's label can be trusted.
4. ``move-leaks``: copies in a later split of an image in an earlier one move to the earlier split (val/test
   copies of a train image become train; test copies of a val image become val), so no picture is evaluated
   on after being trained on. Unsplit images are left alone.
5. ``keep-one``: one file per group stays: the one in the earliest split (train first), then the largest
   (width x height), then the first in path order; the others are removed as duplicates of it.

``write_cleaned`` never touches the source files: it writes ``<workspace>/datasets/<name>-cleaned-<hash>/``
holding ``labels.csv`` (image,label,split; image paths relative to the original root, which the returned
ref points at) and ``cleaning.json`` (source, policies, counts, what was removed, relabelled and moved).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from core.common.atomic import write_atomic
from core.common.diskspace import write_failure
from core.common.errors import DatasetError, DedupError, PathNotAllowedError
from core.common.jsonfile import JsonFileError, is_regular_file, read_json, type_words
from core.common.naming import natural_key
from core.common.workspace import Workspace
from core.datasets.sources import DatasetRef, came_from_zip, csv_ref, resolve_dataset
from core.dedup.groups import SPLIT_ORDER, DedupResult

CLEANING_RECORD = "cleaning.json"  # written beside a cleaned copy's labels.csv: its source, policies and counts
POLICIES = (
    "prefer-known",
    "relabel",
    "drop-suspects",
    "drop-conflicts",
    "move-leaks",
    "keep-one",
)  # applied in this order
LABEL_POLICIES = ("relabel", "drop-suspects")  # they act on the label check's decisions (``label_fixes``)
# Labels that mean "not identified" in public datasets; prefer-known uses the first one present when the user
# names none (new_whale: Kaggle humpback whales).
UNKNOWN_LABELS = ("new_whale", "unknown", "unlabeled", "unlabelled", "other", "none")
PLAN_COLUMNS = ["path", "label", "split", "width", "height"]
_SPLIT_RANK = {s: k for k, s in enumerate(SPLIT_ORDER)}


def parse_policies(policies: str | Iterable[str]) -> tuple[str, ...]:
    """Policies from "keep-one,move-leaks" (or a list), in application order; DedupError names unknown ones."""
    names = [p.strip() for p in (policies.split(",") if isinstance(policies, str) else policies) if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown or not names:
        raise DedupError(
            f"unknown cleaning policy {', '.join(unknown) or '(none given)'}; choose from {', '.join(POLICIES)}"
        )
    return tuple(p for p in POLICIES if p in names)


@dataclass
class CleaningPlan:
    """What cleaning would do, before anything is written.

    ``kept``: the images that stay (path, label, split, width, height: label and split as they will be);
    ``removed``: path, reason; ``relabelled``: path, old, new (labels); ``moved``: path, old, new (splits).
    """

    source: DatasetRef
    policies: tuple[str, ...]
    unknown_label: str | None
    kept: pd.DataFrame
    removed: pd.DataFrame
    relabelled: pd.DataFrame
    moved: pd.DataFrame
    settings: dict

    def counts(self) -> dict[str, int]:
        return {"kept": len(self.kept), "removed": len(self.removed), "relabelled": len(self.relabelled),
                "moved": len(self.moved)}  # fmt: skip

    def summary(self, cleaned: DatasetRef | None = None) -> dict[str, object]:
        """The ``cleaned`` object of ``dedup --apply --json`` (``dataset`` is None until written)."""
        return {
            "dataset": cleaned.spec if cleaned else None,
            "n_images": len(self.kept),
            "policies": list(self.policies),
            "unknown_label": self.unknown_label,
            "removed": self.removed.to_dict("records"),
            "relabelled": self.relabelled.to_dict("records"),
            "moved": self.moved.to_dict("records"),
        }


def plan_cleaning(
    result: DedupResult,
    policies: str | Iterable[str],
    *,
    unknown_label: str | None = None,
    label_fixes: Mapping[str, str | None] | None = None,
) -> CleaningPlan:
    """Apply ``policies`` (in the fixed order) to the groups of ``result``; nothing is written.

    ``label_fixes``: path -> the label an image takes (``relabel``) or None, the image is dropped
    (``drop-suspects``); each policy applies only its own kind of decision.

    Raises:
        DedupError: an unknown policy, prefer-known without an unknown label (none given, none found), or a
            label policy without decisions.
    """
    chosen = parse_policies(policies)
    state = _initial_state(result)
    notes: dict[str, list[dict]] = {"removed": _failed_rows(result), "relabelled": [], "moved": []}
    if "prefer-known" in chosen:
        unknown_label = _unknown_label(unknown_label, state)
        notes["relabelled"] = _prefer_known(state, unknown_label)
    if any(p in chosen for p in LABEL_POLICIES):
        if not label_fixes:
            raise DedupError("relabel and drop-suspects act on the label check's decisions: check the labels first "
                             "(the Label issues tab, or `label-issues DATASET --run RUN`)")  # fmt: skip
        relabelled, removed = _label_fixes(state, label_fixes, "relabel" in chosen, "drop-suspects" in chosen)
        notes["relabelled"] += relabelled
        notes["removed"] += removed
    if "drop-conflicts" in chosen:
        notes["removed"] += _drop_conflicts(state)
    if "move-leaks" in chosen:
        notes["moved"] = _move_leaks(state)
    if "keep-one" in chosen:
        notes["removed"] += _keep_one(state)
    kept = state.loc[state["keep"], PLAN_COLUMNS].reset_index(drop=True)
    settings = {"method": result.config.method, "threshold": result.config.threshold, "verify": result.config.verify}
    return CleaningPlan(
        result.ref, chosen, unknown_label if "prefer-known" in chosen else None, kept,
        pd.DataFrame(notes["removed"], columns=["path", "reason"]),
        pd.DataFrame(notes["relabelled"], columns=["path", "old", "new"]),
        pd.DataFrame(notes["moved"], columns=["path", "old", "new"]), settings,
    )  # fmt: skip


def _initial_state(result: DedupResult) -> pd.DataFrame:
    """Every fingerprinted image with its group (-1 if none) and a keep flag the policies switch off."""
    state = result.hashes.table[PLAN_COLUMNS].copy()
    group_of = dict(zip(result.members["path"], result.members["group"], strict=True))
    state["group"] = state["path"].map(group_of).fillna(-1).astype(int)
    state["keep"] = True
    return state


def _failed_rows(result: DedupResult) -> list[dict]:
    """Images the scan listed but that could not be decoded for hashing: the cleaned set leaves them out."""
    return [{"path": r.path, "reason": f"unreadable: {r.reason}"} for r in result.hashes.failed.itertuples()]


def _live_groups(state: pd.DataFrame) -> Iterable[tuple[int, pd.DataFrame]]:
    """Groups with at least two images still kept."""
    live = state[state["keep"] & (state["group"] >= 0)]
    for group, rows in live.groupby("group", sort=True):
        if len(rows) > 1:
            yield int(group), rows


def _unknown_label(given: str | None, state: pd.DataFrame) -> str:
    labels = set(state["label"])
    if given:
        return given
    found = next((u for u in UNKNOWN_LABELS if u in labels), None)
    if found is None:
        raise DedupError(
            f"prefer-known needs the label that means 'unknown' (--unknown-label); none of {', '.join(UNKNOWN_LABELS)} "
            "is among this dataset's labels"
        )
    return found


def _prefer_known(state: pd.DataFrame, unknown: str) -> list[dict]:
    notes = []
    for _, rows in _live_groups(state):
        known = set(rows["label"]) - {unknown}
        if len(known) != 1 or unknown not in set(rows["label"]):
            continue  # only "one real class + unknown" is resolved; two real classes stay a conflict
        label = known.pop()
        for index in rows.index[rows["label"] == unknown]:
            notes.append({"path": state.at[index, "path"], "old": unknown, "new": label})
            state.at[index, "label"] = label
    return notes


def _label_fixes(state: pd.DataFrame, fixes: Mapping[str, str | None], relabel: bool,
                 drop: bool) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """The label check's decisions applied to the images still kept: (relabelled notes, removed notes)."""
    relabelled, removed = [], []
    where = {path: index for index, path in state["path"].items()}
    for path, new in fixes.items():
        index = where.get(path)
        if index is None or not state.at[index, "keep"]:
            continue  # not in this dataset (any more): a decision made on another version of it
        old = state.at[index, "label"]
        if new is None and drop:
            state.at[index, "keep"] = False
            removed.append({"path": path, "reason": f"label probably wrong: labelled {old}, and the model disagrees"})
        elif new is not None and relabel and new != old:
            state.at[index, "label"] = new
            relabelled.append({"path": path, "old": old, "new": new})
    return relabelled, removed


def _drop_conflicts(state: pd.DataFrame) -> list[dict]:
    notes = []
    for group, rows in _live_groups(state):
        labels = sorted(set(rows["label"]), key=natural_key)
        if len(labels) > 1:
            state.loc[rows.index, "keep"] = False
            reason = f"label conflict: duplicate group {group} holds labels {', '.join(labels)}"
            notes += [{"path": p, "reason": reason} for p in rows["path"]]
    return notes


def _move_leaks(state: pd.DataFrame) -> list[dict]:
    notes = []
    for _, rows in _live_groups(state):
        splits = [s for s in SPLIT_ORDER if s in set(rows["split"])]
        if len(splits) < 2:
            continue
        for index in rows.index[rows["split"].isin(splits[1:])]:
            notes.append({"path": state.at[index, "path"], "old": state.at[index, "split"], "new": splits[0]})
            state.at[index, "split"] = splits[0]
    return notes


def _keep_one(state: pd.DataFrame) -> list[dict]:
    notes = []
    for _, rows in _live_groups(state):
        keeper = min(rows.index, key=lambda k: _keeper_key(state.loc[k]))
        name = state.at[keeper, "path"]
        for index in rows.index.drop(keeper):
            state.at[index, "keep"] = False
            notes.append({"path": state.at[index, "path"], "reason": f"duplicate of {name}"})
    return notes


def _keeper_key(row: pd.Series) -> tuple:
    """Earliest split (train first, unsplit last), then most pixels, then path order."""
    return (
        _SPLIT_RANK.get(row["split"], len(SPLIT_ORDER)),
        -int(row["width"]) * int(row["height"]),
        natural_key(row["path"]),
    )


# --------------------------------------------------------------------------------------------------------------
# Writing


def write_cleaned(plan: CleaningPlan, ws: Workspace, name: str | None = None) -> DatasetRef:
    """Write the plan as a new CSV dataset in the workspace and return its ref; the source is never touched.

    The folder name ends in a hash of the source and the resulting table, so applying the same plan twice
    reuses one folder, and a different plan gets its own.
    """
    table = pd.DataFrame({"image": plan.kept["path"], "label": plan.kept["label"], "split": plan.kept["split"]})
    csv_text = table.to_csv(index=False, lineterminator="\n")
    digest = hashlib.sha1(f"{plan.source.spec}\n{csv_text}".encode()).hexdigest()[:8]
    folder = ws.datasets / f"{_safe_name(name or plan.source.display)}-cleaned-{digest}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / CLEANING_RECORD, json.dumps(_record(plan), indent=1))
        write_atomic(folder / "labels.csv", csv_text)  # written last: its presence means the folder is complete
    except OSError as exc:
        full = write_failure(exc, ws.datasets, "the cleaned dataset was not written (the source is untouched)")
        if full is None:
            raise
        raise full from exc
    ref = csv_ref(folder / "labels.csv", ws, images=plan.source.root)
    return replace(ref, name=folder.name)


def _record(plan: CleaningPlan) -> dict:
    return {"source": plan.source.spec, "policies": list(plan.policies), "unknown_label": plan.unknown_label,
            "settings": plan.settings, "counts": plan.counts(), "removed": plan.removed.to_dict("records"),
            "relabelled": plan.relabelled.to_dict("records"), "moved": plan.moved.to_dict("records")}  # fmt: skip


def _safe_name(text: str) -> str:
    return (
        re.sub(r"[^A-Za-z0-9_-]+", "_", Path(text).stem if text.endswith(".csv") else text).strip("_")[:60] or "dataset"
    )


def clean_dataset(
    result: DedupResult,
    policies: str | Iterable[str],
    ws: Workspace,
    *,
    unknown_label: str | None = None,
    name: str | None = None,
    label_fixes: Mapping[str, str | None] | None = None,
) -> tuple[CleaningPlan, DatasetRef]:
    """``plan_cleaning`` then ``write_cleaned``: what ``dedup --apply`` does. Returns the plan and the new ref."""
    plan = plan_cleaning(result, policies, unknown_label=unknown_label, label_fixes=label_fixes)
    return plan, write_cleaned(plan, ws, name)


# --------------------------------------------------------------------------------------------------------------
# Finding and reopening cleaned copies


def cleaned_folders(ws: Workspace) -> list[Path]:
    """Cleaned datasets in the workspace, newest first (``labels.csv`` is written last: present = complete).

    A folder that links out of the allowed roots is not one: it is left out, as ``Workspace.list_folders`` does.
    """
    found = [p.parent for p in ws.datasets.glob("*-cleaned-*/labels.csv")
             if (p.parent / CLEANING_RECORD).is_file() and ws.allows(p.parent)]  # fmt: skip
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def cleaning_record(folder: Path) -> dict:
    """The ``cleaning.json`` of a cleaned copy (source spec, policies, counts), checked for what it must hold.

    Any folder in the workspace named like a cleaned copy is offered, an extracted ZIP included, so the record is
    untrusted until checked: a regular file (the studio never writes a link), a JSON object of a sane size and
    depth, whose ``source`` is a text, ``policies`` a list of texts and ``counts`` whole numbers.

    Raises:
        DatasetError: the record is missing, a link, not JSON, or not shaped as the studio writes it.
    """
    where = f"{folder.name}: its {CLEANING_RECORD}"
    if not is_regular_file(folder / CLEANING_RECORD):
        raise DatasetError(f"{where} is missing or a link (the studio writes a plain file)")
    try:
        record = read_json(folder / CLEANING_RECORD, where, expect=dict)
    except JsonFileError as exc:
        raise DatasetError(str(exc)) from None
    expected = {"source": (str,), "policies": (list,), "counts": (dict,), "unknown_label": (str, type(None))}
    for key, kinds in expected.items():
        if key in record and not isinstance(record[key], kinds):
            raise DatasetError(f"{where} holds {type_words(record[key])} as its {key}, not {type_words(kinds[0])}")
    if not all(isinstance(p, str) for p in record.get("policies", [])):
        raise DatasetError(f"{where} lists policies that are not names")
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in record.get("counts", {}).values()):
        raise DatasetError(f"{where} holds counts that are not whole numbers")
    return record


def open_cleaned(folder: Path, ws: Workspace) -> DatasetRef:
    """The CSV dataset of a cleaned copy; its image paths are relative to the source dataset's root.

    The source named in ``cleaning.json`` goes through the workspace's confinement like a typed path. A copy
    that arrived in a ZIP is data, never a pointer: its record is ignored and its images must be inside the
    extracted folder, where ``labels.csv`` is read like any uploaded CSV.

    Raises:
        PathNotAllowedError: the record names a source outside the allowed folders (never repeated).
        DatasetError: no readable record, or its source is gone.
    """
    folder = ws.confine(folder, "cleaned dataset")
    if came_from_zip(folder, ws):
        return replace(csv_ref(folder / "labels.csv", ws), name=folder.name)  # images found beside the CSV
    record = cleaning_record(folder)
    if "source" not in record:
        raise DatasetError(f"{folder.name}: {CLEANING_RECORD} does not name its source dataset")
    try:
        source = resolve_dataset(record["source"], ws)
    except PathNotAllowedError:
        raise PathNotAllowedError(
            f"{folder.name}: the dataset it was cleaned from is outside the folders this studio may read"
        ) from None
    return replace(csv_ref(folder / "labels.csv", ws, images=source.root), name=folder.name)
