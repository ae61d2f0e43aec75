"""core.train.jobs: background runs on threads, queued beyond the core count, cancelled, failed, recorded."""

from __future__ import annotations

import threading

import pytest
import torch

from core.common.errors import RunStoreError
from core.store.runs import RunStore
from core.train.jobs import JobContext, JobRegistry
from tests.support import wait_until


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite")


def _until_cancelled(release: threading.Event | None = None):
    """A job that works in small steps until it is cancelled (or released), like a training loop."""

    def work(ctx: JobContext) -> str:
        step = 0
        while not ctx.cancel.is_set():
            step += 1
            ctx.report(step=step, total_steps=10_000)
            if release is not None and release.wait(0.01):
                return "completed"
            ctx.cancel.wait(0.01)
        return "cancelled"

    return work


def test_a_job_runs_in_a_thread_and_is_recorded_completed(store: RunStore) -> None:
    run_id = store.create_run(dataset="sample:digits")
    seen: dict[str, object] = {}

    def work(ctx: JobContext) -> str:
        seen["thread"] = threading.current_thread().name
        seen["status"] = ctx.store.get_run(ctx.run_id).status
        return "completed"

    registry = JobRegistry(store, cores=2)
    job = registry.wait(registry.submit(run_id, work).run_id, timeout=10)
    assert job.status == "completed"
    assert seen == {"thread": f"studio-run-{run_id}", "status": "running"}
    assert store.get_run(run_id).status == "completed"
    assert registry.active() == []


def _until_released(release: threading.Event, budgets: list[int]):
    """A job that records the torch threads it runs with at each step until it is released."""

    def work(ctx: JobContext) -> str:
        while not release.wait(0.01):
            ctx.sync_threads()
            budgets.append(torch.get_num_threads())
        return "completed"

    return work


def test_jobs_beyond_the_core_count_wait_and_share_the_threads(store: RunStore) -> None:
    mine = torch.get_num_threads()
    registry = JobRegistry(store, cores=2)
    releases = [threading.Event() for _ in range(3)]
    budgets: list[list[int]] = [[], [], []]
    ids = [store.create_run(dataset="d") for _ in range(3)]
    jobs = [registry.submit(i, _until_released(r, b)) for i, r, b in zip(ids, releases, budgets, strict=True)]
    assert [j.status for j in jobs] == ["running", "running", "queued"]
    assert store.get_run(ids[2]).status == "queued"
    _wait_for(lambda: budgets[0] and budgets[1])
    assert budgets[0][-1] == budgets[1][-1] == 1  # two jobs on two cores: one torch thread each
    releases[0].set()
    registry.wait(ids[0], timeout=10)
    _wait_for(lambda: jobs[2].status == "running" and budgets[2])
    assert budgets[2][-1] == 1
    releases[1].set()
    registry.wait(ids[1], timeout=10)
    _wait_for(lambda: budgets[2][-1] == 2)  # the last job alone gets both cores back, while it runs
    releases[2].set()
    assert registry.wait(ids[2], timeout=10).status == "completed"
    assert [store.get_run(i).status for i in ids] == ["completed"] * 3
    assert torch.get_num_threads() == mine  # budgets are per job thread: the caller's own is untouched


def test_cancel_a_running_job_and_a_queued_one(store: RunStore) -> None:
    registry = JobRegistry(store, cores=1)
    a, b = store.create_run(dataset="d"), store.create_run(dataset="d")
    registry.submit(a, _until_cancelled())
    registry.submit(b, _until_cancelled())
    _wait_for(lambda: registry.get(a).progress().step > 2)
    assert registry.cancel(b)  # queued: cancelled at once, never started
    assert store.get_run(b).status == "cancelled"
    assert store.get_run(b).started_at is None
    assert registry.cancel(a)
    assert registry.wait(a, timeout=10).status == "cancelled"
    assert store.get_run(a).status == "cancelled"
    assert not registry.cancel(a)  # already ended
    assert not registry.cancel(12345)


def test_an_exception_fails_the_run_with_its_message(store: RunStore) -> None:
    registry = JobRegistry(store, cores=1)
    run_id = store.create_run(dataset="d")

    def work(ctx: JobContext) -> str:
        raise ValueError("the loss became NaN")

    job = registry.wait(registry.submit(run_id, work).run_id, timeout=10)
    assert job.status == "failed"
    assert store.get_run(run_id).error == "ValueError: the loss became NaN"
    assert "Traceback" in job.detail
    next_id = store.create_run(dataset="d")  # the registry goes on
    assert registry.wait(registry.submit(next_id, lambda ctx: "completed").run_id, 10).status == "completed"


def test_a_job_cannot_be_submitted_twice_while_active(store: RunStore) -> None:
    registry = JobRegistry(store, cores=1)
    run_id = store.create_run(dataset="d")
    registry.submit(run_id, _until_cancelled())
    with pytest.raises(RunStoreError, match="already running"):
        registry.submit(run_id, _until_cancelled())
    registry.cancel(run_id)
    registry.wait(run_id, timeout=10)


def test_a_dead_job_thread_shows_as_crashed(store: RunStore) -> None:
    """A thread that ends without the registry recording it (as when it is killed) leaves a crashed run."""
    run_id = store.create_run(dataset="d")
    thread = threading.Thread(target=store.start_run, args=(run_id,), name="studio-run-lost")
    thread.start()
    thread.join()
    assert store.get_run(run_id).status == "crashed"


def test_eta_comes_from_the_step_rate(store: RunStore) -> None:
    registry = JobRegistry(store, cores=1)
    run_id = store.create_run(dataset="d")
    release = threading.Event()
    job = registry.submit(run_id, lambda ctx: "completed" if release.wait(10) else "cancelled")
    assert job.eta_s() is None
    import time

    job.context.report(first_step=0, first_step_at=time.time() - 10, step=50, total_steps=100)
    assert 9 < job.eta_s() < 11
    release.set()
    registry.wait(run_id, timeout=10)


def _wait_for(condition) -> None:
    wait_until(condition, timeout=10, what="the jobs to reach the expected state", interval=0.01)
