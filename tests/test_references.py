"""Every document the code and the tests point to is in the repository: a person who clones the project can
follow each reference. Notes kept outside it (a design file, research notes) are said in place instead, or in
README.md, ARCHITECTURE.md or bench/README.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support import ROOT

# Built from parts, so that this file does not name what it looks for.
OUTSIDE = re.compile("|".join(re.escape(name) for name in ("DESIGN" + ".md", "research" + "/")))
SKIPPED = {".venv", ".git", "workspace", "artifacts", "__pycache__", ".ruff_cache", ".pytest_cache", "out"}


def _files() -> list[Path]:
    """The repository's .py and .md files: what git tracks or would (its ignored files left out), else a walk."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py", "*.md"],
                            cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    if listed.returncode == 0 and listed.stdout.strip():
        return [ROOT / line for line in listed.stdout.splitlines() if (ROOT / line).is_file()]
    return [p for p in ROOT.rglob("*") if p.suffix in (".py", ".md") and not SKIPPED & set(p.relative_to(ROOT).parts)]


def test_no_file_points_to_a_document_the_repository_does_not_hold() -> None:
    files = _files()
    assert any(p.name == "ARCHITECTURE.md" for p in files) and len(files) > 50  # the listing found the repository
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in files
             for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if OUTSIDE.search(line)]  # fmt: skip
    assert not found, "say the fact in place, or point to README.md / ARCHITECTURE.md / bench/README.md:\n" + "\n".join(
        found
    )
