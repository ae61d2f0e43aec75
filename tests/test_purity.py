"""The layering rules (ARCHITECTURE.md): core/ never imports Streamlit, its stage packages import downward only, no
import circles, no module over ~400 lines, a light run store, and pages that never import torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT

# The product's stages, lowest first. A module may import its own package and packages of a lower rank only
# (siblings of one rank, such as dedup and train, never import each other).
STAGES = {"common": 0, "images": 1, "datasets": 2, "store": 2, "dedup": 3, "train": 3, "explain": 4, "labels": 4,
          "evaluate": 5, "scaling": 5, "experiments": 6, "export": 6, "cli": 9}  # fmt: skip
MAX_LINES = 400  # "~400": a module past it holds two ideas
LINE_SLACK = 40  # ... with a little room before the test calls it so


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(*folders: str) -> list[Path]:
    """Every .py file under the folders, subpackages included."""
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


CORE_MODULES = [module_name(p) for p in source_files("core")]


def import_nodes(source: Path) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def imported_modules(source: Path) -> set[str]:
    """Top-level names of every module ``source`` imports, wherever the import statement is."""
    names: set[str] = set()
    for node in import_nodes(source):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def core_imports(source: Path, *, runtime_only: bool = False) -> set[str]:
    """The core modules ``source`` imports (``from core.x import y`` gives core.x, or core.x.y when that is a module).

    ``runtime_only`` leaves out imports under ``if TYPE_CHECKING:``, which never run.
    """
    tree = ast.parse(source.read_text(), filename=str(source))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}  # fmt: skip
    found: set[str] = set()
    # The nodes of this tree: ids of another parse's nodes never match (and a freed node's id can be reused).
    for node in (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)):
        if runtime_only and id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("core."))
        elif node.module and node.module.startswith("core") and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in CORE_MODULES else node.module)
    return found - {"core"}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGES) else None


def test_core_is_found_with_its_subpackages() -> None:
    assert {"core.datasets.scan", "core.store.runs", "core.cli.main", "core.__main__"} <= set(CORE_MODULES)


def test_importing_every_core_module_does_not_import_streamlit() -> None:
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
    offenders = [str(p.relative_to(ROOT)) for p in source_files("core") if "streamlit" in imported_modules(p)]
    assert offenders == []


def test_every_core_module_lives_in_a_stage_package() -> None:
    loose = [m for m in CORE_MODULES if m not in ("core", "core.__main__") and package_of(m) is None]
    assert loose == [], "put each module in the package of its stage"
    assert {package_of(m) for m in CORE_MODULES} - {None} <= set(STAGES)


def test_stages_import_downward_only() -> None:
    upward = []
    for path in source_files("core"):
        own = package_of(module_name(path))
        for target in core_imports(path):
            theirs = package_of(target)
            if own and theirs and theirs != own and STAGES[theirs] >= STAGES[own]:
                upward.append(f"{module_name(path)} -> {target}")
    assert upward == []


def test_no_import_circles_between_modules() -> None:
    graph = {module_name(p): core_imports(p, runtime_only=True) & set(CORE_MODULES) for p in source_files("core")}
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    circles.append(" -> ".join([*path, nxt]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert circles == []


def test_every_package_says_what_it_holds_and_may_import() -> None:
    for package in STAGES:
        init = ROOT / "core" / package / "__init__.py"
        if init.exists():
            doc = ast.get_docstring(ast.parse(init.read_text())) or ""
            assert "May import" in doc, f"{init}: say what the package may import"


@pytest.mark.parametrize("folder", ["core", "ui"])
def test_no_module_is_over_about_400_lines(folder: str) -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in source_files(folder)
        if (n := len(p.read_text().splitlines())) > MAX_LINES + LINE_SLACK
    }
    assert long == {}, f"modules over ~{MAX_LINES} lines: cut each where a newcomer would look"


def test_package_inits_are_light() -> None:
    """Importing the run store (or any package) must not import torch: the CLI's ``runs`` answers fast."""
    code = (
        "import sys, importlib\n"
        f"for name in ['core.store.runs', *{[f'core.{p}' for p in STAGES if (ROOT / 'core' / p).is_dir()]!r}]:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'pandas', 'sklearn') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def page_files() -> list[Path]:
    """The pages ``app.py`` navigates to (``st.Page("app_pages/home.py", ...)``), and any in a pages/ folder."""
    named = re.findall(r"""st\.Page\(\s*["']([^"']+\.py)["']""", (ROOT / "app.py").read_text())
    return sorted({ROOT / name for name in named} | set((ROOT / "pages").glob("*.py")))


def test_no_page_imports_torch() -> None:
    pages = page_files()
    assert pages and all(p.is_file() for p in pages), pages
    offenders = [p.name for p in pages if imported_modules(p) & {"torch", "torchvision"}]
    assert offenders == []
