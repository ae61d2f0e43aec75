"""Golden images: files of the run's test split copied into the export with the studio's own answers for each, so
that anyone (a test, the standalone script, the demo page, a colleague's app) can check that the exported model
answers like the studio."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from core.common.errors import CoreError
from core.common.jsonfile import read_json
from core.explain.predict import Predictor
from core.images.opener import ImageError

GOLDEN_N = 20
GOLDEN_DIR = "golden"
GOLDEN_FILE = "golden.json"


@dataclass
class Golden:
    """The golden images as written: their answers (``golden.json``'s rows) and the studio's input tensors."""

    rows: list[dict[str, Any]]
    batch: torch.Tensor  # (n, C, S, S): what the studio fed its model for each file, for the parity check


def pick(splits: pd.DataFrame, root: Path, n: int = GOLDEN_N) -> list[tuple[Path, str]]:
    """Up to ``n`` (file, label) of the test split (validation when a run kept no test images), taken in turn
    from each class so that every class shows; in the order of the stored split, so the same run gives the
    same files."""
    chosen = splits[splits["split"] == "test"]
    if chosen.empty:
        chosen = splits[splits["split"] == "val"]
    queues = {label: list(rows["path"]) for label, rows in chosen.groupby("label", sort=True)}
    picked: list[tuple[Path, str]] = []
    while len(picked) < n and any(queues.values()):
        for label, paths in queues.items():
            if paths and len(picked) < n:
                picked.append((root / paths.pop(0), label))
    return picked


def write_golden(folder: Path, predictor: Predictor, picks: list[tuple[Path, str]]) -> Golden:
    """Copy each picked file into ``folder/golden/`` (its bytes unchanged) with the studio's answer for the copy;
    a file that cannot be read is left out (a test split may hold one the run skipped)."""
    (folder / GOLDEN_DIR).mkdir(parents=True, exist_ok=True)
    rows, tensors = [], []
    for source, label in picks:
        name = f"{GOLDEN_DIR}/{len(rows):02d}{source.suffix.lower()}"
        try:
            shutil.copyfile(source, folder / name)
            picture = predictor.open(folder / name)
            answer = predictor.run(folder / name, name)
        except (OSError, ImageError):
            (folder / name).unlink(missing_ok=True)
            continue
        tensors.append(predictor.inference.preprocess([picture])[0])
        rows.append({"file": name, "label": label, "top": answer.top, "not_sure": answer.not_sure, "why": answer.why})
    if not rows:
        raise CoreError("none of the run's test images could be read: nothing to check the export against")
    return Golden(rows, torch.stack(tensors))


def golden_json(run_id: int, golden: Golden) -> dict[str, Any]:
    return {"run": run_id, "images": golden.rows,
            "what": "the studio's own answers for these files: an exported model must give the same top class and "
                    "probabilities within 1e-4 on the studio's input tensors"}  # fmt: skip


def read_golden(folder: Path) -> dict[str, Any]:
    """``golden.json`` of an export folder (size- and shape-checked like every JSON file the studio reads)."""
    data = read_json(folder / GOLDEN_FILE, GOLDEN_FILE, expect=dict)
    if not isinstance(data.get("images"), list):
        raise CoreError(f"{GOLDEN_FILE} is not an export's list of golden images")
    return data
