"""A training run end to end: the run store record, the background job, metrics, checkpoints, resume.

The page and the command line both come here, so they are one engine: ``submit_training`` queues a run on
the job registry (``core.train.jobs``), ``run_training`` is the job's work (scan, split, decode once, ``fit``), and
``train_and_wait`` is what ``python -m core train`` does (submit, then wait; Ctrl-C cancels cleanly).

One plan per run (``core.train.runplan``): ``submit_training`` takes the plan the Train page made, or makes it once
from a config (``core.train.plan.check_run``), and stores it as the run's ``plan`` param; the job, its ranks and a
resume read that plan and decide nothing again. The run row keeps the config as asked; the epochs a run has
trained are its ``epochs_trained`` param (:func:`epochs_trained` reads it, for older runs too).

What a run leaves in the workspace: ``checkpoints/run-<id>/`` with ``last.pt`` and ``best.pt`` (state
dicts, written atomically) and ``splits.csv`` (the train/val/test split, made once: a resumed run trains on
exactly the same images), and at the end ``test_predictions.parquet`` (every test image's top-5 by best.pt,
``core.train.predictions``: what the Evaluate page reads). Metrics go to the run store under the keys below: per
step ``STEP_KEYS`` (step = global step) and per epoch ``EPOCH_KEYS`` (step = epoch number, from 1), plus
``test_*`` at the end.

What the divergence guard did (``core.train.guard``) is the run's ``runaways`` param (every event, with its words),
written as it happens; a completed run's verdict (``core.train.verdict``) its ``outcome``, ``outcome_why`` and
``chance`` params. ``core.train.verdict.outcome_of`` reads them for the pages and ``train --json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.common.atomic import write_atomic
from core.common.errors import CoreError, RunStoreError
from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train.config import TrainConfig
from core.train.jobs import JobContext, JobRegistry
from core.train.lifeline import processes_alive
from core.train.run_folder import (
    SPLIT_NAMES,
    checkpoint_path,
    load_splits,
    remove_partials,
    remove_stale_partials,
    run_dir,  # fmt: skip
    save_splits,
)
from core.train.runplan import RunPlan
from core.train.verdict import RUNAWAYS, outcome_of

if TYPE_CHECKING:  # torch is imported only by the runs that use it
    from core.train.distributed import DistContext
    from core.train.launch import Nodes

STEP_KEYS = ("train_loss", "train_acc", "lr", "images_per_s")
EPOCH_KEYS = ("epoch_train_loss", "epoch_train_acc", "val_loss", "val_acc", "epoch_s")
RESUMABLE = ("crashed", "cancelled", "failed")
EPOCHS_TRAINED = "epochs_trained"  # the run's param: epochs completed so far (resumes included)


def create_training_run(store: RunStore, config: TrainConfig, *, group: str | None = None,
                        parent_id: int | None = None) -> int:  # fmt: skip
    """Record a queued training run for ``config`` (a validated ``TrainConfig``), optionally in a group (a sweep)."""
    arch = None if config.arch == "auto" else config.arch  # "auto" is resolved (and recorded) once the data is seen
    return store.create_run(dataset=config.dataset, kind="train", arch=arch, config=config.to_dict(), group=group,
                            parent_id=parent_id)  # fmt: skip


def submit_training(registry: JobRegistry, ws: Workspace, source: TrainConfig | RunPlan, *, nodes: Nodes | None = None,
                    extra: dict | None = None, group: str | None = None, parent_id: int | None = None) -> int:  # fmt: skip
    """Queue a new run on the registry's threads; returns its run id at once.

    ``source``: the run's plan (the Train page's, made from the same scan), or a config, whose plan is made here
    (a child run's parent is checked first, ``core.train.transfer``). ``nodes``: several machines (node 0's side);
    ``extra``, ``group``, ``parent_id``: a sweep's point.
    """
    from core.train.plan import check_run  # here: the plan needs torch (its network's size)

    if isinstance(source, RunPlan):
        config = source.config
    else:
        from core.train.transfer import with_parent

        config = with_parent(source, registry.store, ws).validate()  # a child: its parent's network, checked
    seen = check_run(source if isinstance(source, RunPlan) else config, ws, nodes.count if nodes else 1)
    plan = seen.plan if seen is not None else (source if isinstance(source, RunPlan) else None)
    run_id = create_training_run(registry.store, config, group=group, parent_id=parent_id or config.from_run or None)
    if plan is not None:  # the one stored copy; None when the data cannot be read yet (the job then says why)
        registry.store.log_params(run_id, {"plan": plan.to_dict()})
    work = plan if plan is not None else config
    registry.submit(run_id, lambda ctx: _work(ctx, ws, work, resume=False, nodes=nodes, extra=extra))
    return run_id


def _work(ctx: JobContext, ws: Workspace, source: TrainConfig | RunPlan, *, resume: bool, nodes: Nodes | None = None,
          extra: dict | None = None) -> str:  # fmt: skip
    """The job of a run: in this thread, or on torch.distributed ranks when the config asks for several."""
    config = source.config if isinstance(source, RunPlan) else source
    if config.ranks > 1 or (nodes is not None and nodes.count > 1) or extra:
        return run_distributed(ctx, ws, source, resume=resume, nodes=nodes, extra=extra)
    return run_training(ctx, ws, source, resume=resume)


def resume_training(registry: JobRegistry, ws: Workspace, run_id: int, *, nodes: Nodes | None = None) -> None:
    """Queue a stopped run (crashed, cancelled, failed) to continue from its last checkpoint, same run id, with its
    stored plan (nothing is decided again).

    Raises:
        RunStoreError: the run is not resumable or has no checkpoint. RunTooBigError: it no longer fits.
        CheckpointError: its last checkpoint cannot be read.
    """

    run = registry.store.get_run(run_id)
    if run.status not in RESUMABLE:
        raise RunStoreError(f"run {run_id} is {run.status}; only {', '.join(RESUMABLE)} runs can be resumed")
    if not checkpoint_path(ws, run_id, "last").is_file():
        raise RunStoreError(f"run {run_id} has no checkpoint to resume from (it stopped before its first epoch)")
    if processes_alive(run_dir(ws, run_id)):  # ranks of its last start (core.train.lifeline): two sets would collide
        raise RunStoreError(f"run {run_id} still has processes training on this machine; resume it once they have "
                            "stopped (they stop with the program that started them)")  # fmt: skip
    from core.train.checkpoints import load_checkpoint, stored_plan
    from core.train.plan import check_run

    plan = stored_plan(registry.store, ws, run)  # decided when it first started (its checkpoint has it too)
    if plan is None:
        raise RunStoreError(f"run {run_id} has no stored settings to resume with")
    check_run(plan, ws, nodes.count if nodes else 1)  # memory may have shrunk since it first started
    load_checkpoint(checkpoint_path(ws, run_id, "last"))  # a damaged file is said now, in words, not as a failed run
    registry.store.set_status(run_id, "queued")
    registry.submit(run_id, lambda ctx: _work(ctx, ws, plan, resume=True, nodes=nodes))


# ---------------------------------------------------------------------------------------------------
# The job's work


def run_training(ctx: JobContext, ws: Workspace, source: TrainConfig | RunPlan, *, resume: bool,
                 dist: DistContext | None = None) -> str:  # fmt: skip
    """Scan, split (or reload the run's split), decode once for the run's plan, train; returns ``completed`` or
    ``cancelled``. ``source`` is the run's plan; a config only when the data could not be read when the run was
    submitted (its plan is made and stored here, once).

    Under torch.distributed this is rank 0's part (``core.train.ddp_worker``): it sends its split and plan to the
    others.
    """
    from core.train.fit import TrainCallbacks, fit
    from core.train.prepare import prepare

    folder = run_dir(ws, ctx.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    remove_partials(folder)
    ctx.report(phase="preparing", message="reading the images")
    splits = load_splits(folder) if resume else None
    prepared = prepare(source, ws, progress=_prepare_progress(ctx), splits=splits)
    if dist is not None:  # the other ranks train on exactly this split, with this plan
        from core.train.distributed import broadcast_object

        broadcast_object((prepared.splits, prepared.plan), dist)
    if splits is None:
        ctx.store.add_artifact(ctx.run_id, "splits", save_splits(folder, prepared.splits))
    if not isinstance(source, RunPlan):
        ctx.store.log_params(ctx.run_id, {"plan": prepared.plan.to_dict()})
    config = prepared.plan.config
    start = None
    if config.from_run and not resume:  # a child run: the parent's weights, ready for the child's classes
        from core.train.transfer import starting_weights

        start = str(starting_weights(checkpoint_path(ws, config.from_run), prepared, folder))
    logger = _MetricLogger(ctx, prepared.plan)
    callbacks = TrainCallbacks(on_start=logger.on_start, on_step=logger.on_step, on_epoch=logger.on_epoch,
                               on_checkpoint=logger.on_checkpoint, on_runaway=logger.on_runaway)  # fmt: skip
    last = checkpoint_path(ws, ctx.run_id, "last")
    result = fit(prepared, callbacks=callbacks, cancel=ctx.cancel if dist is None else None, checkpoint_dir=folder,
                 resume_from=last if resume and last.is_file() else None, dist=dist, start_weights=start)  # fmt: skip
    # The epochs before an interruption too: a process killed between writing last.pt and logging that
    # epoch's metrics would otherwise leave a hole in the curves (re-logging a (key, step) replaces it).
    for row in result.epochs:
        logger.on_epoch(int(row["epoch"]), row)
    if result.test:
        ctx.store.log_metrics(ctx.run_id, [(f"test_{k}", 0, float(v)) for k, v in result.test.items() if _number(v)])
    if result.test_predictions is not None:
        _keep_predictions(ctx.store, ctx.run_id, folder, result.test_predictions, result.test.get("epoch"))
    if result.familiar is not None:  # the "not sure" checks' thresholds, with their false alarms on validation
        ctx.store.log_params(ctx.run_id, result.familiar)
    if result.verdict is not None:  # before the status: a run reads as finished only with its verdict
        ctx.store.log_params(ctx.run_id, result.verdict.params())
    return result.status


def run_distributed(ctx: JobContext, ws: Workspace, source: TrainConfig | RunPlan, *, resume: bool,
                    nodes: Nodes | None = None, extra: dict | None = None) -> str:  # fmt: skip
    """The job of a distributed run: ``torchrun`` with ``ranks`` ranks on this machine (node 0 of ``nodes``), given
    the run's plan, waited for; the status is the one rank 0 stored (``core.train.launch``)."""
    from core.train.launch import STATUS_PARAM, run_torchrun, stored_status, threads_per_rank, torchrun_argv

    config = source.config if isinstance(source, RunPlan) else source

    world = config.ranks * (nodes.count if nodes else 1)
    ctx.store.log_params(ctx.run_id, {STATUS_PARAM: "", "ranks": world, "resumed": resume})
    ctx.store.describe(ctx.run_id, threads=threads_per_rank(config), processes=world)
    ctx.report(phase="preparing", message=f"starting {config.ranks} training processes")
    argv = torchrun_argv(ws, source, ctx.run_id, resume=resume, nodes=nodes, extra=extra)
    code = run_torchrun(argv, threads_per_rank(config), ctx.cancel, nodes=nodes, run_folder=run_dir(ws, ctx.run_id))
    status = stored_status(ctx.store, ctx.run_id)
    if status:
        return status
    if ctx.cancel.is_set():
        return "cancelled"
    raise CoreError(f"a training process stopped (exit code {code}) before the run finished; resume the run to "
                    "continue from its last checkpoint")  # fmt: skip


def _keep_predictions(store: RunStore, run_id: int, folder: Path, found: dict, epoch: object) -> None:
    """The test images' predictions beside the checkpoints: the Evaluate page and command read them from there."""
    from core.train.predictions import from_probabilities, predictions_file, write_predictions

    stored = from_probabilities(found["paths"], found["targets"], found["probs"], found["classes"], "test",
                                epoch=epoch, made="at the end of training")  # fmt: skip
    path = write_predictions(predictions_file(folder, "test"), stored)
    store.add_artifact(run_id, "test_predictions", path)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _prepare_progress(ctx: JobContext):
    def progress(done: int, total: int) -> None:
        ctx.report(phase="preparing", message=f"decoding images {done:,}/{total:,}", step=0, total_steps=0)

    return progress


class _MetricLogger:
    """Turns the trainer's callbacks into run-store rows (batched: one write every few steps) and progress."""

    def __init__(self, ctx: JobContext, plan: RunPlan) -> None:
        self.ctx, self.plan = ctx, plan
        self.rows: list[tuple[str, int, float]] = []
        self.artifacts: set[str] = set()
        self.last_write = 0.0
        self.steps_per_epoch = 0

    def on_start(self, info: dict) -> None:
        run = self.ctx.store.get_run(self.ctx.run_id)
        name = f"{info['arch']}-{run.run_id}" if info.get("arch") and run.name == f"train-{run.run_id}" else None
        self.ctx.store.describe(self.ctx.run_id, arch=info.get("arch"), device=str(info.get("device")),
                                threads=self.plan.threads or self.ctx.budget(), name=name)  # fmt: skip
        # How many images each split holds: every score is shown beside the number it was measured on.
        sizes = {f"n_{s}": int(info.get(f"n_{s}") or 0) for s in SPLIT_NAMES}
        self.ctx.store.log_params(
            self.ctx.run_id, sizes | {"samples_per_epoch": int(info.get("samples_per_epoch") or 0)}
        )
        self.steps_per_epoch = int(info.get("steps_per_epoch") or 0)
        self.ctx.report(phase="training", epochs=info.get("epochs"), total_steps=info.get("total_steps"),
                        until_converged=bool(info.get("until_converged")), max_epochs=info.get("max_epochs"),
                        step=info.get("start_step", 0), epoch=info.get("start_epoch", 0),
                        first_step=info.get("start_step", 0), first_step_at=time.time())  # fmt: skip

    def on_step(self, step: int, epoch: int, metrics: dict) -> None:
        if not self.plan.threads:  # an explicit --threads wins; else the budget follows the other runs
            self.ctx.sync_threads()
        self.rows += [(k, step, float(v)) for k, v in metrics.items() if k in STEP_KEYS and _number(v)]
        self.ctx.report(step=step, epoch=epoch, images_per_s=metrics.get("images_per_s"))
        if time.monotonic() - self.last_write > 1.0:  # about one SQLite write per second
            self.flush()

    def on_epoch(self, epoch: int, metrics: dict) -> None:
        names = {"train_loss": "epoch_train_loss", "train_acc": "epoch_train_acc", "seconds": "epoch_s"}
        self.rows += [(names.get(k, k), epoch, float(v)) for k, v in metrics.items() if _number(v)
                      and names.get(k, k) in EPOCH_KEYS]  # fmt: skip
        planned = metrics.get("planned_epochs")
        if planned:  # the cycles schedule may have just lengthened the run
            self.ctx.report(epochs=planned, total_steps=planned * self.steps_per_epoch)
        self.flush()
        self.ctx.store.log_params(self.ctx.run_id, {EPOCHS_TRAINED: int(epoch)})  # a field, never recounted

    def on_runaway(self, events: list[dict]) -> None:
        self.flush()  # the steps before it first: the curve shows the loss that ran away
        self.ctx.store.log_params(self.ctx.run_id, {RUNAWAYS: events})

    def on_checkpoint(self, path: Path, kind: str) -> None:
        if kind not in self.artifacts:  # the file is rewritten in place each epoch: one pointer is enough
            self.ctx.store.add_artifact(self.ctx.run_id, kind, path)
            self.artifacts.add(kind)

    def flush(self) -> None:
        if self.rows:
            self.ctx.store.log_metrics(self.ctx.run_id, self.rows)
            self.rows = []
        else:
            self.ctx.store.heartbeat(self.ctx.run_id)
        self.last_write = time.monotonic()


# ---------------------------------------------------------------------------------------------------
# The command line: the same engine, waited for


def train_and_wait(
    ws: Workspace,
    store: RunStore,
    config: Any | None,
    *,
    resume_run: int | None = None,
    nodes: Nodes | None = None,
    on_wait: Callable[[int], None] | None = None,
) -> int:
    """Run a training to its end in this process (a registry thread, waited for); returns the run id.

    ``on_wait(run_id)`` is called about once a second while it trains (the command line prints epochs).
    Ctrl-C cancels the run cleanly (it saves its checkpoint and is resumable); SIGKILL leaves it crashed.
    """
    registry = JobRegistry(store)
    remove_stale_partials(ws, store)
    if resume_run is not None:
        resume_training(registry, ws, resume_run, nodes=nodes)
        run_id = resume_run
    else:
        run_id = submit_training(registry, ws, config, nodes=nodes)
    try:
        while not _waited(registry, run_id, 1.0):
            if on_wait is not None:
                on_wait(run_id)
    except KeyboardInterrupt:
        registry.cancel(run_id)
        registry.wait(run_id)
    if on_wait is not None:
        on_wait(run_id)
    return run_id


def _waited(registry: JobRegistry, run_id: int, seconds: float) -> bool:
    try:
        registry.wait(run_id, timeout=seconds)
        return True
    except TimeoutError:
        return False


def result_json(store: RunStore, run_id: int, ws: Workspace | None = None) -> dict:
    """The ``train --json`` object: every epoch (those before an interruption too), the test metrics, wall time."""
    run = store.get_run(run_id)
    frame = store.metrics(run_id)
    best = checkpoint_path(ws, run_id, "best") if ws is not None else None
    return {
        "run_id": run_id,
        "status": run.status,
        "epochs": _epochs_table(frame),
        "test": {k.removeprefix("test_"): _int_if_count(k, v) for k, v in _last_values(frame, "test_").items()},
        "epochs_trained": epochs_trained(store, run_id),
        "wall_s": run.wall_s,
        "error": run.error,
        "arch": run.arch,
        "parent_id": run.parent_id,
        "checkpoint": str(best) if best is not None and best.is_file() else None,
        **outcome_of(store, run_id),
    }


def epochs_trained(store: RunStore, run_id: int) -> int:
    """The epochs ``run_id`` has trained: its ``epochs_trained`` param; a run from before that param existed has
    its epochs counted from its per-epoch metric rows, once, here."""
    value = store.params(run_id).get(EPOCHS_TRAINED)
    if isinstance(value, int):
        return value
    return len(store.metrics(run_id, ["epoch_s"]))


def _int_if_count(key: str, value: float) -> float | int:
    return int(value) if key in ("test_n", "test_epoch") and float(value).is_integer() else value


def _last_values(frame: pd.DataFrame, prefix: str) -> dict[str, float]:
    rows = frame[frame["key"].str.startswith(prefix)]
    return {str(k): float(v) for k, v in rows.groupby("key")["value"].last().items()}


def _epochs_table(frame: pd.DataFrame) -> list[dict]:
    rows = frame[frame["key"].isin(EPOCH_KEYS)]
    if rows.empty:
        return []
    wide = rows.pivot_table(index="step", columns="key", values="value", aggfunc="last").reset_index()
    names = {"step": "epoch", "epoch_train_loss": "train_loss", "epoch_train_acc": "train_acc", "epoch_s": "seconds"}
    wide = wide.rename(columns=names)
    return [
        {k: (int(v) if k == "epoch" else _json_float(v)) for k, v in row.items()} for row in wide.to_dict("records")
    ]


def _json_float(value: float) -> float | None:
    return None if pd.isna(value) else float(value)


def save_weights_upload(ws: Workspace, data: bytes, filename: str) -> Path:
    """Keep an uploaded weights file in the workspace under its content hash (it is only ever read as a state
    dict with ``weights_only=True``); returns its path for ``TrainConfig.weights``."""
    import hashlib
    import re

    digest = hashlib.sha256(data).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(filename).stem)[:40]
    target = ws.uploads / "weights" / f"{stem}-{digest}{Path(filename).suffix.lower() or '.pth'}"
    if not target.is_file():
        write_atomic(target, data)
    return target
