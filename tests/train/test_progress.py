"""A job's progress is a typed record (``core.train.jobs.Progress``): reporters name its fields, readers read them."""

from __future__ import annotations

import threading
import time

import pytest

from core.store.runs import RunStore
from core.train.jobs import JobContext, Progress


def _context(tmp_path) -> JobContext:
    store = RunStore(tmp_path / "runs.sqlite")
    return JobContext(store.create_run(dataset="d"), store, threading.Event(), lambda: 1)


def test_reports_merge_into_one_typed_record(tmp_path) -> None:
    ctx = _context(tmp_path)
    ctx.report(phase="training", epochs=10, total_steps=500, first_step=0, first_step_at=time.time())
    ctx.report(step=120, epoch=3, images_per_s=150.0)
    p = ctx.progress()
    assert isinstance(p, Progress)
    assert (p.phase, p.step, p.total_steps, p.epoch, p.epochs, p.images_per_s) == ("training", 120, 500, 3, 10, 150.0)
    assert p.fraction == pytest.approx(120 / 500)
    assert p.updated_at > 0


def test_a_misspelt_field_is_refused_not_silently_stored(tmp_path) -> None:
    ctx = _context(tmp_path)
    with pytest.raises(TypeError):
        ctx.report(stpe=3)


def test_a_new_phase_drops_the_last_phases_message_and_none_keeps_a_value(tmp_path) -> None:
    ctx = _context(tmp_path)
    ctx.report(phase="preparing", message="decoding images 10/20")
    ctx.report(phase="training", epochs=None, total_steps=40)
    assert (ctx.progress().message, ctx.progress().epochs, ctx.progress().total_steps) == ("", None, 40)
    ctx.report(images_per_s=None)  # a step without a rate keeps the last one
    ctx.report(images_per_s=80.0)
    ctx.report(images_per_s=None)
    assert ctx.progress().images_per_s == 80.0


def test_eta_counts_from_the_first_reported_step() -> None:
    now = 1_000.0
    p = Progress(phase="training", step=150, total_steps=250, first_step=50, first_step_at=now - 10)
    assert p.eta_s(now) == pytest.approx(10.0)  # 100 steps in 10 s, 100 left
    assert Progress(step=0, total_steps=10).eta_s(now) is None
    assert Progress(step=5, total_steps=10, first_step=5, first_step_at=now).eta_s(now) is None
