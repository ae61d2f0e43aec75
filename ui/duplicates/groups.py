"""The summary line and the Groups and Borderline tabs of the Duplicates page."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.dedup.groups import DedupResult
from core.dedup.tables import groups_csv
from ui.common import cache_words, count_of
from ui.duplicates.cards import bits, name, pager, pair_cards, thumb_grid
from ui.text import plain, plain_list

GROUPS_PER_PAGE = 10
PAIRS_PER_PAGE = 10
CARD_PER_ROW = 4  # thumbnails per row in a group card (two cards side by side)
CARD_THUMBS = 8  # at most this many thumbnails per card; the CSV lists every member
FLAGS = {
    "All groups": lambda g: np.ones(len(g), bool),
    "Label conflicts": lambda g: g["conflict"].to_numpy(bool),
    "Split leaks": lambda g: g["leak"].to_numpy(bool),
    "Conflicts or leaks": lambda g: (g["conflict"] | g["leak"]).to_numpy(bool),
    "Neither": lambda g: ~(g["conflict"] | g["leak"]).to_numpy(bool),
}


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
               f"pairs with hashes at most {result.config.limit} bits apart, each checked on pixels · fingerprints: "
               f"{cache_words(result.hashes.n_opened, len(result.hashes.table))}")  # fmt: skip
    if not result.failed.empty:
        with st.expander(f"{count_of(len(result.failed), 'file')} could not be read: left out of the search and of any "
                         "cleaned copy", icon=":material/broken_image:"):  # fmt: skip
            st.dataframe(result.failed, hide_index=True, width="stretch")


def groups(result: DedupResult) -> None:
    table = result.groups
    if table.empty:
        st.success(f"No duplicates: no two images are copies of each other at {result.config.threshold} bits "
                   "(exact copies included). The Borderline tab shows the nearest pairs.",
                   icon=":material/check_circle:")  # fmt: skip
        look_alikes(result)
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
        page = pager(len(shown), GROUPS_PER_PAGE, "dup_page", "groups")
    right.download_button("Download all groups (CSV)", data=lambda: groups_csv(result.groups, result.members),
                          file_name="duplicate-groups.csv", mime="text/csv", key="dup_csv", icon=":material/download:",
                          on_click="ignore")  # fmt: skip
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
    look_alikes(result)


def _group_card(result: DedupResult, g, members: pd.DataFrame, hashes: pd.Series) -> None:
    kind = ":blue-badge[exact copies]" if g.kind == "exact" else f":violet-badge[near copies, up to {g.distance} bits]"
    flags = (" :red-badge[:material/warning: label conflict]" if g.conflict else "") + (
        " :orange-badge[:material/call_split: split leak]" if g.leak else ""
    )
    shown = members.head(CARD_THUMBS)
    first = shown.iloc[0]
    captions = []
    distances = bits(hashes[shown["path"]].to_numpy(np.int64), int(hashes[first.path]))
    for m, d in zip(shown.itertuples(), distances, strict=True):
        if m.path == first.path:
            distance = "first"
        elif m.content == first.content:
            distance = "identical"
        else:
            distance = f"{d} bits"
        captions.append(
            f"**{plain(m.label)}** · {m.split or 'unsplit'}  \n{name(m.path)}  \n{m.width}×{m.height} · {distance}"
        )
    with st.container(border=True):
        st.markdown(f"**Group {g.group + 1}** · {g.size} images · {kind}{flags}  \nlabels {plain_list(g.labels)}"
                    f" · splits {', '.join(g.splits)}")  # fmt: skip
        thumb_grid(result.ref.root, shown["path"].tolist(), captions, CARD_PER_ROW)
        if len(members) > len(shown):
            st.caption(f"... and {len(members) - len(shown)} more images in this group (all of them are in the CSV)")


def borderline(result: DedupResult) -> None:
    near = result.near_threshold  # counted in core (core.dedup.tables.Borderline), as dedup --json reports them
    threshold, margin, pairs = near.threshold, near.margin, near.pairs
    st.markdown(f"The pairs of **this dataset** whose hashes differ by {near.low} to {near.high} bits. A pair is "
                "grouped when it is within the threshold **and** looks alike on pixels (thumbnail correlation, same "
                "colours); exact copies are not listed.")  # fmt: skip
    if pairs.empty:
        st.info(f"No pair of images lies within {margin} bits of the threshold: moving it a little changes nothing.")
        return
    helps = {threshold - 1: "Grouped now, dropped with one bit less", threshold + 1: "Look alike, added with one bit "
             "more", threshold + 2: "Look alike, added with two bits more"}  # fmt: skip
    columns = st.columns([1, 1, 1, 2])
    for column, (at, change) in zip(columns[3 - len(near.changes()) : 3], near.changes().items(), strict=True):
        words = "no change" if change == 0 else f"{change:+,} pair" + ("" if abs(change) == 1 else "s")
        column.metric(f"At {at} bits", words, help=helps[at])
    columns[3].dataframe(near.by_distance(), hide_index=True, width="stretch")
    if result.config.method == "phash":
        st.caption("phash distances are always even (its bits split at the median): odd thresholds act like the "
                   "even one below them.")  # fmt: skip
    grouped, outside = near.grouped(), near.outside()
    page = pager(max(len(grouped), len(outside)), PAIRS_PER_PAGE // 2, "dup_border_page", "pairs on each side")
    part = slice(page * (PAIRS_PER_PAGE // 2), (page + 1) * (PAIRS_PER_PAGE // 2))
    left, right = st.columns(2)
    for col, rows, title in ((left, grouped, "Grouped now: one bit less drops the farthest"),
                             (right, outside, "Look alike, not grouped: more bits would add them")):  # fmt: skip
        with col:
            st.markdown(f"**{title}** ({len(rows):,})")
            if rows.empty:
                st.caption("None within the margin.")
            pair_cards(result.ref.root, rows.iloc[part], [_border_text(r, threshold) for r in rows.iloc[part].itertuples()],
                        per_row=1)  # fmt: skip
    with st.expander(f"All {len(pairs):,} pairs {near.low} to {near.high} bits apart, including those that differ on "
                     "pixels"):  # fmt: skip
        st.dataframe(pairs, hide_index=True, width="stretch")


def _border_text(r, threshold: int) -> str:
    head = f"**{r.distance} bits** · correlation {r.correlation:.2f}"
    if not r.verified:
        return f"{head}  \n:gray-badge[differ on pixels] never grouped, whatever the threshold"
    if r.counted:
        return f"{head}  \n:green-badge[grouped now] drops out below {r.distance} bits"
    return f"{head}  \n:orange-badge[not grouped] added from {r.distance} bits (now {threshold})"


LOOK_ALIKES_SHOWN = 6


def look_alikes(result: DedupResult) -> None:
    """Pairs whose hashes match but whose pixels do not: similar pictures (two people's "7"), never counted as
    duplicates or leaks. Shown so a user who expected them grouped sees why they are not."""
    pairs = result.look_alikes
    if pairs.empty:
        return
    title = (f"{count_of(len(pairs), 'look-alike pair')}: similar pictures, not copies (not counted as duplicates "
             "or leaks)")  # fmt: skip
    with st.expander(title, icon=":material/compare:"):
        st.caption("Their hashes are within the threshold, but on pixels they are different pictures (a copy is the "
                   f"same picture re-encoded, resized or lightly edited). The {min(len(pairs), LOOK_ALIKES_SHOWN)} "
                   "closest:")  # fmt: skip
        shown = pairs.sort_values("correlation", ascending=False, kind="stable").head(LOOK_ALIKES_SHOWN)
        texts = [f"**{r.distance} bits** · pixel correlation {r.correlation:.2f}" for r in shown.itertuples()]
        pair_cards(result.ref.root, shown, texts)
