"""The browser tests' server: ``streamlit run`` on the module's own ``workspace`` fixture (a folder), for the
modules that need nothing else of it (a module with other needs defines its own ``server``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app_server import running_app


@pytest.fixture(scope="module")
def server(workspace: Path) -> Iterator[str]:
    with running_app(workspace) as url:
        yield url
