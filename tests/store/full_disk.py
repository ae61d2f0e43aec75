"""A full disk, for real: run by ``tests/store/test_disk_full.py`` inside a small tmpfs mounted in a private mount
namespace (``unshare --map-root-user --mount``), so no root and no disk of the machine is touched.

    python -m tests.store.full_disk MOUNTPOINT

Steps (each a real ``python -m core`` process), printed as one JSON object on stdout:

1. ``train`` a ResNet-18 (checkpoints of ~90 MB: weights and optimizer state) on a 128 MiB disk: ``best.pt`` fits, ``last.pt`` does not;
2. the disk is filled to the last byte;
3. ``runs``, ``scan`` of a dataset never scanned, and ``dedup --apply`` are run on the full disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests import imagefactory as f

ROOT = Path(__file__).resolve().parents[2]


def core(ws: Path, *argv: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "core", *argv, "--workspace", str(ws), "--json"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    return {"code": done.returncode, "out": done.stdout[-4000:], "err": done.stderr[-4000:]}


def colours(root: Path) -> Path:
    for label, colour in {"red": (220, 30, 30), "blue": (30, 40, 220)}.items():
        for i in range(12):
            f.write_rgb(root / label / f"{i}.png", size=(16, 12), color=colour, seed=i)
    return root


def fill(folder: Path) -> int:
    """Write until the file system refuses; the bytes written."""
    written = 0
    with open(folder / "filler", "wb", buffering=0) as out:
        for size in (2**20, 2**12, 1):
            try:
                while True:
                    written += out.write(b"\0" * size)
            except OSError:
                continue
    return written


def main(mount: Path) -> dict:
    ws, data, fresh = mount / "ws", colours(mount / "data"), colours(mount / "fresh")
    report: dict = {}
    report["train"] = core(ws, "train", str(data), "--arch", "resnet18", "--epochs", "3", "--image-size", "16",
                           "--batch-size", "8", "--threads", "1")  # fmt: skip
    folder = ws / "checkpoints" / "run-1"
    report["files_after_train"] = sorted(p.name for p in folder.iterdir())
    report["best_loads"] = core(ws, "predict", str(data / "red" / "0.png"), "--run", "1")["code"] == 0
    report["filled_bytes"] = fill(mount)
    report["runs"] = core(ws, "runs")
    report["scan"] = core(ws, "scan", str(fresh))
    report["dedup_apply"] = core(ws, "dedup", str(fresh), "--apply", "keep-one")
    return report


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
