"""One rank of a distributed training run, started by ``torchrun`` (``core.train.launch``):

    python -m torch.distributed.run --nproc-per-node N -m core.train.ddp_worker --workspace WS --run-id RUN --plan JSON

Rank 0 does what a training thread does (``runner.run_training``: the split, metrics, checkpoints, the
stored test predictions) and stores the status it ended with; the other ranks prepare the same data (rank
0's split and plan, sent to them) and train their shard: no rank decides the run's settings again. This module
is an entry point: nothing imports it.

A rank first holds its run's lock and follows its torchrun (``core.train.lifeline``): it is killed when torchrun
dies, and stops at once when torchrun is gone already, before it writes anything.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from core.common.cpu import set_torch_threads
from core.common.errors import CoreError
from core.common.workspace import Workspace
from core.datasets.sources import spec_paths
from core.store.runs import RunStore
from core.train import distributed, lifeline
from core.train.config import TrainConfig
from core.train.fit import fit
from core.train.jobs import JobContext
from core.train.launch import STATUS_PARAM
from core.train.prepare import prepare
from core.train.run_folder import checkpoint_path, run_dir
from core.train.runner import epochs_trained, run_training
from core.train.runplan import RunPlan


def main(argv: list[str] | None = None) -> int:
    lifeline.hold_from_environment()
    lifeline.die_with_parent(signal.SIGKILL)  # a rank without its torchrun would write over a run on its own
    args = _parser().parse_args(argv)
    source: TrainConfig | RunPlan = (RunPlan.from_dict(json.loads(args.plan)) if args.plan
                                     else TrainConfig.from_dict(json.loads(args.config)).validate())  # fmt: skip
    config = source.config if isinstance(source, RunPlan) else source
    # The launcher resolved the dataset (confined where it had to be): its paths are trusted here.
    ws = Workspace.open(args.workspace).for_operator(spec_paths(config.dataset))
    set_torch_threads(config.threads)
    ctx = distributed.from_environment(config.device)
    if ctx is None:
        sys.stderr.write("error: core.train.ddp_worker is started by torchrun (python -m torch.distributed.run)\n")
        return 2
    try:
        if ctx.main:
            _lead(ws, source, args, ctx)
        else:
            _follow(ws, args, ctx)
    except CoreError as exc:
        sys.stderr.write(f"error: rank {ctx.rank}: {exc}\n")
        return 1
    finally:
        distributed.shutdown()
    return 0


def _lead(ws: Workspace, source: TrainConfig | RunPlan, args: argparse.Namespace,
          ctx: distributed.DistContext) -> None:  # fmt: skip
    store = RunStore(ws.runs_db)
    threads = source.config.threads if isinstance(source, RunPlan) else source.threads
    job = JobContext(args.run, store, threading.Event(), budget=lambda: threads)
    began = time.perf_counter()
    status = run_training(job, ws, source, resume=args.resume, dist=ctx)
    extra = json.loads(args.extra) if args.extra else {}
    if extra:  # a sweep's point: its settings, the images it trained on and the time it took
        epochs = epochs_trained(store, args.run)
        params = store.params(args.run)
        images = int(params.get("samples_per_epoch", params.get("n_train", 0))) * epochs
        store.log_params(args.run, {**extra, "images": images})
        store.log_metrics(args.run, [("time_s", 0, time.perf_counter() - began)])
    store.log_params(args.run, {STATUS_PARAM: status})  # last: the launcher reads the run's end from here


def _follow(ws: Workspace, args: argparse.Namespace, ctx: distributed.DistContext) -> None:
    splits, plan = distributed.broadcast_object(None, ctx)  # rank 0's split (made or reloaded) and plan
    data = prepare(plan, ws, splits=splits)
    last = checkpoint_path(ws, args.run, "last")
    fit(data, checkpoint_dir=run_dir(ws, args.run), resume_from=last if args.resume else None, dist=ctx)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.train.ddp_worker")
    parser.add_argument("--workspace", required=True)
    parser.add_argument(
        "--run-id", dest="run", type=int, required=True, help="the run rank 0 records into (0 elsewhere)"
    )
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--plan", help="the run's plan (core.train.runplan.RunPlan) as JSON")
    given.add_argument("--config", help="the TrainConfig as JSON (a run whose data could not be read before it queued)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--extra", default="", help="params rank 0 also stores (a sweep point's settings), JSON")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
