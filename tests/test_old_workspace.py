"""A workspace written by the code before core/ became packages (commit fbf0fdd) opens and resumes with this code.

``tests/data/workspace-before-packages.tar.gz`` was made by that commit's own code (``make_old_ws.py`` in the
note of that change): on ``sample:digits``, run 1 trained one LeNet epoch to completion, run 2 was cancelled
right after its first checkpoint; then a scan (manifest cache) and a duplicate search (fingerprint cache).
It holds ``runs.sqlite``, ``checkpoints/run-*`` and ``cache/{manifests,hashes}`` (the sample's images are
made again here, from scikit-learn, exactly as before).
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from core.cli.main import main
from core.common.workspace import Workspace
from core.datasets.scan import scan_dataset
from core.datasets.sources import resolve_dataset
from core.dedup.fingerprints import fingerprint_cache, hash_dataset
from core.explain.predict import load_run_predictor
from core.store.runs import RunStore
from tests.support import ROOT

ARCHIVE = ROOT / "tests" / "data" / "workspace-before-packages.tar.gz"


@pytest.fixture
def old_ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "old-ws"
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(root, filter="data")
    return Workspace.open(root)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict | list:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_the_runs_are_listed_as_they_were(old_ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    rows = {r["run_id"]: r for r in _cli(capsys, "runs", "--workspace", str(old_ws.root))}
    assert {k: rows[k]["status"] for k in rows} == {1: "completed", 2: "cancelled"}
    assert rows[1]["arch"] == "lenet" and rows[1]["dataset"] == "sample:digits" and rows[1]["best_val_acc"] > 0.5


def test_the_completed_run_classifies(old_ws: Workspace) -> None:
    predictor = load_run_predictor(old_ws, RunStore(old_ws.runs_db), 1)
    ref = resolve_dataset("sample:digits", old_ws)
    first = ref.root / scan_dataset(ref).manifest["path"].iloc[0]
    prediction = predictor.run(first, first.name, cam="gradcam")
    assert predictor.classes == [str(d) for d in range(10)] and len(prediction.top) == 5
    assert prediction.heatmap is not None and prediction.heatmap.shape == (8, 8)


def test_the_cancelled_run_resumes_to_the_end_with_every_epoch(
    old_ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _cli(capsys, "train", "--resume", "2", "--workspace", str(old_ws.root))
    assert result["run_id"] == 2 and result["status"] == "completed"
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3, 4]  # the stored config asked for 4
    assert 0 <= result["test"]["accuracy"] <= 1


def test_the_caches_are_read_not_rebuilt(old_ws: Workspace) -> None:
    """Given the files' recorded size and time, the new code takes every image's facts from the old cache and
    opens none; fingerprints of an older definition are recomputed once and then read."""
    ref = resolve_dataset("sample:digits", old_ws)
    manifest_cache = old_ws.cache / "manifests" / f"{ref.key}.parquet"
    recorded = pd.read_parquet(manifest_cache)
    for row in recorded.itertuples():  # the sample was made again just now: give its files their old times
        os.utime(ref.root / row.path, ns=(row.mtime_ns, row.mtime_ns))
    scan = scan_dataset(ref, old_ws.cache)
    assert scan.n_opened == 0 and len(scan.manifest) == 1797
    assert fingerprint_cache(ref, old_ws.cache).is_file()
    # the fingerprint's definition changed since (CACHE_VERSION 2: grayscale copies, low information), so the
    # old fingerprints are recomputed once, by design, and the new ones are read from then on
    assert hash_dataset(scan, old_ws.cache).n_opened == 1797
    assert hash_dataset(scan, old_ws.cache).n_opened == 0
