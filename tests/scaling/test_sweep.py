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
from core.train.config import RECIPE_BATCH
from tests import imagefactory as f


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return write_photos(tmp_path / "photos", per_class=12)


def write_photos(root: Path, per_class: int) -> Path:
    """``root/{sea,sky}/<i>.jpg``: photo-like pictures, ``per_class`` of each."""
    for label in ("sea", "sky"):
        for i in range(per_class):
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
    batch = RECIPE_BATCH  # the largest automatic batch (a small set's is smaller)
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


# -- one lifecycle: the page and the command line start a sweep through core.scaling.sweep.submit_sweep --------


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """(run id, kind) of every run queued on any job registry during the test (the real submit runs)."""
    from core.train.jobs import JobRegistry

    seen: list[tuple[int, str]] = []
    real = JobRegistry.submit

    def submit(self: JobRegistry, run_id: int, work):  # noqa: ANN001, ANN202 - the registry's own signature
        seen.append((run_id, self.store.get_run(run_id).kind))
        return real(self, run_id, work)

    monkeypatch.setattr(JobRegistry, "submit", submit)
    return seen


def test_a_submitted_sweep_is_a_queued_run_whose_job_times_every_point(photos: Path, ws: Workspace) -> None:
    from core.scaling.sweep import submit_sweep
    from core.train.jobs import JobRegistry

    store = RunStore(ws.runs_db)
    registry = JobRegistry(store, cores=1)
    blocker = store.create_run(dataset="elsewhere")  # holds the only core: the sweep waits in the queue
    registry.submit(blocker, lambda ctx: "cancelled" if ctx.cancel.wait(60) else "completed")
    seen: list[str] = []
    config = SweepConfig(kind="prep", dataset=str(photos), workers=[1, 2], repeats=1, mode="threads")
    sweep_id = submit_sweep(registry, ws, config, on_point=lambda done, total, what: seen.append(what))
    assert store.get_run(sweep_id).status == "queued" and store.get_run(sweep_id).kind == "sweep"
    registry.cancel(blocker)
    job = registry.wait(sweep_id, timeout=120)
    assert job.status == "completed" and store.get_run(sweep_id).status == "completed"
    assert seen == ["1 worker, repeat 1", "2 workers, repeat 1"]
    [table] = stored_tables(store, include_flagged=True)
    assert table.group == f"sweep-{sweep_id}" and [r.workers for r in table.rows] == [1, 2]


def test_a_cancelled_sweep_stops_before_its_next_point(photos: Path, ws: Workspace) -> None:
    from core.scaling.sweep import submit_sweep
    from core.train.jobs import JobRegistry

    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    config = SweepConfig(kind="prep", dataset=str(photos), workers=[1, 2], repeats=5, mode="threads")
    holder: dict[str, int] = {}
    sweep_id = holder["id"] = submit_sweep(registry, ws, config,
                                           on_point=lambda done, total, what: registry.cancel(holder["id"]))  # fmt: skip
    job = registry.wait(sweep_id, timeout=120)
    assert job.status == "cancelled" and store.get_run(sweep_id).status == "cancelled"
    points = store.list_runs(group=f"sweep-{sweep_id}")
    assert len(points) == 1 and points[0].status == "completed"  # the point under way ends; no other starts


def test_a_failing_sweep_ends_failed_with_its_error_in_words(ws: Workspace, tmp_path: Path) -> None:
    from core.scaling.sweep import sweep_and_wait

    store = RunStore(ws.runs_db)
    gone = SweepConfig(kind="prep", dataset=str(tmp_path / "not-there"), workers=[1], repeats=1)
    with pytest.raises(CoreError, match=r"^sweep \d+ failed: "):
        sweep_and_wait(ws, store, gone)
    [sweep] = store.list_runs(kind="sweep")
    assert sweep.status == "failed" and sweep.error and "Traceback" not in sweep.error


def test_the_command_line_sweep_is_the_pages_job(photos: Path, tmp_path: Path, capsys, submitted) -> None:
    import json

    from core.cli.main import main

    ws = str(tmp_path / "cli-ws")
    assert main(["sweep", "prep", str(photos), "--workers", "1,2", "--repeats", "1", "--mode", "threads",
                 "--workspace", ws, "--json"]) == 0  # fmt: skip
    swept = json.loads(capsys.readouterr().out)
    assert (swept["sweep_id"], "sweep") in submitted  # queued on a registry as the Scaling page queues it
    assert swept["status"] == "completed" and len(swept["runs"]) == 2
    store = RunStore(Workspace.open(ws).runs_db)
    assert [store.get_run(r).group for r in swept["runs"]] == [swept["group"]] * 2


# ``python -m core`` with Ctrl-C (SIGINT) raising KeyboardInterrupt, as at a terminal. A process started with SIGINT
# ignored (pytest run as a background job: `./studio test &` in a script, nohup, some CI runners) passes that on to
# its children, and Python then leaves it ignored: the sweep ran all 40 points (failed 3 times in such runs).
WITH_CTRL_C = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "runpy.run_module('core', run_name='__main__', alter_sys=True)")  # fmt: skip


def test_ctrl_c_stops_a_command_line_sweep_between_points_without_a_traceback(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.support import ROOT, wait_until

    # 300 photos: each of the 40 points takes a fraction of a second, the sweep seconds (on the 24 of ``photos`` the
    # 40 points took under a second: a test process held up that long would signal a finished sweep).
    photos = write_photos(tmp_path / "photos", per_class=150)
    ws = tmp_path / "cli-ws"
    err = tmp_path / "err.txt"
    with err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", WITH_CTRL_C, "sweep", "prep", str(photos), "--workers", "1,2",
                                 "--repeats", "20", "--mode", "threads", "--workspace", str(ws)],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                                stderr=stderr, text=True)  # fmt: skip
        try:
            wait_until(lambda: "point 1/40" in err.read_text(), timeout=120, what="the first point", process=proc)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=120)
        finally:
            proc.kill()
    text = err.read_text()
    assert proc.returncode == 0 and "Traceback" not in text, text
    assert out.startswith("sweep-") and " cancelled: " in out.splitlines()[0]
    store = RunStore(Workspace.open(ws).runs_db)
    [sweep] = store.list_runs(kind="sweep")
    points = store.list_runs(group=f"sweep-{sweep.run_id}")
    assert sweep.status == "cancelled" and 1 <= len(points) < 40
    assert all(p.status == "completed" for p in points)  # the point under way finished; none was cut off
