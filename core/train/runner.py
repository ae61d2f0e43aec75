"""A training run end to end: the run store record, the background job, metrics, checkpoints, resume.

The page and the command line both come here, so they are one engine: ``submit_training`` queues a run on
the job registry (``core.train.jobs``), ``run_training`` is the job's work (scan, split, decode once, ``fit``), and
``train_and_wait`` is what ``python -m core train`` does (submit, then wait; Ctrl-C cancels cleanly).

What a run leaves in the workspace: ``checkpoints/run-<id>/`` with ``last.pt`` and ``best.pt`` (state
dicts, written atomically) and ``splits.csv`` (the train/val/test split, made once: a resumed run trains on
exactly the same images), and at the end ``test_predictions.parquet`` (every test image's top-5 by best.pt,
``core.train.predictions``: what the Evaluate page reads). Metrics go to the run store under the keys below: per
step ``STEP_KEYS`` (step = global step) and per epoch ``EPOCH_KEYS`` (step = epoch number, from 1), plus
``test_*`` at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
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

if TYPE_CHECKING:  # torch is imported only by the runs that use it
    from core.train.distributed import DistContext
    from core.train.launch import Nodes

STEP_KEYS = ("train_loss", "train_acc", "lr", "images_per_s")
EPOCH_KEYS = ("epoch_train_loss", "epoch_train_acc", "val_loss", "val_acc", "epoch_s")
RESUMABLE = ("crashed", "cancelled", "failed")


def create_training_run(store: RunStore, config: TrainConfig, *, group: str | None = None,
                        parent_id: int | None = None) -> int:  # fmt: skip
    """Record a queued training run for ``config`` (a validated ``TrainConfig``), optionally in a group (a sweep)."""
    arch = None if config.arch == "auto" else config.arch  # "auto" is resolved (and recorded) once the data is seen
    return store.create_run(dataset=config.dataset, kind="train", arch=arch, config=config.to_dict(), group=group,
                            parent_id=parent_id)  # fmt: skip


def submit_training(registry: JobRegistry, ws: Workspace, config: TrainConfig, *, nodes: Nodes | None = None,
                    extra: dict | None = None, group: str | None = None, parent_id: int | None = None) -> int:  # fmt: skip
    """Queue a new run of ``config`` on the registry's threads; returns its run id at once.

    ``nodes``: several machines (node 0's side); ``extra``, ``group``, ``parent_id``: a sweep's point.
    """
    if config.from_run:  # a child run: its parent's network, checked before it queues (core.train.transfer)
        from core.train.transfer import child_config

        parent = registry.store.get_run(config.from_run)
        config = child_config(config, parent, checkpoint_path(ws, parent.run_id))
    config.validate()
    from core.train.plan import check_run  # here: the plan needs torch (its network's size)

    check_run(config, ws, nodes.count if nodes else 1)  # too many processes or too little memory: refused here
    run_id = create_training_run(registry.store, config, group=group, parent_id=parent_id or config.from_run or None)
    registry.submit(run_id, lambda ctx: _work(ctx, ws, config, resume=False, nodes=nodes, extra=extra))
    return run_id


def _work(ctx: JobContext, ws: Workspace, config: TrainConfig, *, resume: bool, nodes: Nodes | None = None,
          extra: dict | None = None) -> str:  # fmt: skip
    """The job of a run: in this thread, or on torch.distributed ranks when the config asks for several."""
    if config.ranks > 1 or (nodes is not None and nodes.count > 1) or extra:
        return run_distributed(ctx, ws, config, resume=resume, nodes=nodes, extra=extra)
    return run_training(ctx, ws, config, resume=resume)


def resume_training(registry: JobRegistry, ws: Workspace, run_id: int, *, nodes: Nodes | None = None) -> None:
    """Queue a stopped run (crashed, cancelled, failed) to continue from its last checkpoint, same run id.

    Raises:
        RunStoreError: the run is not resumable or has no checkpoint.
    """

    run = registry.store.get_run(run_id)
    if run.status not in RESUMABLE:
        raise RunStoreError(f"run {run_id} is {run.status}; only {', '.join(RESUMABLE)} runs can be resumed")
    if not checkpoint_path(ws, run_id, "last").is_file():
        raise RunStoreError(f"run {run_id} has no checkpoint to resume from (it stopped before its first epoch)")
    if processes_alive(run_dir(ws, run_id)):  # ranks of its last start (core.train.lifeline): two sets would collide
        raise RunStoreError(f"run {run_id} still has processes training on this machine; resume it once they have "
                            "stopped (they stop with the program that started them)")  # fmt: skip
    config = _at_its_own_size(TrainConfig.from_dict(run.config), checkpoint_path(ws, run_id, "last"))
    from core.train.plan import check_run

    check_run(config, ws, nodes.count if nodes else 1)  # memory may have shrunk since it first started
    registry.store.set_status(run_id, "queued")
    registry.submit(run_id, lambda ctx: _work(ctx, ws, config, resume=True, nodes=nodes))


def _at_its_own_size(config: TrainConfig, last: Path) -> TrainConfig:
    """A run left to the automatic input size resumes at the size its checkpoint was trained at, though the
    automatic choice may have changed since (a ResNet's smallest input went from 96 to 112 px)."""
    if config.image_size:
        return config
    from core.train.checkpoints import load_checkpoint

    return replace(config, image_size=int(load_checkpoint(last)["image_size"]))


# ---------------------------------------------------------------------------------------------------
# The job's work


def run_training(
    ctx: JobContext, ws: Workspace, config: TrainConfig, *, resume: bool, dist: DistContext | None = None
) -> str:
    """Scan, split (or reload the run's split), decode once, train; returns ``completed`` or ``cancelled``.

    Under torch.distributed this is rank 0's part (``core.train.ddp_worker``): it sends its split to the others.
    """
    from core.train.fit import TrainCallbacks, fit
    from core.train.prepare import prepare

    folder = run_dir(ws, ctx.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    remove_partials(folder)
    ctx.report(phase="preparing", message="reading the images")
    splits = load_splits(folder) if resume else None
    prepared = prepare(config, ws, progress=_prepare_progress(ctx), splits=splits)
    if dist is not None:  # the other ranks train on exactly this split
        from core.train.distributed import broadcast_object

        broadcast_object(prepared.splits, dist)
    if splits is None:
        ctx.store.add_artifact(ctx.run_id, "splits", save_splits(folder, prepared.splits))
        # What every automatic choice became: the Compare page's columns.
        ctx.store.log_params(ctx.run_id, {"settings": prepared.config.to_dict()})
    if config.from_run and not resume:  # a child run: the parent's weights, ready for the child's classes
        from core.train.transfer import starting_weights

        start = starting_weights(checkpoint_path(ws, config.from_run), prepared, folder)
        config = replace(config, weights=str(start))
    logger = _MetricLogger(ctx, config)
    callbacks = TrainCallbacks(on_start=logger.on_start, on_step=logger.on_step, on_epoch=logger.on_epoch,
                               on_checkpoint=logger.on_checkpoint)  # fmt: skip
    last = checkpoint_path(ws, ctx.run_id, "last")
    result = fit(config, prepared, callbacks=callbacks, cancel=ctx.cancel if dist is None else None,
                 checkpoint_dir=folder, resume_from=last if resume and last.is_file() else None, dist=dist)  # fmt: skip
    # The epochs before an interruption too: a process killed between writing last.pt and logging that
    # epoch's metrics would otherwise leave a hole in the curves (re-logging a (key, step) replaces it).
    for row in result.epochs:
        logger.on_epoch(int(row["epoch"]), row)
    if result.test:
        ctx.store.log_metrics(ctx.run_id, [(f"test_{k}", 0, float(v)) for k, v in result.test.items() if _number(v)])
    if result.test_predictions is not None:
        _keep_predictions(ctx.store, ctx.run_id, folder, result.test_predictions, result.test.get("epoch"))
    return result.status


def run_distributed(ctx: JobContext, ws: Workspace, config: TrainConfig, *, resume: bool, nodes: Nodes | None = None,
                    extra: dict | None = None) -> str:  # fmt: skip
    """The job of a distributed run: ``torchrun`` with ``config.ranks`` ranks on this machine (node 0 of
    ``nodes``), waited for; the status is the one rank 0 stored (``core.train.launch``)."""
    from core.train.launch import STATUS_PARAM, run_torchrun, stored_status, threads_per_rank, torchrun_argv

    world = config.ranks * (nodes.count if nodes else 1)
    ctx.store.log_params(ctx.run_id, {STATUS_PARAM: "", "ranks": world, "resumed": resume})
    ctx.store.describe(ctx.run_id, threads=threads_per_rank(config), processes=world)
    ctx.report(phase="preparing", message=f"starting {config.ranks} training processes")
    argv = torchrun_argv(ws, config, ctx.run_id, resume=resume, nodes=nodes, extra=extra)
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

    def __init__(self, ctx: JobContext, config: TrainConfig) -> None:
        self.ctx, self.config = ctx, config
        self.rows: list[tuple[str, int, float]] = []
        self.artifacts: set[str] = set()
        self.last_write = 0.0
        self.steps_per_epoch = 0

    def on_start(self, info: dict) -> None:
        run = self.ctx.store.get_run(self.ctx.run_id)
        name = f"{info['arch']}-{run.run_id}" if info.get("arch") and run.name == f"train-{run.run_id}" else None
        self.ctx.store.describe(self.ctx.run_id, arch=info.get("arch"), device=str(info.get("device")),
                                threads=self.config.threads or self.ctx.budget(), name=name)  # fmt: skip
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
        if not self.config.threads:  # an explicit --threads wins; else the budget follows the other runs
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
        "wall_s": run.wall_s,
        "error": run.error,
        "arch": run.arch,
        "parent_id": run.parent_id,
        "checkpoint": str(best) if best is not None and best.is_file() else None,
    }


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
