"""A Python that can import numpy, Pillow and onnxruntime and nothing else of this project's environment (no torch,
no studio code): what the export's ``predict.py`` promises to need. A venv without pip whose one ``.pth`` file
points at links to those three packages of the project's own venv (nothing is downloaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
import venv
from pathlib import Path

ONLY = ("numpy", "numpy.libs", "PIL", "pillow.libs", "onnxruntime")


def isolated_python(where: Path) -> Path:
    """The interpreter of a fresh venv at ``where`` that sees only :data:`ONLY`."""
    python = where / "bin" / "python"
    if python.exists():
        return python
    venv.EnvBuilder(with_pip=False, symlinks=True).create(where)
    site = Path(sysconfig.get_paths()["purelib"])  # this (the project's) venv's site-packages
    only = where / "only"
    only.mkdir()
    for name in ONLY:
        if (site / name).exists():
            (only / name).symlink_to((site / name).resolve())
    theirs = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (Path(theirs) / "only.pth").write_text(f"{only}\n")
    return python


def run_predict(python: Path, folder: Path, images: list[str]) -> list[dict]:
    """``python predict.py IMAGE... --json`` in the export folder, as its reader would run it."""
    done = subprocess.run([str(python), "predict.py", *images, "--json"], cwd=folder, capture_output=True,
                          text=True, timeout=300, env=_bare_env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def imports_of(python: Path, module: str, folder: Path) -> bool:
    """Whether ``module`` can be imported by ``python`` run in ``folder`` (torch and the studio must not be)."""
    done = subprocess.run([str(python), "-c", f"import {module}"], cwd=folder, capture_output=True, env=_bare_env())
    return done.returncode == 0


def _bare_env() -> dict[str, str]:
    """This environment without the test run's ``PYTHONPATH`` (which points at the project)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
