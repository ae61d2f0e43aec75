"""Tests for core.runs: real SQLite files, real threads and real child processes."""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from core.common.errors import RunStoreError
from core.store.hosts import host_facts
from core.store.liveness import PROCESS_GONE, THREAD_GONE
from core.store.records import ACTIVE_STATUSES, STATUSES
from core.store.runs import RunStore
from core.store.schema import SCHEMA_VERSION
from tests.support import ROOT


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store" / "runs.sqlite"


@pytest.fixture
def store(db: Path) -> RunStore:
    store = RunStore(db)
    yield store
    store.close()


def raw(db: Path) -> sqlite3.Connection:
    """A plain connection, to look at (or tamper with) what the store wrote."""
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def raw_row(db: Path, run_id: int) -> sqlite3.Row:
    with raw(db) as conn:
        return conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()


def tamper(db: Path, run_id: int, **columns: object) -> None:
    """Write owner columns directly, e.g. to pretend a run belongs to another host."""
    conn = raw(db)
    assignments = ", ".join(f"{column}=?" for column in columns)
    conn.execute(f"UPDATE runs SET {assignments} WHERE id=?", (*columns.values(), run_id))
    conn.close()


def python_child(code: str, *args: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env, text=True, **popen)


# --- schema -------------------------------------------------------------------------------------


def test_schema_is_created_versioned_and_in_wal_mode(store: RunStore, db: Path) -> None:
    conn = raw(db)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"runs", "params", "metrics", "artifacts"} <= tables
    assert "metrics_run_key_step" in indexes
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
    assert store._conn().execute("PRAGMA foreign_keys").fetchone()[0] == 1
    conn.close()
    RunStore(db)  # opening again leaves the schema alone


def test_status_check_constraint_in_the_database(store: RunStore, db: Path) -> None:
    run_id = store.create_run(dataset="d")
    with pytest.raises(sqlite3.IntegrityError):
        tamper(db, run_id, status="finished")


def test_newer_schema_and_foreign_files_are_refused(tmp_path: Path, db: Path) -> None:
    RunStore(db).close()
    conn = raw(db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RunStoreError, match="schema version 2"):
        RunStore(db)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(RunStoreError, match="cannot open run store"):
        RunStore(junk)


def test_module_import_stays_light() -> None:
    code = "import sys, core.store.runs; print(sorted({'pandas', 'torch', 'streamlit'} & set(sys.modules)))"
    out = python_child(code, stdout=subprocess.PIPE).communicate(timeout=30)[0]
    assert out.strip() == "[]"


# --- lifecycle ------------------------------------------------------------------------------------


def test_create_start_log_finish_round_trip(store: RunStore, tmp_path: Path) -> None:
    run_id = store.create_run(dataset="sample:shapes", arch="resnet18", config={"lr": 0.01}, threads=2, group="g")
    queued = store.get_run(run_id)
    assert (queued.status, queued.name, queued.config, queued.started_at, queued.wall_s) == (
        "queued",
        "resnet18-1",
        {"lr": 0.01},
        None,
        None,
    )
    assert queued.host == socket.gethostname() and queued.pid == os.getpid()
    assert queued.cpu_count == host_facts()["cpu_count"] and queued.cpu_model
    store.start_run(run_id)
    running = store.get_run(run_id)
    assert running.status == "running" and running.thread == threading.current_thread().name
    assert running.started_at is not None and running.heartbeat_at is not None
    store.log_params(run_id, {"epochs": 3, "path": tmp_path})
    store.log_params(run_id, {"epochs": 4})
    store.log_metrics(run_id, [("train_loss", 1, 0.9), ("val_acc", 1, 0.5), ("val_acc", 2, 0.75)])
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"x" * 123)
    store.add_artifact(run_id, "checkpoint", checkpoint, sha256="abc")
    store.finish_run(run_id, "completed")
    done = store.get_run(run_id)
    assert done.status == "completed" and done.ended_at >= done.started_at
    assert done.wall_s == pytest.approx(done.ended_at - done.started_at)
    assert store.params(run_id) == {"epochs": 4, "path": str(tmp_path)}
    assert store.latest_metrics(run_id) == {"train_loss": 0.9, "val_acc": 0.75}
    assert store.best_metric(run_id, "train_loss", mode="min") == 0.9
    [artifact] = store.artifacts(run_id)
    assert (artifact["kind"], artifact["path"], artifact["bytes"], artifact["sha256"]) == (
        "checkpoint",
        str(checkpoint),
        123,
        "abc",
    )


def test_same_artifact_path_updates_its_row(store: RunStore, tmp_path: Path) -> None:
    run_id = store.create_run(dataset="d")
    path = tmp_path / "last.pt"
    path.write_bytes(b"1")
    store.add_artifact(run_id, "checkpoint", path)
    path.write_bytes(b"12345")
    store.add_artifact(run_id, "checkpoint", path)
    assert [a["bytes"] for a in store.artifacts(run_id)] == [5]
    with pytest.raises(RunStoreError, match="cannot be read"):
        store.add_artifact(run_id, "checkpoint", tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "call",
    [
        lambda s, r: s.finish_run(r, "running"),
        lambda s, r: s.finish_run(r, "crashed"),
        lambda s, r: s.set_status(r, "finished"),
        lambda s, r: s.set_status(r, "running"),
        lambda s, r: s.create_run(dataset="d", status="stale"),
        lambda s, r: s.list_runs(status="done"),
    ],
    ids=["finish-running", "finish-crashed", "set-unknown", "set-running", "create-unknown", "list-unknown"],
)
def test_bad_statuses_are_refused(store: RunStore, call) -> None:
    run_id = store.create_run(dataset="d")
    with pytest.raises(RunStoreError):
        call(store, run_id)
    assert store.get_run(run_id).status == "queued"


def test_statuses_are_the_designed_ones() -> None:
    assert STATUSES == ("queued", "running", "completed", "cancelled", "failed", "crashed")
    assert ACTIVE_STATUSES == ("queued", "running")


def test_unknown_runs_are_reported(store: RunStore) -> None:
    with pytest.raises(RunStoreError, match="^unknown run 42$"):
        store.get_run(42)
    for call in (
        lambda: store.start_run(42),
        lambda: store.heartbeat(42),
        lambda: store.log_metrics(42, [("loss", 1, 1.0)]),
        lambda: store.log_params(42, {"a": 1}),
        lambda: store.finish_run(42, "failed"),
        lambda: store.delete_run(42),
        lambda: store.create_run(dataset="d", parent_id=42),
    ):
        with pytest.raises(RunStoreError, match="unknown run 42"):
            call()


def test_finish_twice_and_set_status_transitions(store: RunStore) -> None:
    run_id = store.create_run(dataset="d")
    store.set_status(run_id, "cancelled", error="user")
    cancelled = store.get_run(run_id)
    assert (cancelled.status, cancelled.error) == ("cancelled", "user") and cancelled.ended_at
    with pytest.raises(RunStoreError, match="already cancelled"):
        store.finish_run(run_id, "completed")
    store.start_run(run_id)
    store.set_status(run_id, "queued")
    requeued = store.get_run(run_id)
    assert (requeued.status, requeued.ended_at, requeued.heartbeat_at, requeued.thread) == ("queued", None, None, None)


def test_ids_are_never_reused_and_delete_cascades(store: RunStore, db: Path, tmp_path: Path) -> None:
    parent = store.create_run(dataset="d", kind="search", status="completed")
    run_id = store.create_run(dataset="d", parent_id=parent, status="cancelled")
    store.log_params(run_id, {"lr": 0.1})
    store.log_metrics(run_id, [("loss", 1, 1.0)])
    path = tmp_path / "model.pt"
    path.write_bytes(b"w")
    store.add_artifact(run_id, "checkpoint", path)
    assert store.delete_run(run_id) == [str(path)]
    conn = raw(db)
    for table in ("params", "metrics", "artifacts"):
        assert conn.execute(f"SELECT count(*) FROM {table} WHERE run_id=?", (run_id,)).fetchone()[0] == 0
    conn.close()
    assert store.create_run(dataset="d") == run_id + 1
    child = store.create_run(dataset="d", parent_id=parent)
    store.delete_run(parent)
    assert store.get_run(child).parent_id is None


def test_a_run_queued_or_running_under_a_live_owner_is_never_deleted(db: Path) -> None:
    """Tab A opened the delete confirmation of a crashed run, tab B resumed it (queued, then running), tab A
    confirms: the store reads the status in the delete's own transaction and refuses, in words."""
    tab_a, tab_b = RunStore(db), RunStore(db)
    run_id = tab_a.create_run(dataset="d", status="running")
    tamper(db, run_id, pid=2**22 + 7, instance=None, thread=None)  # its process is gone: crashed
    assert tab_a.get_run(run_id).status == "crashed"
    tab_b.set_status(run_id, "queued")  # tab B's Resume
    with pytest.raises(RunStoreError, match=rf"run {run_id} is queued; cancel it"):
        tab_a.delete_run(run_id)
    tab_b.start_run(run_id)
    with pytest.raises(RunStoreError, match=rf"run {run_id} is running; cancel it"):
        tab_a.delete_run(run_id)
    assert tab_a.get_run(run_id).status == "running"
    tab_b.finish_run(run_id, "cancelled")
    tab_a.delete_run(run_id)  # stopped: deleted
    with pytest.raises(RunStoreError, match="unknown run"):
        tab_b.get_run(run_id)


def test_a_run_whose_owner_died_while_queued_can_be_deleted(db: Path, store: RunStore) -> None:
    run_id = store.create_run(dataset="d")
    tamper(db, run_id, pid=2**22 + 7, instance=None, thread=None)
    store.delete_run(run_id)
    assert store.list_runs() == []


def test_list_runs_newest_first_with_filters(store: RunStore) -> None:
    a = store.create_run(dataset="d", kind="train", group="g1")
    b = store.create_run(dataset="d", kind="scaling", group="g1")
    c = store.create_run(dataset="d", kind="train", group="g2", status="completed")
    assert [r.run_id for r in store.list_runs()] == [c, b, a]
    assert [r.run_id for r in store.list_runs(kind="train")] == [c, a]
    assert [r.run_id for r in store.list_runs(group="g1")] == [b, a]
    assert [r.run_id for r in store.list_runs(status="completed")] == [c]
    assert store.get_run(c).ended_at is not None


# --- metrics --------------------------------------------------------------------------------------


def test_metrics_are_sorted_and_since_t_reads_only_new_rows(store: RunStore) -> None:
    a = store.create_run(dataset="d")
    b = store.create_run(dataset="d")
    store.log_metrics(b, [("loss", 2, 0.2), ("loss", 1, 0.1)])
    store.log_metrics(a, [("loss", 3, 3.0), ("acc", 1, 0.5), ("loss", 1, 1.0)])
    frame = store.metrics([b, a])
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["run_id", "key", "step", "value", "t"]
    assert list(zip(frame.run_id, frame.key, frame.step, strict=True)) == [
        (a, "acc", 1),
        (a, "loss", 1),
        (a, "loss", 3),
        (b, "loss", 1),
        (b, "loss", 2),
    ]
    assert list(store.metrics(a, ["loss"]).value) == [1.0, 3.0]
    seen = frame.t.max()
    store.log_metrics(a, [("loss", 4, 4.0), ("loss", 1, 1.5)])  # step 1 replayed after a resume
    new = store.metrics([a, b], since_t=seen)
    assert list(zip(new.step, new.value, strict=True)) == [(1, 1.5), (4, 4.0)]
    assert store.metrics(a, since_t=new.t.max()).empty
    assert len(store.metrics(a, "loss")) == 3


def test_metrics_of_a_run_without_rows_is_an_empty_typed_frame(store: RunStore) -> None:
    frame = store.metrics(store.create_run(dataset="d"))
    assert frame.empty and str(frame.value.dtype) == "float64" and str(frame.step.dtype) == "int64"


def test_nan_is_stored_as_null_and_inf_is_kept(store: RunStore, db: Path) -> None:
    run_id = store.create_run(dataset="d")
    store.log_metrics(
        run_id,
        [("val_acc", 1, 0.4), ("val_acc", 2, math.nan), ("val_acc", 3, math.inf), ("loss", 1, float("nan"))],
    )
    conn = raw(db)
    types = conn.execute("SELECT step, typeof(value) FROM metrics WHERE key='val_acc' ORDER BY step").fetchall()
    conn.close()
    assert [tuple(t) for t in types] == [(1, "real"), (2, "null"), (3, "real")]
    values = list(store.metrics(run_id, ["val_acc"]).value)
    assert values[0] == 0.4 and math.isnan(values[1]) and values[2] == math.inf
    assert math.isnan(store.latest_metrics(run_id)["loss"])
    assert store.best_metric(run_id, "val_acc") == 0.4  # NaN and inf are not "best"
    assert store.best_metric(run_id, "loss") is None


def test_bad_metric_rows_are_refused_whole(store: RunStore) -> None:
    run_id = store.create_run(dataset="d")
    with pytest.raises(RunStoreError, match="not a number"):
        store.log_metrics(run_id, [("loss", 1, 1.0), ("loss", 2, "high")])
    with pytest.raises(RunStoreError, match="not a number"):
        store.log_metrics(run_id, [("loss", 1.5, 1.0)])
    assert store.metrics(run_id).empty


def test_summary_has_the_cli_keys(store: RunStore) -> None:
    run_id = store.create_run(dataset="sample:shapes", arch="mobilenet_v3_small", threads=2, processes=1)
    store.start_run(run_id)
    store.log_metrics(run_id, [("val_acc", 1, 0.5), ("val_acc", 2, 0.8), ("val_acc", 3, 0.7)])
    store.finish_run(run_id, "completed")
    row = store.summary(store.get_run(run_id))
    required = {"run_id", "status", "arch", "dataset", "best_val_acc", "wall_s", "name", "kind", "group"}
    required |= {"created_at", "started_at", "ended_at", "threads", "processes", "device", "error"}
    assert required <= set(row)
    assert (row["run_id"], row["status"], row["best_val_acc"], row["threads"]) == (run_id, "completed", 0.8, 2)
    assert row["wall_s"] >= 0
    assert store.summary(store.get_run(store.create_run(dataset="d")))["best_val_acc"] is None


# --- concurrency --------------------------------------------------------------------------------


def test_writer_threads_and_a_polling_reader_lose_nothing(store: RunStore) -> None:
    n_threads, n_rows, batch = 4, 300, 10
    shared = store.create_run(dataset="d")
    runs = [store.create_run(dataset="d") for _ in range(n_threads)]
    errors: list[BaseException] = []
    done = threading.Event()

    def write(index: int) -> None:
        try:
            store.start_run(runs[index])
            for start in range(0, n_rows, batch):
                rows = [("loss", step, step / n_rows) for step in range(start, start + batch)]
                store.log_metrics(runs[index], rows)
                store.log_metrics(shared, [(f"w{index}", step, 1.0) for step in range(start, start + batch)])
            store.finish_run(runs[index], "completed")
        except BaseException as exc:  # collected: a thread's exception would otherwise vanish
            errors.append(exc)

    def poll() -> None:
        try:
            while not done.is_set():
                store.metrics(runs + [shared], since_t=0.0)
                store.list_runs()
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(i,), name=f"writer-{i}") for i in range(n_threads)]
    reader = threading.Thread(target=poll, name="reader")
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    reader.join()
    assert errors == []
    assert len(store.metrics(runs)) == n_threads * n_rows
    assert len(store.metrics(shared)) == n_threads * n_rows
    assert {store.get_run(r).status for r in runs} == {"completed"}


WRITER = """
import sys
from core.store.runs import RunStore
store = RunStore(sys.argv[1])
shared, name = int(sys.argv[2]), sys.argv[3]
own = store.create_run(dataset="d", name=name)
store.start_run(own)
for start in range(0, 200, 20):
    store.log_metrics(own, [("loss", s, 1.0) for s in range(start, start + 20)])
    store.log_metrics(shared, [(name, s, 1.0) for s in range(start, start + 20)])
store.finish_run(own, "completed")
"""


def test_two_processes_writing_one_file_both_land(store: RunStore, db: Path) -> None:
    shared = store.create_run(dataset="d")
    children = [python_child(WRITER, str(db), str(shared), name) for name in ("p1", "p2")]
    assert [child.wait(timeout=30) for child in children] == [0, 0]
    runs = {r.name: r for r in store.list_runs(status="completed")}
    assert set(runs) == {"p1", "p2"}
    assert len(store.metrics([r.run_id for r in runs.values()])) == 400
    assert store.metrics(shared).groupby("key").size().to_dict() == {"p1": 200, "p2": 200}


def _open_and_create(db: str, name: str, barrier, errors) -> None:
    """A forked child: wait for the others, then open a new store file and record one run in it."""
    try:
        barrier.wait(timeout=30)
        RunStore(db).create_run(dataset="d", name=name)
    except Exception as exc:  # reported to the parent, which fails the test with it
        errors.put(f"{name}: {type(exc).__name__}: {exc}")
        raise SystemExit(1) from exc


@pytest.mark.parametrize("round_", range(24))
def test_many_processes_creating_a_new_store_at_once(tmp_path: Path, round_: int) -> None:
    """Released together by a barrier, 16 processes open a file that does not exist yet (the switch to WAL
    answers SQLITE_BUSY at once, without the busy timeout, unless creation is serialised); every round
    every one of them must open it and write."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # fork: the children start in milliseconds, so they truly collide
    n, db = 16, str(tmp_path / f"round-{round_}" / "runs.sqlite")
    barrier, errors = ctx.Barrier(n), ctx.Queue()
    children = [ctx.Process(target=_open_and_create, args=(db, f"p{i}", barrier, errors)) for i in range(n)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
    failures = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert failures == [] and [c.exitcode for c in children] == [0] * n
    store = RunStore(db)
    assert sorted(r.name for r in store.list_runs()) == sorted(f"p{i}" for i in range(n))
    assert store._conn().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- crash detection ----------------------------------------------------------------------------

OWNER = """
import sys, time
from core.store.runs import RunStore
store = RunStore(sys.argv[1])
queued = store.create_run(dataset="d")
running = store.create_run(dataset="d")
store.start_run(running)
print(queued, running, flush=True)
time.sleep(60)
"""


def test_runs_of_a_killed_process_are_crashed_at_once_and_persisted(store: RunStore, db: Path) -> None:
    child = python_child(OWNER, str(db), stdout=subprocess.PIPE)
    queued, running = map(int, child.stdout.readline().split())
    assert store.get_run(running).status == "running" and store.get_run(queued).status == "queued"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    child.stdout.close()
    crashed = store.get_run(running)
    assert crashed.status == "crashed"
    assert crashed.error == PROCESS_GONE  # in words: the server's pid and host name are nobody's business
    assert str(child.pid) not in crashed.error and socket.gethostname() not in crashed.error
    assert crashed.ended_at is not None
    assert raw_row(db, running)["status"] == "crashed"  # persisted, not only reported
    assert [r.run_id for r in store.list_runs(status="crashed")] == [running, queued]
    assert raw_row(db, queued)["status"] == "crashed"


def test_reused_pid_marks_the_run_crashed(store: RunStore, db: Path) -> None:
    run_id = store.create_run(dataset="d")
    row = raw_row(db, run_id)
    tamper(db, run_id, instance="another-process", pid_start=row["pid_start"] + 1)
    run = store.get_run(run_id)
    assert run.status == "crashed" and run.error == PROCESS_GONE


def test_thread_that_ended_without_finishing_is_crashed_live_one_is_not(store: RunStore, db: Path) -> None:
    dead_run = store.create_run(dataset="d")
    live_run = store.create_run(dataset="d")
    started, release = threading.Event(), threading.Event()

    def live() -> None:
        store.start_run(live_run)
        started.set()
        release.wait(10)
        store.finish_run(live_run, "completed")

    dead = threading.Thread(target=store.start_run, args=(dead_run,), name="train-dead")
    dead.start()
    dead.join()
    # A new thread with the same name does not revive the dead owner: the Thread object is checked.
    same_name = threading.Thread(target=release.wait, args=(10,), name="train-dead")
    worker = threading.Thread(target=live, name="train-live")
    same_name.start()
    worker.start()
    started.wait(5)
    try:
        assert store.get_run(live_run).status == "running"
        assert RunStore(db).get_run(live_run).status == "running"  # another store object, same process
        crashed = store.get_run(dead_run)
        assert (crashed.status, crashed.error) == ("crashed", THREAD_GONE)
        assert raw_row(db, dead_run)["status"] == "crashed"
        with pytest.raises(RunStoreError, match="already running"):
            store.start_run(live_run)
    finally:
        release.set()
        worker.join()
        same_name.join()
    assert store.get_run(live_run).status == "completed"


def test_thread_named_at_start_is_checked_by_name(store: RunStore) -> None:
    run_id = store.create_run(dataset="d")
    store.start_run(run_id, thread="no-such-thread")
    assert store.get_run(run_id).error == THREAD_GONE
    other = store.create_run(dataset="d")
    store.start_run(other, thread=threading.main_thread().name)
    assert store.get_run(other).status == "running"


def test_other_host_is_judged_by_heartbeat_age(db: Path) -> None:
    store = RunStore(db, stale_after_s=60)
    fresh, stale, queued = (store.create_run(dataset="d") for _ in range(3))
    for run_id in (fresh, stale):
        store.start_run(run_id)
    now = time.time()
    tamper(db, fresh, host="elsewhere", pid=1, heartbeat_at=now - 5)
    tamper(db, stale, host="elsewhere", pid=1, heartbeat_at=now - 120)
    tamper(db, queued, host="elsewhere", pid=1)
    assert store.get_run(fresh).status == "running"
    assert store.get_run(queued).status == "queued"  # never heartbeated: no evidence it is gone
    crashed = store.get_run(stale)
    assert crashed.status == "crashed" and re.fullmatch(
        r"the machine that ran it has not been heard from for 12\d s", crashed.error
    )
    assert crashed.ended_at == now - 120  # the last sign of life
    assert raw_row(db, stale)["status"] == "crashed"
    tamper(db, fresh, heartbeat_at=now - 61)
    assert [r.run_id for r in store.list_runs(status="running")] == []


def test_crashed_run_resumes_with_same_id_and_first_start(store: RunStore) -> None:
    run_id = store.create_run(dataset="d")
    thread = threading.Thread(target=store.start_run, args=(run_id,), name="first-attempt")
    thread.start()
    thread.join()
    first = store.get_run(run_id)
    assert first.status == "crashed"
    time.sleep(0.01)
    store.start_run(run_id)
    resumed = store.get_run(run_id)
    assert (resumed.run_id, resumed.status, resumed.error, resumed.ended_at) == (run_id, "running", None, None)
    assert resumed.started_at == first.started_at
    assert resumed.thread == threading.current_thread().name
    store.finish_run(run_id, "failed", error="boom")
    store.start_run(run_id)  # a failed run may be resumed too
    store.finish_run(run_id, "completed")
    with pytest.raises(RunStoreError, match="is completed"):
        store.start_run(run_id)


# --- disk full ----------------------------------------------------------------------------------


def test_disk_full_is_a_clear_error_and_keeps_earlier_rows(store: RunStore) -> None:
    run_id = store.create_run(dataset="d")
    store.log_metrics(run_id, [("loss", 0, 1.0)])
    conn = store._conn()  # max_page_count is per connection: limit the one the store writes with
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")
    rows = [("loss", step, 1.0) for step in range(1, 5000)]
    with pytest.raises(RunStoreError, match=r"^disk full: [\d.]+ MB free in .*; the run store was not changed$"):
        store.log_metrics(run_id, rows)
    assert not conn.in_transaction
    assert len(store.metrics(run_id)) == 1
    conn.execute("PRAGMA max_page_count=1073741823")
    store.log_metrics(run_id, rows)
    assert len(store.metrics(run_id)) == 5000


def test_crash_verdict_does_not_overwrite_a_resume_that_raced_it(store: RunStore, db: Path) -> None:
    run_id = store.create_run(dataset="d")
    store.start_run(run_id)
    tamper(db, run_id, host="elsewhere", heartbeat_at=time.time() - 600)
    seen = store._read("SELECT * FROM runs WHERE id=?", (run_id,))  # judged stale from this row ...
    store.start_run(run_id)  # ... while a resume on this host commits first
    [record] = store._effective(seen)
    assert record.status == "running" and record.host == socket.gethostname()
    assert raw_row(db, run_id)["status"] == "running"


def test_describe_fills_in_what_is_known_once_the_run_started(tmp_path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    run_id = store.create_run(dataset="d", arch="auto", config={"arch": "auto"})
    store.describe(run_id, arch="lenet", threads=2, device="cpu", config={"arch": "lenet"})
    run = store.get_run(run_id)
    assert (run.arch, run.threads, run.device, run.config) == ("lenet", 2, "cpu", {"arch": "lenet"})
    store.describe(run_id)  # nothing given: nothing changes
    assert store.get_run(run_id).arch == "lenet"
    with pytest.raises(RunStoreError, match="unknown run"):
        store.describe(999, arch="x")


def test_the_record_and_the_table_list_the_same_columns() -> None:
    """RUN_COLUMNS is the one list of the runs table's columns; the record derives its fields from it."""
    from dataclasses import fields

    from core.store.records import RunRecord
    from core.store.schema import RUN_COLUMNS

    renamed = {"id": "run_id", "run_group": "group"}
    internal = {"pid_start", "instance"}  # kept for crash detection, not handed out
    assert {f.name for f in fields(RunRecord)} == {renamed.get(c, c) for c in RUN_COLUMNS if c not in internal}
    conn = sqlite3.connect(":memory:")
    from core.store.schema import _MIGRATIONS

    for statement in _MIGRATIONS[0]:
        conn.execute(statement)
    assert tuple(r[1] for r in conn.execute("PRAGMA table_info(runs)")) == RUN_COLUMNS
