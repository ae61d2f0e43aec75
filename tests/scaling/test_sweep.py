"""core.scaling.sweep and points: real sweeps on small real datasets, stored and read back as tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.common.errors import CoreError
from core.common.workspace import Workspace
from core.datasets.scan import scan_dataset
from core.datasets.sources import resolve_dataset
from core.scaling.points import stored_points, stored_tables
from core.scaling.prep import run_task
from core.scaling.sweep import SweepConfig, run_sweep
from core.store.runs import RunStore
from core.train.config import TrainConfig
from tests import imagefactory as f


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for label in ("sea", "sky"):
        for i in range(12):
            f.write_photo(root / label / f"{i}.jpg", seed=i + (100 if label == "sky" else 0))
    return root


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_copy_into_split_folders_keeps_every_image(photos: Path, ws: Workspace, tmp_path: Path, mode: str) -> None:
    scan = scan_dataset(resolve_dataset(str(photos), ws))
    done = run_task("copy", scan, tmp_path / "out", workers=2, mode=mode)
    copied = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg"))
    assert done == 24 and len(copied) == 24
    assert {c.split("/")[0] for c in copied} == {"train", "val", "test"}
    assert all(c.split("/")[1] in ("sea", "sky") for c in copied)


def test_a_prep_sweep_stores_one_run_per_point_and_gives_a_table(photos: Path, ws: Workspace) -> None:
    store = RunStore(ws.runs_db)
    config = SweepConfig(kind="prep", dataset=str(photos), workers=[2, 1], repeats=2, mode="threads",
                         task="fingerprint")  # fmt: skip
    seen: list[str] = []
    ids = run_sweep(config, ws, store, progress=lambda done, total, what: seen.append(what))
    assert len(ids) == 4 and len(seen) == 4 and seen[0] == "1 worker, repeat 1"  # interleaved, 1 first
    runs = [store.get_run(i) for i in ids]
    assert {r.kind for r in runs} == {"prep"} and len({r.group for r in runs}) == 1
    assert all(store.params(i)["images"] == 24 for i in ids)
    [table] = stored_tables(store)
    assert [r.workers for r in table.rows] == [1, 2] and [r.repeats for r in table.rows] == [2, 2]
    assert table.rows[0].efficiency == 1.0 and table.rows[1].speedup > 0
    sweep = store.list_runs(kind="sweep")[0]
    assert table.group == f"sweep-{sweep.run_id}"


def test_a_thread_sweep_times_training_steps(class_folder: Path, ws: Workspace) -> None:
    store = RunStore(ws.runs_db)
    config = SweepConfig(kind="train", dataset=str(class_folder), workers=[1, 2], repeats=1, steps=2, arch="lenet")
    ids = run_sweep(config, ws, store)
    points, _ = stored_points(store)
    assert sorted(p.run_id for p in points) == sorted(ids)
    assert {(p.mode, p.workers) for p in points} == {("threads", 1), ("threads", 2)}
    batch = TrainConfig().batch_size
    assert all(2 <= p.images <= 2 * batch for p in points)  # two steps: at most two full batches each
    for p in points:  # the stored rate is the stored images over the stored time, not another measurement
        assert store.latest_metrics(p.run_id)["images_per_s"] == pytest.approx(p.images / p.time_s)


def test_a_training_run_at_the_same_time_flags_the_sweep_points(photos: Path, ws: Workspace) -> None:
    store = RunStore(ws.runs_db)
    busy = store.create_run(dataset="elsewhere", status="running")  # someone trains meanwhile
    run_sweep(SweepConfig(kind="prep", dataset=str(photos), workers=[1], repeats=1, mode="threads"), ws, store)
    store.finish_run(busy, "completed")
    assert stored_tables(store) == []  # the only point ran beside other work: left out
    [table] = stored_tables(store, include_flagged=True)
    assert table.rows[0].runs


def test_bad_sweep_settings_are_refused_in_words() -> None:
    for config in (SweepConfig(kind="quantum", dataset="d"), SweepConfig(kind="prep", dataset="d", workers=[0]),
                   SweepConfig(kind="prep", dataset="d", repeats=0)):  # fmt: skip
        with pytest.raises(CoreError):
            config.validate()


def test_the_command_line_sweeps_then_prints_the_table(photos: Path, tmp_path: Path, capsys) -> None:
    import json

    from core.cli.main import main

    ws = str(tmp_path / "cli-ws")
    assert main(["sweep", "prep", str(photos), "--workers", "1,2", "--repeats", "1", "--mode", "threads",
                 "--workspace", ws, "--json"]) == 0  # fmt: skip
    swept = json.loads(capsys.readouterr().out)
    assert len(swept["runs"]) == 2 and swept["group"] == f"sweep-{swept['sweep_id']}"
    assert main(["scaling", "--group", swept["group"], "--workspace", ws, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    keys = {"group", "kind", "mode", "workers", "threads_per_worker", "time_s", "speedup", "efficiency",
            "serial_fraction", "images_per_s", "oversubscribed", "runs"}  # fmt: skip
    assert [r["workers"] for r in rows] == [1, 2] and all(keys <= set(r) for r in rows)
    assert rows[0]["efficiency"] == 1.0 and rows[0]["serial_fraction"] is None
    assert main(["scaling", "--workspace", ws]) == 0
    assert "speedup" in capsys.readouterr().out
    assert main(["sweep", "prep", str(photos), "--workers", "1,x", "--workspace", ws]) == 2
    assert capsys.readouterr().err.startswith("error: --workers")
