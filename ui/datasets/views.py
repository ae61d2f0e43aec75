"""The views of the Datasets page, one function per tab. Each reads a ``ScanResult`` and draws."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from core.common.errors import CoreError, ImageError
from core.common.naming import natural_sorted
from core.common.words import SPLITS, duration, split_word
from core.datasets import embed, explore
from core.datasets.scan import UNSPLIT, ScanResult
from core.datasets.thumbs import thumbnail_files
from ui import figures
from ui.common import cache_words, count_of, show_error
from ui.state import workspace
from ui.text import plain

ALL = "All classes"
DRAWN = "projections_drawn"  # session key: the 2-D views this tab asked for (the views themselves: _projection)
CLASSES_PER_PAGE = 10
LASSO_SHOWN = 24  # thumbnails of a lasso selection
KIND_WORDS = {"folder": "A folder per class", "csv": "A CSV of labels", "metadata": "One JSON file per image"}
MODE_WORDS = {"1": "black and white", "L": "grayscale", "LA": "grayscale + transparency", "P": "palette colours",
              "PA": "palette + transparency", "RGB": "colour", "RGBA": "colour + transparency", "CMYK": "CMYK (print)",
              "YCbCr": "colour (YCbCr)", "I": "grayscale, 32-bit", "I;16": "grayscale, 16-bit", "F": "floating point"}  # fmt: skip


def summary(result: ScanResult) -> None:
    cols = st.columns([1, 1, 2, 1])
    cols[0].metric("Images", f"{len(result.manifest):,}")
    cols[1].metric("Classes", len(result.classes))
    splits = result.splits
    if list(splits) == [UNSPLIT]:
        cols[2].metric(_splits_title(SPLITS), "made by training",
                       help="No train/val/test folders: each run sets aside a share of every class for validation "
                            "and test itself (15% each by default), the same way every time.")  # fmt: skip
    else:
        cols[2].metric(_splits_title(list(splits)), " / ".join(f"{n:,}" for n in splits.values()))
    cols[3].metric("Unreadable files", len(result.unreadable))
    st.caption(f"{KIND_WORDS.get(result.ref.kind, result.ref.kind)} at {plain(workspace().relative_name(result.root))} · "
               f"scanned in {duration(result.seconds)} "
               f"({cache_words(result.n_opened, len(result.manifest) + len(result.unreadable))})")  # fmt: skip


def _splits_title(splits: Sequence[str]) -> str:
    """ "Training / validation / test": the splits in the studio's words (core.common.words)."""
    return " / ".join(split_word(s) if s != UNSPLIT else "not split" for s in splits).capitalize()


def balance(result: ScanResult) -> None:
    facts = explore.balance(result.manifest)
    for warning in facts.warnings:  # they name classes: text
        st.warning(plain(warning), icon=":material/warning:")
    if result.manifest.empty:
        return
    st.plotly_chart(figures.class_balance(explore.class_counts(result.manifest)), key="balance_chart")
    st.caption(f"Largest class '{plain(facts.largest[0])}' ({facts.largest[1]:,}), smallest '{plain(facts.smallest[0])}' "
               f"({facts.smallest[1]:,}), ratio {facts.ratio:.1f}x.")  # fmt: skip


def samples(result: ScanResult) -> None:
    manifest = result.manifest
    if manifest.empty:
        st.info("No images to show.")
        return
    c1, c2, c3 = st.columns([2, 1, 1])
    label = c1.selectbox("Class", [ALL, *natural_sorted(manifest["label"].unique())], key="grid_class")
    split = c2.selectbox("Split", ["all", *sorted(manifest["split"].replace("", "unsplit").unique())], key="grid_split")
    per_row = c3.selectbox("Images per row", [8, 12, 16], key="grid_per_row")
    rows = manifest if split == "all" else manifest[manifest["split"].replace("", "unsplit") == split]
    if label == ALL:
        _grid_by_class(result, rows, per_row)
    else:
        _grid_one_class(result, rows[rows["label"] == label], per_row)


def _grid_by_class(result: ScanResult, rows: pd.DataFrame, per_row: int) -> None:
    labels = natural_sorted(rows["label"].unique())
    n_pages = max(1, -(-len(labels) // CLASSES_PER_PAGE))
    page = 0
    if n_pages > 1:
        page = st.number_input(f"Page of classes (1-{n_pages})", 1, n_pages, 1, key="grid_class_page") - 1
    for label in labels[page * CLASSES_PER_PAGE : (page + 1) * CLASSES_PER_PAGE]:
        of_class = rows[rows["label"] == label]
        st.markdown(f"**{plain(label)}** · {count_of(len(of_class), 'image')}")
        _thumbs(result, of_class.head(per_row), per_row)


def _grid_one_class(result: ScanResult, rows: pd.DataFrame, per_row: int) -> None:
    per_page = per_row * 4
    n_pages = max(1, -(-len(rows) // per_page))
    page = 0
    if n_pages > 1:
        page = st.number_input(f"Page (1-{n_pages}), {len(rows):,} images", 1, n_pages, 1, key="grid_page") - 1
    shown = explore.page_of(rows, page, per_page)
    for start in range(0, len(shown), per_row):
        _thumbs(result, shown.iloc[start : start + per_row], per_row)


def _thumbs(result: ScanResult, rows: pd.DataFrame, per_row: int) -> None:
    files = thumbnail_files([result.root / p for p in rows["path"]], workspace().cache)
    cols = st.columns(per_row)
    for col, path, thumb in zip(cols, rows["path"], files, strict=False):  # the last row may be short
        name = plain(path.rsplit("/", 1)[-1])  # image captions are Markdown too
        if isinstance(thumb, ImageError):
            col.caption(f"{name}: {plain(thumb.reason)}")
        else:
            col.image(str(thumb), caption=name, width="stretch")


def properties(result: ScanResult) -> None:
    manifest = result.manifest
    if manifest.empty:
        st.info("No images to describe.")
        return
    facts = explore.size_summary(manifest)
    if facts["distinct_sizes"] == 1:
        st.markdown(f"Every image is **{facts['min']} px**; {facts['total_mb']} MB in all.")
    else:
        common = ", ".join(f"{size} px ({count_of(n, 'image')})" for size, n in facts["common"])
        more = " ..." if facts["distinct_sizes"] > len(facts["common"]) else ""
        st.markdown(f"**{facts['distinct_sizes']:,}** different sizes, from {facts['min']} to {facts['max']} px "
                    f"(median {facts['median']}); the most common: {common}{more}. {facts['total_mb']} MB in "
                    "all.")  # fmt: skip
        st.plotly_chart(figures.image_sizes(manifest), key="sizes_chart")
    c1, c2, c3 = st.columns(3)
    c1.markdown("**Colours**")
    modes = explore.value_table(manifest, "mode")
    modes["mode"] = modes["mode"].map(lambda m: MODE_WORDS.get(m, m))
    c1.plotly_chart(figures.counts_bar(modes, "mode"), key="modes_chart")
    c2.markdown("**File types**")
    c2.plotly_chart(figures.counts_bar(explore.value_table(manifest, "format"), "format"), key="formats_chart")
    c3.markdown("**File sizes**")
    c3.plotly_chart(figures.file_sizes(manifest), key="bytes_chart")


def unreadable(result: ScanResult) -> None:
    if result.unreadable.empty:
        st.success("Every file could be read.", icon=":material/check_circle:")
        return
    n = len(result.unreadable)
    st.warning(f"{count_of(n, 'file')} cannot be used; {'it is' if n == 1 else 'they are'} left out of training and "
               "of every count above. Fix or remove them, then rescan.", icon=":material/warning:")  # fmt: skip
    st.dataframe(result.unreadable.rename(columns={"path": "File", "reason": "Why it cannot be used"}),
                 hide_index=True, width="stretch")  # fmt: skip


def projection(result: ScanResult) -> None:
    if len(result.manifest) < 3:
        st.info("A 2-D view needs at least 3 readable images.")
        return
    c1, c2 = st.columns([1, 2])
    method = c1.radio("Method", embed.METHODS, format_func=str.upper, horizontal=True, key="proj_method")
    limit = c2.slider("Images at most (the same share of each class)", 100, 5000, embed.DEFAULT_MAX_POINTS, 100,
                      key="proj_points")  # fmt: skip
    st.caption("Each dot is one image, reduced to 16x16 pixels. Classes that form separate clouds are easy to "
               "tell apart; overlapping clouds are where a model will struggle. Lasso dots to see their images.")  # fmt: skip
    drawn: set = st.session_state.setdefault(DRAWN, set())
    key = (result.ref.spec, method, limit, len(result.manifest))
    if key not in drawn and not st.button(f"Draw the {method.upper()} view", type="primary", key="proj_go"):
        return
    try:
        with st.spinner(f"Computing {method.upper()} of up to {limit:,} images..."):
            frame = _projection(str(workspace().root), *key, result)
    except CoreError as exc:
        show_error(exc)
        return
    drawn.add(key)
    _projection_chart(result, frame, method)


@st.cache_data(show_spinner=False, max_entries=8)
def _projection(root: str, spec: str, method: str, limit: int, n_images: int, _result: ScanResult) -> pd.DataFrame:
    """A 2-D view, kept once for every tab of this server (each gets its own copy), the 8 last asked for.

    ``root`` is the workspace (its cache, and what a dataset spec means); ``n_images`` tells a rescanned dataset's
    view from the one before.
    """
    sample = embed.sample_per_class(_result.manifest, limit)
    return embed.projection_frame(_result.root, sample, method, cache_dir=workspace().cache)


def _projection_chart(result: ScanResult, frame: pd.DataFrame, method: str) -> None:
    event = st.plotly_chart(figures.projection(frame, method), key="proj_chart", on_select="rerun",
                            selection_mode=("points", "lasso", "box"))  # fmt: skip
    points = event.selection.points if event and event.selection else []
    paths = [p["hovertext"] for p in points if p.get("hovertext")][:LASSO_SHOWN]
    if paths:
        shown = result.manifest[result.manifest["path"].isin(paths)]
        st.markdown(f"**{len(points):,} selected**" + (f" (the first {len(shown)} shown)" if len(points) > len(shown)
                                                      else ""))  # fmt: skip
        for start in range(0, len(shown), 12):  # rows of 12: every one of them shown, as said
            _thumbs(result, shown.iloc[start : start + 12], 12)
