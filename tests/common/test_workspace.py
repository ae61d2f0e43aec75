"""Tests for core.workspace: the folders it makes and the paths a user may name (real folders and links)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.common.errors import PathNotAllowedError
from core.common.workspace import DATA_ROOTS_ENV, WORKSPACE_ENV, Workspace


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A workspace with no data roots: only its own folder may be read (the suite's default allows tmp_path)."""
    monkeypatch.delenv(DATA_ROOTS_ENV, raising=False)
    return Workspace.open(tmp_path / "ws")


def test_open_creates_the_workspace_folders(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "new" / "ws")
    for folder in (ws.datasets, ws.cache, ws.checkpoints, ws.uploads):
        assert folder.is_dir() and folder.is_relative_to(ws.root)
    assert ws.runs_db.parent == ws.root


def test_the_object_alone_creates_nothing(tmp_path: Path) -> None:
    Workspace(tmp_path / "ws")
    assert not (tmp_path / "ws").exists()


def test_the_default_workspace_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKSPACE_ENV, str(tmp_path / "from-env"))
    assert Workspace.open().root == (tmp_path / "from-env").resolve()


@pytest.mark.parametrize(
    "typed",
    ["datasets/cats", "./datasets/../datasets/cats", "  datasets/cats  ", "{ws}/datasets/cats", "{ws}"],
)
def test_paths_inside_the_workspace_are_allowed_and_resolved(ws: Workspace, typed: str) -> None:
    (ws.datasets / "cats").mkdir()
    expected = ws.root if typed == "{ws}" else ws.datasets / "cats"
    assert ws.confine(typed.format(ws=ws.root)) == expected


@pytest.mark.parametrize(
    "typed",
    ["/etc", "/etc/passwd", "../", "datasets/../../elsewhere", "{ws}/../elsewhere", "{ws}-sibling", "~", "a\0b"],
)
def test_paths_outside_the_allowed_roots_are_refused(ws: Workspace, tmp_path: Path, typed: str) -> None:
    (tmp_path / "elsewhere").mkdir()
    Path(f"{ws.root}-sibling").mkdir()  # shares the workspace's name as a prefix, not as a parent
    with pytest.raises(PathNotAllowedError):
        ws.confine(typed.format(ws=ws.root))


def test_the_refusal_says_how_to_add_a_folder_but_names_neither_the_path_nor_the_workspace(ws: Workspace) -> None:
    with pytest.raises(PathNotAllowedError, match=DATA_ROOTS_ENV) as caught:
        ws.confine("/etc/os-release", "labels CSV")
    message = str(caught.value)
    assert message.startswith("the labels CSV is outside the folders this studio may read")
    assert "/etc" not in message and "os-release" not in message and str(ws.root) not in message


def test_a_link_inside_the_workspace_pointing_outside_is_refused(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "key.txt").write_text("secret")
    (ws.datasets / "innocent").symlink_to(tmp_path / "private", target_is_directory=True)
    for typed in ("datasets/innocent", "datasets/innocent/key.txt"):
        with pytest.raises(PathNotAllowedError):
            ws.confine(typed)


def test_a_link_inside_the_workspace_pointing_inside_is_allowed(ws: Workspace) -> None:
    (ws.datasets / "real").mkdir()
    (ws.datasets / "alias").symlink_to(ws.datasets / "real", target_is_directory=True)
    assert ws.confine("datasets/alias") == ws.datasets / "real"


def test_a_symlink_loop_is_no_crash(ws: Workspace) -> None:
    (ws.datasets / "loop").symlink_to(ws.datasets / "loop")
    assert ws.confine("datasets/loop").is_relative_to(ws.root)


def test_data_roots_from_the_environment_are_allowed_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos, scans = tmp_path.resolve() / "photos", tmp_path.resolve() / "scans"
    photos.mkdir(), scans.mkdir(), (photos / "cats").mkdir()
    monkeypatch.setenv(DATA_ROOTS_ENV, f"{photos}:{scans}: ")
    ws = Workspace.open(tmp_path / "ws")

    assert ws.allowed_roots == (ws.root, photos, scans)
    assert ws.confine(photos / "cats") == photos / "cats"
    assert ws.confine(str(scans)) == scans
    with pytest.raises(PathNotAllowedError):
        ws.confine(photos / ".." / "ws-other")


def test_list_folders_shows_datasets_and_data_roots_without_hidden_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "photos" / "holiday").mkdir(parents=True)
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path / "photos"))
    ws = Workspace.open(tmp_path / "ws")
    (ws.datasets / "sample-digits").mkdir()
    (ws.datasets / ".sample-digits-tmp").mkdir()
    (ws.datasets / "notes.txt").write_text("x")

    assert ws.list_folders() == [ws.datasets / "sample-digits", tmp_path.resolve() / "photos" / "holiday"]


def test_relative_name_is_short_inside_the_workspace(ws: Workspace, tmp_path: Path) -> None:
    assert ws.relative_name(ws.datasets / "cats") == "datasets/cats"
    assert ws.relative_name(tmp_path / "x") == str(tmp_path / "x")


def test_the_dashboard_names_operator_folders_by_short_names_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STUDIO_DATA_ROOTS", raising=False)
    photos, scans = tmp_path / "srv" / "photos", tmp_path / "other" / "photos"
    (photos / "cats").mkdir(parents=True)
    (scans / "dogs").mkdir(parents=True)
    ws = Workspace.open(tmp_path / "ws").with_roots(photos, scans)
    assert ws.root_names() == {"photos": photos.resolve(), "photos-2": scans.resolve()}
    assert ws.relative_name((photos / "cats").resolve()) == "photos/cats"
    assert ws.relative_name((scans / "dogs").resolve()) == "photos-2/dogs"
    assert ws.confine("photos/cats") == (photos / "cats").resolve()
    assert ws.confine("photos-2/dogs") == (scans / "dogs").resolve()
    message = ws.redact(f"cannot read {photos.resolve()}/cats/1.png or {scans.resolve()}")
    assert message == "cannot read photos/cats/1.png or photos-2"
    assert str(tmp_path) not in message


def test_a_short_name_never_hides_a_workspace_folder_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STUDIO_DATA_ROOTS", raising=False)
    shared = tmp_path / "srv" / "datasets"
    shared.mkdir(parents=True)
    ws = Workspace.open(tmp_path / "ws").with_roots(shared)
    assert list(ws.root_names()) == ["datasets-2"]  # "datasets" is the workspace's own folder
    assert ws.confine("datasets") == ws.datasets


def test_the_command_line_keeps_shell_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STUDIO_DATA_ROOTS", raising=False)
    photos = tmp_path / "srv" / "photos"
    photos.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    ws = Workspace.open(tmp_path / "ws").for_operator([str(photos)])
    assert ws.root_names() == {}
    assert ws.relative_name(photos.resolve()) == str(photos.resolve())
    assert ws.confine("srv/photos") == photos.resolve()
