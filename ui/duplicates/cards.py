"""Thumbnails for the Duplicates page: grids, pairs side by side, a pager, hash-bit distances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.common.errors import ImageError
from core.datasets.thumbs import thumbnail_files
from ui.state import workspace
from ui.text import plain

THUMBS_PER_ROW = 8


def bits(hashes: np.ndarray, other: int) -> list[int]:
    """Hamming distance of each 64-bit hash (stored as int64) to ``other``."""
    return np.bitwise_count((hashes ^ np.int64(other)).view(np.uint64)).astype(int).tolist()


def name(path: str) -> str:
    """A file's name, escaped for Markdown (every caller puts it in a caption)."""
    return plain(path.rsplit("/", 1)[-1])


def pager(n: int, per_page: int, key: str, what: str) -> int:
    """A page number input when ``n`` items need more than one page; returns the 0-based page."""
    n_pages = max(1, -(-n // per_page))
    if n_pages == 1:
        st.caption(f"{n:,} {what}")
        return 0
    if st.session_state.get(key, 1) > n_pages:  # the filters shrank the list
        st.session_state[key] = 1
    page = st.number_input(f"Page (1-{n_pages}) of {n:,} {what}", 1, n_pages, key=key, step=1, width=260)
    return int(page) - 1


def thumb_grid(root: Path, paths: list[str], captions: list[str], per_row: int = THUMBS_PER_ROW) -> None:
    """Thumbnails with their captions (Markdown: labels and names in them escaped with ``plain`` by the caller)."""
    files = thumbnail_files([root / p for p in paths], workspace().cache)
    for start in range(0, len(paths), per_row):
        cols = st.columns(per_row)
        for col, thumb, caption in zip(cols, files[start : start + per_row], captions[start : start + per_row],
                                       strict=False):  # fmt: skip
            with col.container(gap="xxsmall"):
                show_thumb(thumb)
                st.caption(caption)


def show_thumb(thumb: Path | ImageError) -> None:
    if isinstance(thumb, ImageError):
        st.caption(f":material/broken_image: {plain(thumb.reason)}")
    else:
        st.image(str(thumb), width="stretch")


def pair_cards(root: Path, rows: pd.DataFrame, texts: list[str], per_row: int = 2) -> None:
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
                    facts = [plain(row[k]) for k in (f"split_{side}", f"label_{side}") if row.get(k) not in (None, "")]
                    with c.container(gap="xxsmall"):
                        show_thumb(thumb)
                        st.caption(f"{' · '.join(facts)}  \n{name(row[f'path_{side}'])}")
                columns[2].markdown(text)
