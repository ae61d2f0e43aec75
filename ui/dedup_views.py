"""The views of the Duplicates page (one function per tab) and ``leakage_notice`` for every page showing a score.

The search, the regrouping, the leak report, the cleaning plan and the quality checks are core's
(``core.dedup.groups``, ``core.dedup.cleaning``, ``core.dedup.quality``); this module keeps their results in the session and
draws them. The fingerprints of a dataset are computed once per hash method (``search``); the threshold
slider only regroups them (``at_threshold``: no image is opened).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.common.errors import CoreError, ImageError
from core.datasets.scan import ScanResult
from core.datasets.sources import DatasetRef
from core.datasets.thumbs import thumbnail_files
from core.dedup.cleaning import POLICIES, CleaningPlan, plan_cleaning, write_cleaned
from core.dedup.groups import SPLIT_ORDER, DedupConfig, DedupResult, LeakageReport, find_duplicates, group_duplicates
from core.dedup.groups import leakage_report as core_leakage_report
from core.dedup.quality import ISSUES, QualityReport, QualityThresholds, quality_report
from ui.common import show_error
from ui.state import SCANS, choose_dataset, workspace

RESULTS = "dedup_results"  # session key: {(spec, method): DedupResult at the method's default threshold}
VIEW = "dedup_view"  # session key: ((spec, method, threshold), DedupResult regrouped for the slider)
CURRENT = "dedup_current"  # session key: the DedupResult the page showed last (what leakage_notice reports)
CLEANED = "dedup_cleaned"  # session key: what "Write cleaned dataset" wrote (a banner while it is current)
LEAKS = "leakage_reports"  # session key: {spec: LeakageReport} computed for leakage_notice
MAX_RESULTS = 4  # fingerprint tables kept per tab (a 100k-image table is ~40 MB)
AUTO_LIMIT = 5_000  # datasets up to this size are searched on the first visit; larger ones wait for a click
GROUPS_PER_PAGE = 10
PAIRS_PER_PAGE = 10
THUMBS_PER_ROW = 8
CARD_PER_ROW = 4  # thumbnails per row in a group card (two cards side by side)
CARD_THUMBS = 8  # at most this many thumbnails per card; the CSV lists every member
QUALITY_EXAMPLES = 6
_FORMATS = {0.01: "%.2f", 0.1: "%.1f", 0.5: "%.1f", 1.0: "%.0f"}  # slider value format by step
FLAGS = {
    "All groups": lambda g: np.ones(len(g), bool),
    "Label conflicts": lambda g: g["conflict"].to_numpy(bool),
    "Split leaks": lambda g: g["leak"].to_numpy(bool),
    "Conflicts or leaks": lambda g: (g["conflict"] | g["leak"]).to_numpy(bool),
    "Neither": lambda g: ~(g["conflict"] | g["leak"]).to_numpy(bool),
}
POLICY_TEXT = {
    "prefer-known": "a group holding one real class plus the unknown label (e.g. new_whale) relabels its unknown "
    "copies to that class",
    "drop-conflicts": "groups that still hold several labels are removed whole: no copy's label can be trusted",
    "move-leaks": "val/test copies of a train image move to train (test copies of a val image to val)",
    "keep-one": "one image per group stays (train first, then the largest, then path order)",
}
# issue -> (title, slider min, max, step, what the score is, which scores are worst: "low", "high" or "abs")
QUALITY = {
    "dark": ("Dark", 0.0, 255.0, 1.0, "brightest 1% of pixels darker than this (0-255)", "low"),
    "bright": ("Bright", 0.0, 255.0, 1.0, "darkest 1% of pixels brighter than this (0-255)", "high"),
    "blurry": ("Blurry", 0.0, 1.0, 0.01, "edge strength / contrast below this", "low"),
    "low_information": ("Low information", 0.0, 8.0, 0.1, "gray-level entropy below this many bits", "low"),
    "odd_aspect": ("Odd aspect", 1.0, 10.0, 0.1, "longer side / shorter side above this", "high"),
    "odd_size": ("Odd size", 0.5, 10.0, 0.5, "area this many robust deviations from the median", "abs"),
    "grayscale": ("Grayscale", 0.0, 64.0, 1.0, "colour spread below this (0-255), in a set that is 80% colour",
                  "low"),
}  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# Results in the session


def remember(key: str, default: object) -> None:
    """Keep a widget's value while its tab or page is not drawn (Streamlit drops the state of undrawn widgets).

    Call before the widget, and create the widget without ``value=``: its value comes from the session.
    """
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(f"_{key}", default)
    st.session_state[f"_{key}"] = st.session_state[key]


def stored(ref: DatasetRef, method: str) -> DedupResult | None:
    return st.session_state.get(RESULTS, {}).get((ref.spec, method))


def search(ref: DatasetRef, scan: ScanResult, method: str) -> DedupResult:
    """Fingerprint (cached on disk: only new or changed files are opened) and group, with a progress bar."""
    bar = st.progress(0.0, text=f"Fingerprinting {ref.display} ({method})...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Fingerprinting images ({method}): {done:,} / {total:,}")

    result = find_duplicates(ref, workspace().cache, DedupConfig(method=method), scan=scan, progress=progress)
    bar.empty()
    results: dict = st.session_state.setdefault(RESULTS, {})
    results.pop((ref.spec, method), None)
    results[(ref.spec, method)] = result
    while len(results) > MAX_RESULTS:
        results.pop(next(iter(results)))
    st.session_state.pop(VIEW, None)
    return result


def at_threshold(base: DedupResult, threshold: int) -> DedupResult:
    """``base`` regrouped at ``threshold`` (core.dedup.groups.group_duplicates: no decoding), kept for the next rerun."""
    result = base
    if threshold != base.config.threshold:
        key = (base.ref.spec, base.config.method, threshold)
        view = st.session_state.get(VIEW)
        if view is None or view[0] != key:
            config = DedupConfig(method=base.config.method, threshold=threshold, workers=base.config.workers)
            view = (key, group_duplicates(base.hashes, base.scan, config))
            st.session_state[VIEW] = view
        result = view[1]
    st.session_state[CURRENT] = result
    return result


# --------------------------------------------------------------------------------------------------------------
# Summary


def summary(result: DedupResult) -> None:
    groups = result.groups
    cols = st.columns(6)
    cols[0].metric("Images", f"{len(result.hashes.table):,}")
    cols[1].metric("Duplicate groups", f"{len(groups):,}")
    cols[2].metric("Redundant images", f"{result.n_redundant:,}", help="Images that keeping one per group removes")
    cols[3].metric("Label conflicts", f"{int(groups['conflict'].sum()) if len(groups) else 0:,}",
                   help="Groups whose copies carry different labels")  # fmt: skip
    cols[4].metric("Split leaks", f"{result.leakage.pairs['path_b'].nunique():,}",
                   help="Val/test images with a copy in an earlier split (see the Leakage tab)")  # fmt: skip
    cols[5].metric("Unreadable", f"{len(result.failed):,}")
    st.caption(f"{result.config.method}, threshold {result.config.threshold} bits of 64 · {result.n_candidates:,} "
               f"candidate pairs checked on pixels · fingerprints: {result.hashes.n_opened:,} images opened, the rest "
               "from the cache")  # fmt: skip
    if not result.failed.empty:
        with st.expander(f"{len(result.failed):,} file(s) could not be read: left out of the search and of any "
                         "cleaned copy", icon=":material/broken_image:"):  # fmt: skip
            st.dataframe(result.failed, hide_index=True, width="stretch")


# --------------------------------------------------------------------------------------------------------------
# Groups


def groups(result: DedupResult) -> None:
    table = result.groups
    if table.empty:
        st.success(f"No duplicates: no two images are copies of each other at {result.config.threshold} bits "
                   "(exact copies included). The Borderline tab shows the nearest pairs.",
                   icon=":material/check_circle:")  # fmt: skip
        return
    c1, c2, c3 = st.columns([1, 1, 2])
    kinds = c1.multiselect("Kind", ["exact", "near"], default=["exact", "near"], key="dup_kind")
    flag = c2.selectbox("Flag", list(FLAGS), key="dup_flag")
    all_labels = sorted({label for labels in table["labels"] for label in labels})
    labels = c3.multiselect("Classes", all_labels, key="dup_labels", placeholder="All classes")
    keep = table["kind"].isin(kinds).to_numpy() & FLAGS[flag](table)
    if labels:
        keep &= table["labels"].map(lambda ls: bool(set(ls) & set(labels))).to_numpy()
    shown = table[keep]
    left, _, right = st.columns([2, 1, 1], vertical_alignment="bottom")
    with left:
        page = _pager(len(shown), GROUPS_PER_PAGE, "dup_page", "groups")
    right.download_button("Download all groups (CSV)", data=lambda: groups_csv(result), file_name="duplicate-groups.csv",
                       mime="text/csv", key="dup_csv", icon=":material/download:", on_click="ignore")  # fmt: skip
    if shown.empty:
        st.info("No group matches these filters.")
        return
    st.caption("Each image: its label · split, file name, size, and how many hash bits it differs from the "
               "group's first image (0 bits can still be a near copy: the hash is only 64 bits).")  # fmt: skip
    rows = shown.iloc[page * GROUPS_PER_PAGE : (page + 1) * GROUPS_PER_PAGE]
    members = result.members[result.members["group"].isin(rows["group"])]
    hashes = result.hashes.table.set_index("path")["hash"]
    cards = list(rows.itertuples())
    for start in range(0, len(cards), 2):  # two groups side by side: most groups hold two or three images
        for col, g in zip(st.columns(2), cards[start : start + 2], strict=False):
            with col:
                _group_card(result, g, members[members["group"] == g.group], hashes)


def _group_card(result: DedupResult, g, members: pd.DataFrame, hashes: pd.Series) -> None:
    kind = ":blue-badge[exact copies]" if g.kind == "exact" else f":violet-badge[near copies, up to {g.distance} bits]"
    flags = (" :red-badge[:material/warning: label conflict]" if g.conflict else "") + (
        " :orange-badge[:material/call_split: split leak]" if g.leak else ""
    )
    shown = members.head(CARD_THUMBS)
    first = shown.iloc[0]
    captions = []
    bits = _bits(hashes[shown["path"]].to_numpy(np.int64), int(hashes[first.path]))
    for m, d in zip(shown.itertuples(), bits, strict=True):
        if m.path == first.path:
            distance = "first"
        elif m.content == first.content:
            distance = "identical"
        else:
            distance = f"{d} bits"
        captions.append(
            f"**{m.label}** · {m.split or 'unsplit'}  \n{_name(m.path)}  \n{m.width}×{m.height} · {distance}"
        )
    with st.container(border=True):
        st.markdown(f"**Group {g.group + 1}** · {g.size} images · {kind}{flags}  \nlabels {', '.join(map(str, g.labels))}"
                    f" · splits {', '.join(g.splits)}")  # fmt: skip
        _thumb_grid(result.ref.root, shown["path"].tolist(), captions, CARD_PER_ROW)
        if len(members) > len(shown):
            st.caption(f"... and {len(members) - len(shown)} more images in this group (all of them are in the CSV)")


def groups_csv(result: DedupResult) -> str:
    """One row per image in a group, with its group's description: what the CSV download holds."""
    columns = ["group", "kind", "size", "conflict", "leak", "max_distance", "path", "label", "split", "width", "height"]
    if result.groups.empty:
        return ",".join(columns) + "\n"
    described = result.groups.rename(columns={"distance": "max_distance"})[
        ["group", "kind", "size", "conflict", "leak", "max_distance"]
    ]
    rows = result.members.merge(described, on="group")
    rows["group"] = rows["group"] + 1  # numbered as on the page
    return rows[columns].to_csv(index=False, lineterminator="\n")


# --------------------------------------------------------------------------------------------------------------
# Borderline


def borderline(result: DedupResult) -> None:
    threshold, margin = result.config.threshold, result.config.borderline
    pairs = result.borderline
    st.markdown(f"The pairs of **this dataset** whose hashes differ by {max(threshold - margin, 0)} to "
                f"{threshold + margin} bits. A pair is grouped when it is within the threshold **and** looks alike on "
                "pixels (thumbnail correlation, same colours); exact copies are not listed.")  # fmt: skip
    if pairs.empty:
        st.info(f"No pair of images lies within {margin} bits of the threshold: moving it a little changes nothing.")
        return
    alike = pairs["verified"].to_numpy(bool)
    dist = pairs["distance"].to_numpy(int)
    c1, c2, c3, c4 = st.columns([1, 1, 1, 2])
    if threshold > 0:
        c1.metric(f"At {threshold - 1} bits", f"-{int((alike & (dist == threshold)).sum())} pairs",
                  help="Grouped now, dropped with one bit less")  # fmt: skip
    c2.metric(f"At {threshold + 1} bits", f"+{int((alike & (dist == threshold + 1)).sum())} pairs",
              help="Look alike, added with one bit more")  # fmt: skip
    c3.metric(f"At {threshold + 2} bits", f"+{int((alike & (dist > threshold) & (dist <= threshold + 2)).sum())} pairs",
              help="Look alike, added with two bits more")  # fmt: skip
    table = (
        pairs.assign(alike=alike)
        .groupby("distance")
        .agg(pairs=("alike", "size"), look_alike=("alike", "sum"), grouped_now=("counted", "sum"))
        .reset_index()
        .rename(columns={"distance": "bits", "pairs": "candidate pairs", "look_alike": "look alike",
                         "grouped_now": "grouped now"})
    )  # fmt: skip
    c4.dataframe(table, hide_index=True, width="stretch")
    if result.config.method == "phash":
        st.caption("phash distances are always even (its bits split at the median): odd thresholds act like the "
                   "even one below them.")  # fmt: skip
    grouped = pairs[pairs["counted"]].sort_values("distance", ascending=False, kind="stable")
    outside = pairs[alike & ~pairs["counted"].to_numpy(bool)].sort_values("distance", kind="stable")
    page = _pager(max(len(grouped), len(outside)), PAIRS_PER_PAGE // 2, "dup_border_page", "pairs on each side")
    part = slice(page * (PAIRS_PER_PAGE // 2), (page + 1) * (PAIRS_PER_PAGE // 2))
    left, right = st.columns(2)
    for col, rows, title in ((left, grouped, "Grouped now: one bit less drops the farthest"),
                             (right, outside, "Look alike, not grouped: more bits would add them")):  # fmt: skip
        with col:
            st.markdown(f"**{title}** ({len(rows):,})")
            if rows.empty:
                st.caption("None within the margin.")
            _pair_cards(result.ref.root, rows.iloc[part], [_border_text(r, threshold) for r in rows.iloc[part].itertuples()],
                        per_row=1)  # fmt: skip
    with st.expander(f"All {len(pairs):,} candidate pairs, including those that differ on pixels"):
        st.dataframe(pairs, hide_index=True, width="stretch")


def _border_text(r, threshold: int) -> str:
    head = f"**{r.distance} bits** · correlation {r.correlation:.2f}"
    if not r.verified:
        return f"{head}  \n:gray-badge[differ on pixels] never grouped, whatever the threshold"
    if r.counted:
        return f"{head}  \n:green-badge[grouped now] drops out below {r.distance} bits"
    return f"{head}  \n:orange-badge[not grouped] added from {r.distance} bits (now {threshold})"


# --------------------------------------------------------------------------------------------------------------
# Leakage


def leak_sentence(counts: dict[str, int]) -> str:
    """ "7 test images have a copy in train: scores on the test split are optimistic." ("" when nothing leaks)."""
    parts, later = [], []
    for key, n in counts.items():
        if n:
            a, b = key.split("-")
            parts.append(f"{n:,} {b} image{'s have' if n != 1 else ' has'} a copy in {a}")
            later += [b] if b not in later else []
    if not parts:
        return ""
    splits = " and ".join(later) + (" splits" if len(later) > 1 else " split")
    return f"{', '.join(parts)}: scores on the {splits} are optimistic."


def leakage(result: DedupResult) -> None:
    present = set(result.hashes.table["split"])
    if len(present & set(SPLIT_ORDER)) < 2:
        st.info("This dataset has no train/val/test folders, so nothing leaks between splits yet. Training splits "
                "it at random: copies may then land on both sides, so keep one per group first (Clean up tab).",
                icon=":material/info:")  # fmt: skip
        return
    sizes = result.hashes.table["split"].value_counts()
    table = result.leakage.table
    shown = pd.DataFrame({
        "splits": table["split_a"] + " → " + table["split_b"],
        "images with a copy": table["n_images"],
        "of": table["split_b"].map(lambda s: int(sizes.get(s, 0))),
        "pairs": table["n_pairs"],
    })  # fmt: skip
    st.dataframe(shown, hide_index=True, width="content",
                 column_config={"images with a copy": st.column_config.NumberColumn(
                     help="Images of the later split with a copy in the earlier one")})  # fmt: skip
    sentence = leak_sentence(result.leakage.counts)
    if not sentence:
        st.success("No val or test image has a copy in an earlier split at this threshold.", icon=":material/check:")
        return
    st.warning(sentence + " The Clean up tab's move-leaks policy fixes it.", icon=":material/warning:")
    pairs = result.leakage.pairs
    pair_of = pairs["split_a"] + "-" + pairs["split_b"]
    options = [
        f"{a}-{b}" for a, b in zip(table["split_a"], table["split_b"], strict=True) if (pair_of == f"{a}-{b}").any()
    ]
    chosen = st.selectbox("Pairs of", options, key="dup_leak_pair", format_func=lambda o: o.replace("-", " → "),
                          width=260)  # fmt: skip
    rows = pairs[pair_of == chosen]
    page = _pager(len(rows), PAIRS_PER_PAGE, "dup_leak_page", "pairs")
    rows = rows.iloc[page * PAIRS_PER_PAGE : (page + 1) * PAIRS_PER_PAGE]
    texts = [f"**{r.distance} bits**" + ("  \n:red-badge[labels differ]" if r.label_a != r.label_b else "")
             for r in rows.itertuples()]  # fmt: skip
    _pair_cards(result.ref.root, rows, texts)
    with st.expander(f"All {len(pairs):,} leaking pairs"):
        st.dataframe(pairs, hide_index=True, width="stretch")


def _known_leakage(ref: DatasetRef) -> LeakageReport | None:
    """The leak report of ``ref`` if this tab found its duplicates, or if its fingerprints are cached on disk."""
    current = st.session_state.get(CURRENT)
    if current is not None and current.ref.spec == ref.spec:
        return current.leakage
    for (spec, _), result in reversed(st.session_state.get(RESULTS, {}).items()):
        if spec == ref.spec:
            return result.leakage
    reports: dict = st.session_state.setdefault(LEAKS, {})
    if ref.spec not in reports:
        cache = workspace().cache
        # Only from cached fingerprints: a page showing a score must never start a long hashing pass.
        if not (cache / "hashes" / f"{ref.key}-phash.parquet").is_file():
            return None
        try:
            with st.spinner("Checking for copies across splits..."):
                reports[ref.spec] = core_leakage_report(ref, cache, scan=st.session_state.get(SCANS, {}).get(ref.spec))
        except CoreError:
            return None
    return reports[ref.spec]


def leakage_notice(ref: DatasetRef | None) -> None:
    """For any page that shows a score: a warning when val/test images have copies in an earlier split.

    Silent when the dataset was never fingerprinted (nothing is hashed here) or nothing leaks.
    """
    report = _known_leakage(ref) if ref is not None else None
    sentence = leak_sentence(report.counts) if report is not None else ""
    if sentence:
        st.warning(sentence, icon=":material/content_copy:")
        st.page_link("app_pages/duplicates.py", label="See the copies and fix them on the Duplicates page",
                     icon=":material/content_copy:")  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# Clean up


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
        plan = plan_cleaning(result, chosen, unknown_label=unknown.strip() or None)
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
        st.session_state[CLEANED] = {"spec": ref.spec, "name": ref.display, "source": result.ref.display,
                                     **plan.counts()}  # fmt: skip
        choose_dataset(ref)
        st.rerun()


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
    st.success(f"Wrote **{done['name']}** from {done['source']}: {done['kept']:,} images kept, {done['removed']:,} "
               f"removed, {done['relabelled']:,} relabelled, {done['moved']:,} moved. It is now the current dataset "
               "(also listed under Datasets → Cleaned datasets); the source files are untouched.",
               icon=":material/check_circle:")  # fmt: skip
    c1, c2, _ = st.columns([1, 1, 3])
    c1.page_link("app_pages/datasets.py", label="Look at it on Datasets", icon=":material/photo_library:")
    c2.page_link("app_pages/train.py", label="Train on it", icon=":material/model_training:")


# --------------------------------------------------------------------------------------------------------------
# Quality


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
    title, low, high, step, text, worst = QUALITY[issue]
    flagged = report.issues[report.issues["issue"] == issue]
    with st.container(border=True):
        left, right = st.columns([2, 5])
        left.markdown(f"**{title}** · {len(flagged):,} flagged")
        left.slider(text, low, high, step=step, key=f"q_{issue}", format=_FORMATS[step])
        scores = report.scores[["path", issue]].dropna()
        order = scores[issue].abs() if worst == "abs" else scores[issue]
        ranked = scores.loc[order.sort_values(ascending=worst == "low").index]
        with right:
            if flagged.empty and issue == "grayscale" and (scores[issue] < report.thresholds.grayscale).mean() > 0.5:
                st.caption("Most images here are gray: grayscale is only an issue among colour images.")
                return
            if flagged.empty:
                closest = f" The closest: {_FORMATS[step] % ranked.iloc[0][issue]} ({_name(ranked.iloc[0]['path'])})." if len(
                    ranked) else ""  # fmt: skip
                st.caption(f"No image flagged.{closest}")
                return
            examples = ranked[ranked["path"].isin(flagged["path"])].head(QUALITY_EXAMPLES)
            captions = [f"{_name(p)}  \nscore {s:.2f}" for p, s in zip(examples["path"], examples[issue], strict=True)]
            _thumb_grid(result.ref.root, examples["path"].tolist(), captions, QUALITY_EXAMPLES)


# --------------------------------------------------------------------------------------------------------------
# Drawing helpers


def _bits(hashes: np.ndarray, other: int) -> list[int]:
    """Hamming distance of each 64-bit hash (stored as int64) to ``other``."""
    return np.bitwise_count((hashes ^ np.int64(other)).view(np.uint64)).astype(int).tolist()


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _pager(n: int, per_page: int, key: str, what: str) -> int:
    """A page number input when ``n`` items need more than one page; returns the 0-based page."""
    n_pages = max(1, -(-n // per_page))
    if n_pages == 1:
        st.caption(f"{n:,} {what}")
        return 0
    if st.session_state.get(key, 1) > n_pages:  # the filters shrank the list
        st.session_state[key] = 1
    page = st.number_input(f"Page (1-{n_pages}) of {n:,} {what}", 1, n_pages, key=key, step=1, width=260)
    return int(page) - 1


def _thumb_grid(root: Path, paths: list[str], captions: list[str], per_row: int = THUMBS_PER_ROW) -> None:
    files = thumbnail_files([root / p for p in paths], workspace().cache)
    for start in range(0, len(paths), per_row):
        cols = st.columns(per_row)
        for col, thumb, caption in zip(cols, files[start : start + per_row], captions[start : start + per_row],
                                       strict=False):  # fmt: skip
            with col.container(gap="xxsmall"):
                _thumb(thumb)
                st.caption(caption)


def _thumb(thumb: Path | ImageError) -> None:
    if isinstance(thumb, ImageError):
        st.caption(f":material/broken_image: {thumb.reason}")
    else:
        st.image(str(thumb), width="stretch")


def _pair_cards(root: Path, rows: pd.DataFrame, texts: list[str], per_row: int = 2) -> None:
    """Pairs as cards, ``per_row`` to a row: each pair's thumbnails side by side (captioned with the split and
    label columns the rows have: split_a, label_a...), its text beside them."""
    records = rows.to_dict("records")
    for start in range(0, len(records), per_row):
        holders = st.columns(per_row) if per_row > 1 else [st.container()]  # columns nest only once
        for col, row, text in zip(holders, records[start : start + per_row], texts[start : start + per_row],
                                  strict=False):  # fmt: skip
            with col.container(border=True):
                files = thumbnail_files([root / row["path_a"], root / row["path_b"]], workspace().cache)
                columns = st.columns([1, 1, 1.4])
                for c, side, thumb in zip(columns, "ab", files, strict=False):
                    facts = [str(row[k]) for k in (f"split_{side}", f"label_{side}") if row.get(k) not in (None, "")]
                    with c.container(gap="xxsmall"):
                        _thumb(thumb)
                        st.caption(f"{' · '.join(facts)}  \n{_name(row[f'path_{side}'])}")
                columns[2].markdown(text)
