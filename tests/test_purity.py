"""The layering rules of DESIGN.md: core/ never imports Streamlit, and the pages never import torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE_MODULES = sorted(f"core.{p.stem}" for p in (ROOT / "core").glob("*.py") if p.stem != "__init__")


def imported_modules(source: Path) -> set[str]:
    """Top-level names of every module ``source`` imports, wherever the import statement is."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_importing_every_core_module_does_not_import_streamlit() -> None:
    assert "core.scan" in CORE_MODULES and "core.__main__" in CORE_MODULES
    code = (
        "import importlib, sys\n"
        f"for name in {CORE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m == 'streamlit' or m.startswith('streamlit.'))\n"
        "print(len(loaded), loaded[:5])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0 []"


def test_no_core_source_mentions_streamlit_imports() -> None:
    offenders = [p.name for p in (ROOT / "core").glob("*.py") if "streamlit" in imported_modules(p)]
    assert offenders == []


def page_files() -> list[Path]:
    """The pages ``app.py`` navigates to (``st.Page("app_pages/home.py", ...)``), and any in a pages/ folder."""
    named = re.findall(r"""st\.Page\(\s*["']([^"']+\.py)["']""", (ROOT / "app.py").read_text())
    return sorted({ROOT / name for name in named} | set((ROOT / "pages").glob("*.py")))


def test_no_page_imports_torch() -> None:
    pages = page_files()
    assert pages and all(p.is_file() for p in pages), pages
    offenders = [p.name for p in pages if imported_modules(p) & {"torch", "torchvision"}]
    assert offenders == []
