"""Small drawing helpers used by several pages."""

from __future__ import annotations

import streamlit as st

from ui.state import workspace


def show_error(exc: BaseException, what: str = "") -> None:
    """A bad-input error in words, never a traceback, and never the workspace's place on the server's disk."""
    prefix = f"{what}: " if what else ""
    st.error(workspace().redact(f"{prefix}{exc}"), icon=":material/error:")


def placeholder(title: str, issue: str, bullets: list[str]) -> None:
    """A page that is planned: what it will do, so navigation is complete from day one."""
    st.title(title)
    st.info(f"This page is coming next ({issue}). Here is what it will do:", icon=":material/construction:")
    st.markdown("\n".join(f"- {b}" for b in bullets))
    st.page_link(
        "app_pages/datasets.py",
        label="Meanwhile: look at your data on the Datasets page",
        icon=":material/photo_library:",
    )
