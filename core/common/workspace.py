"""The workspace: where datasets, the run store, checkpoints and caches live, and which paths may be read.

One folder (``--workspace``, default ``./workspace``) holds everything the studio writes, so a user can
move, back up or delete it as a whole.

``Workspace.confine`` is the one confinement check. Every path that a dashboard user types or picks, that
a file names (a CSV's image folder, a cleaned copy's ``cleaning.json``, a ``csv:``/``json:`` spec) or that
the endpoint receives goes through it, and is refused unless it resolves (symlinks followed) inside an
*allowed root*: the workspace plus the folders the operator lists in ``STUDIO_DATA_ROOTS``
(``os.pathsep``-separated). So a dashboard shown to others cannot be used to read the server's disk. The
refusal never echoes the path: it may come from a file whose content must not leak.

The dashboard names the operator's folders by short names (``root_names``: each folder's own name, e.g.
``photos/cats`` for ``/srv/data/photos/cats``), both in what it shows and in what a user types, so a page, an
address or a message never shows the server's layout.

The command line is the operator's own tool: ``for_operator`` adds the paths typed on it to the roots, and
relative paths there start at the current folder, so ``scan ~/photos`` works as any command would.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.common.errors import PathNotAllowedError

DEFAULT_WORKSPACE = Path("workspace")
DATA_ROOTS_ENV = "STUDIO_DATA_ROOTS"
WORKSPACE_ENV = "STUDIO_WORKSPACE"


@dataclass(frozen=True)
class Workspace:
    """Paths inside one workspace folder. Creating the object creates nothing on disk."""

    root: Path
    extra_roots: tuple[Path, ...] = field(default_factory=tuple)
    base: Path | None = None  # where relative paths start: the workspace (dashboard), the current folder (CLI)

    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None) -> Workspace:
        """The workspace at ``root`` (else ``$STUDIO_WORKSPACE``, else ``./workspace``), folders created."""
        chosen = root or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
        ws = cls(Path(chosen).expanduser().resolve(), _roots_from_env())
        for folder in (ws.datasets, ws.cache, ws.checkpoints, ws.uploads):
            folder.mkdir(parents=True, exist_ok=True)
        return ws

    @property
    def datasets(self) -> Path:
        """Datasets the studio made or received: the sample, extracted ZIPs, cleaned copies."""
        return self.root / "datasets"

    @property
    def cache(self) -> Path:
        """Derived data that can always be rebuilt: scan manifests, thumbnails, features."""
        return self.root / "cache"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def runs_db(self) -> Path:
        return self.root / "runs.sqlite"

    @property
    def allowed_roots(self) -> tuple[Path, ...]:
        return (self.root, *self.extra_roots)

    def for_operator(self, typed: Iterable[str | os.PathLike[str]]) -> Workspace:
        """The command line's view: the paths its operator typed become allowed roots (a file's folder for a
        file), and relative paths start at the current folder, as in any shell command."""
        cwd = Path.cwd()
        paths = [Path(os.path.realpath(cwd / Path(raw).expanduser())) for raw in typed]
        return replace(self.with_roots(*(p.parent if p.is_file() else p for p in paths)), base=cwd)

    def with_roots(self, *folders: str | os.PathLike[str]) -> Workspace:
        """This workspace with more allowed roots (as if listed in ``STUDIO_DATA_ROOTS``)."""
        added = tuple(Path(os.path.realpath(Path(f).expanduser())) for f in folders)
        return replace(self, extra_roots=(*self.extra_roots, *added))

    def allows(self, path: str | os.PathLike[str]) -> bool:
        """True when ``path`` resolves inside an allowed root (see ``confine``)."""
        try:
            self.confine(path)
        except PathNotAllowedError:
            return False
        return True

    def confine(self, path: str | os.PathLike[str], what: str = "path") -> Path:
        """Resolve a path a user typed or a file named; refuse it unless it lies inside an allowed root.

        Relative paths start at ``base`` (the workspace unless the command line set its current folder).
        Symlinks are resolved first, so a link inside the workspace that points elsewhere is refused too.
        ``what`` names the path in the refusal ("the image folder"), which never repeats the path itself.

        Raises:
            PathNotAllowedError: the path resolves outside every allowed root.
        """
        raw = Path(str(path).strip()).expanduser()
        if "\0" in str(raw):  # no file can have such a name; the OS calls below would raise ValueError
            raise PathNotAllowedError(f"the {what} is not a valid path (it holds a NUL character)")
        raw = self._from_short_name(raw)
        # os.path.realpath, not Path.resolve: on Python 3.11 resolve() raises RuntimeError on a symlink loop.
        resolved = Path(os.path.realpath(raw if raw.is_absolute() else (self.base or self.root) / raw))
        if any(resolved.is_relative_to(root) for root in self.allowed_roots):
            return resolved
        raise PathNotAllowedError(
            f"the {what} is outside the folders this studio may read (the workspace"
            f"{' and the folders in ' + DATA_ROOTS_ENV if self.extra_roots else ''}); "
            f"to open data kept elsewhere, the operator adds its folder to {DATA_ROOTS_ENV}"
        )

    def list_folders(self) -> list[Path]:
        """Candidate dataset folders: every folder directly inside the allowed roots' dataset areas."""
        found: list[Path] = []
        for base in (self.datasets, *self.extra_roots):
            if base.is_dir():
                # A link to a folder outside the roots is not offered (opening it would be refused anyway).
                found.extend(sorted(p for p in base.iterdir()
                                    if p.is_dir() and not p.name.startswith(".") and self.allows(p)))  # fmt: skip
        return found

    def root_names(self) -> dict[str, Path]:
        """Short names of the operator's data folders, as the dashboard shows and reads them: each folder's own
        name, with a number added when two share it or the workspace has an entry of that name (which a
        relative path would otherwise mean). Empty for the command line, whose paths are the shell's."""
        if self.base is not None:
            return {}
        names: dict[str, Path] = {}
        for root in self.extra_roots:
            stem = root.name or "data"
            name, n = stem, 2
            while name in names or (self.root / name).exists():
                name, n = f"{stem}-{n}", n + 1
            names[name] = root
        return names

    def _from_short_name(self, raw: Path) -> Path:
        """``photos/cats`` -> the operator's ``photos`` folder's ``cats`` (a relative path whose first part is
        a short name of :meth:`root_names`); any other path unchanged."""
        if raw.is_absolute() or not raw.parts:
            return raw
        root = self.root_names().get(raw.parts[0])
        return root.joinpath(*raw.parts[1:]) if root is not None else raw

    def relative_name(self, path: Path) -> str:
        """How to show ``path`` to a user: relative to the workspace when inside it, by its short name when in
        one of the operator's folders (the dashboard), else as it is."""
        if path.is_relative_to(self.root):
            return str(path.relative_to(self.root))
        for name, root in self.root_names().items():
            if path.is_relative_to(root):
                return str(Path(name) / path.relative_to(root))
        return str(path)

    def redact(self, text: str) -> str:
        """``text`` with the workspace's absolute location removed: what the browser and the endpoint show.

        A safety net under messages that name a path inside the workspace: the server's folder layout is not
        the audience's business, and paths relative to the workspace are what a user types anyway.
        """
        text = text.replace(f"{self.root}{os.sep}", "").replace(str(self.root), "the workspace")
        # Longest first: a folder inside another operator folder keeps its own name.
        for name, root in sorted(self.root_names().items(), key=lambda item: -len(str(item[1]))):
            text = text.replace(f"{root}{os.sep}", f"{name}{os.sep}").replace(str(root), name)
        return text


def _roots_from_env() -> tuple[Path, ...]:
    raw = os.environ.get(DATA_ROOTS_ENV, "")
    return tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip())
