"""The workspace: where datasets, the run store, checkpoints and caches live, and which paths a user may name.

One folder (``--workspace``, default ``./workspace``) holds everything the studio writes, so a user can
move, back up or delete it as a whole. Paths typed in the dashboard are confined to *allowed roots*: the
workspace plus any folders the operator lists in ``STUDIO_DATA_ROOTS`` (``os.pathsep``-separated), so a
dashboard shown to others cannot be used to browse the server's disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import PathNotAllowedError

DEFAULT_WORKSPACE = Path("workspace")
DATA_ROOTS_ENV = "STUDIO_DATA_ROOTS"
WORKSPACE_ENV = "STUDIO_WORKSPACE"


@dataclass(frozen=True)
class Workspace:
    """Paths inside one workspace folder. Creating the object creates nothing on disk."""

    root: Path
    extra_roots: tuple[Path, ...] = field(default_factory=tuple)

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

    def confine(self, user_path: str | os.PathLike[str]) -> Path:
        """Resolve a path typed by a user; refuse it unless it lies inside an allowed root.

        Relative paths are taken relative to the workspace. Symlinks are resolved first, so a link inside
        the workspace that points elsewhere is refused too.

        Raises:
            PathNotAllowedError: the path resolves outside every allowed root.
        """
        raw = Path(str(user_path).strip()).expanduser()
        if "\0" in str(raw):  # no file can have such a name; the OS calls below would raise ValueError
            raise PathNotAllowedError(f"{user_path!r} is not a valid path (it holds a NUL character)")
        # os.path.realpath, not Path.resolve: on Python 3.11 resolve() raises RuntimeError on a symlink loop.
        resolved = Path(os.path.realpath(raw if raw.is_absolute() else self.root / raw))
        if any(resolved.is_relative_to(root) for root in self.allowed_roots):
            return resolved
        roots = ", ".join(str(r) for r in self.allowed_roots)
        raise PathNotAllowedError(
            f"{user_path} is outside the allowed folders ({roots}); set {DATA_ROOTS_ENV} to add one"
        )

    def list_folders(self) -> list[Path]:
        """Candidate dataset folders: every folder directly inside the allowed roots' dataset areas."""
        found: list[Path] = []
        for base in (self.datasets, *self.extra_roots):
            if base.is_dir():
                found.extend(sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")))
        return found

    def relative_name(self, path: Path) -> str:
        """How to show ``path`` to a user: relative to the workspace when inside it."""
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)


def _roots_from_env() -> tuple[Path, ...]:
    raw = os.environ.get(DATA_ROOTS_ENV, "")
    return tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip())
