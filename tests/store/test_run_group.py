"""Run groups (a search's trials, a sweep's points) are ``RunGroup(kind, id)``: parsed from and printed to the stored
string in ``core.store.records`` only, the stored string as old workspaces hold it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.common.errors import RunStoreError
from core.store.records import RunGroup, group_words
from core.store.runs import RunStore
from tests.support import ROOT


@pytest.mark.parametrize("group", [RunGroup("search", 12), RunGroup("sweep", 7)])
def test_a_group_prints_as_stored_and_parses_back(group: RunGroup) -> None:
    assert RunGroup.parse(str(group)) == group
    assert str(RunGroup("search", 12)) == "search-12" and group_words("sweep-7") == "sweep 7"


@pytest.mark.parametrize("text", [None, "", "g1", "search-", "search-x", "sweep-²", "sweep-07", "sweep--1",
                                  "search-1-2", "run-5", "Search-3"])  # fmt: skip
def test_strings_the_studio_does_not_write_are_no_group(text: str | None) -> None:
    assert RunGroup.parse(text) is None
    assert group_words(text) == (text or "")


@pytest.mark.parametrize(("kind", "run_id"), [("scan", 1), ("search", 0), ("sweep", True), ("sweep", "3")])
def test_a_group_is_checked_when_made(kind: str, run_id: object) -> None:
    with pytest.raises(RunStoreError):
        RunGroup(kind, run_id)  # type: ignore[arg-type]


def test_the_store_keeps_the_old_string_and_hands_out_the_group(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    search = store.create_run(dataset="d", kind="search")
    trial = store.create_run(dataset="d", group=RunGroup("search", search), parent_id=search)
    old = store.create_run(dataset="d", group=f"search-{search}")  # as a workspace written before RunGroup holds it
    other = store.create_run(dataset="d", group="g1")
    assert store.get_run(trial).group == f"search-{search}"
    assert [r.run_id for r in store.list_runs(group=RunGroup("search", search))] == [old, trial]
    assert (
        store.get_run(old).run_group == RunGroup("search", search) and store.get_run(old).in_group("search") == search
    )
    assert store.get_run(old).in_group("sweep") is None
    assert store.get_run(other).run_group is None and store.get_run(search).run_group is None


# A group written or read as a string anywhere else: an f-string, a prefix test, a slice past the dash.
_PARSING = re.compile(r"""["'](search|sweep)-["'{]|\[7:\]|removeprefix\(["'](search|sweep)""")


def test_no_module_but_the_records_parses_or_prints_a_group() -> None:
    found = []
    for folder in ("core", "ui", "app_pages"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "core/store/records.py":
                continue
            found += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1)
                      if _PARSING.search(line)]  # fmt: skip
    assert found == []
