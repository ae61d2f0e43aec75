"""AppTest runs the real app in this process: each test gets its own workspace (``<tmp>/ws``) with
``<tmp>/data`` as the operator's data root, and Streamlit's cached resources (workspace, run store, job
registry) are rebuilt for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st


@pytest.fixture(autouse=True)
def fresh_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    ws = tmp_path / "ws"
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    monkeypatch.setenv("STUDIO_DATA_ROOTS", str(tmp_path / "data"))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield ws
    st.cache_resource.clear()
