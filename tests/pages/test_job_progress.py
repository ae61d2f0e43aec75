"""The progress line of a training job on the Runs page, drawn from the job's typed progress record."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.train.jobs import JobContext
from tests.support import ROOT


@pytest.fixture
def released(fresh_workspace: Path) -> Iterator[threading.Event]:
    release = threading.Event()
    yield release
    release.set()
    from ui.state import jobs

    for job in jobs().jobs():
        jobs().wait(job.run_id, timeout=60)


def test_the_runs_page_shows_epoch_step_rate_and_time_left(released: threading.Event) -> None:
    from ui.state import jobs, run_store

    run_id = run_store().create_run(dataset="sample:digits", name="digits-run")
    reported = threading.Event()

    def work(ctx: JobContext) -> str:
        ctx.report(phase="training", epochs=10, total_steps=5_000, first_step=0, first_step_at=time.time() - 60)
        ctx.report(step=1_234, epoch=3, images_per_s=151.4)
        reported.set()
        released.wait(60)
        return "completed"

    jobs().submit(run_id, work)
    assert reported.wait(30)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at = at.switch_page("app_pages/runs.py").run()
    texts = [e.proto.text for e in at.get("progress")]
    line = next(t for t in texts if "digits-run" in t)
    assert "epoch 3/10 · step 1,234/5,000 · 151 img/s · about " in line and line.endswith(" left")
