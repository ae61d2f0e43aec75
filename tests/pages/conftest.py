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


@pytest.fixture
def no_training_left(fresh_workspace: Path) -> Iterator[None]:
    """For the modules that train (``pytestmark = pytest.mark.usefixtures("no_training_left")``): never leave a
    training thread running into the next test. Not autouse: the registry it asks is built on first use, and most
    page tests never train."""
    yield
    from ui.state import jobs

    for job in jobs().active():
        jobs().cancel(job.run_id)
        jobs().wait(job.run_id, timeout=120)
