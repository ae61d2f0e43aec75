"""``python -m core train``: the same engine as the Train page, waited for in this process.

Every ``TrainConfig`` field is an option (``--batch-size``, ``--label-smoothing``, ``--nesterov/--no-nesterov``
...), so the command line and the page cannot drift apart; ``--pretrained`` is short for
``--weights imagenet``. ``--resume RUN`` continues a stopped run with its stored plan. ``--dry-run`` prints the
run's plan (every automatic choice decided, and why: ``{"plan": {...}, "why": {option: words}, ...}`` with
``--json``) and stops: nothing is trained or recorded.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Any

from core.common.errors import CoreError
from core.common.percent import percent
from core.common.words import duration
from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train.config import BOUNDS, MILESTONE_BOUND, Bound, TrainConfig, choices

INTERRUPTED_EXIT = 130  # a shell's code for a program stopped by Ctrl-C


def add_parser(sub: Any, common: Any) -> None:

    p = sub.add_parser("train", help="train a classifier (the Train page's engine)")
    p.add_argument("dataset", metavar="DATASET", nargs="?", help="a folder, a .csv, a .zip, or sample:digits")
    p.add_argument("--resume", type=int, metavar="RUN", help="continue a stopped run from its last checkpoint")
    p.add_argument("--pretrained", dest="weights", action="store_const", const="imagenet",
                   help="start from torchvision's ImageNet weights (same as --weights imagenet)")  # fmt: skip
    p.add_argument("--no-pretrained", dest="weights", action="store_const", const="none", help="random start")
    for f in fields(TrainConfig):
        if f.name != "dataset":
            add_config_option(p, f, choices().get(f.name))
    p.add_argument("--nnodes", type=int, default=1, help="machines taking part (torch.distributed); 1: this one")
    p.add_argument("--node-rank", type=int, default=0, help="this machine's number among them, from 0")
    p.add_argument("--rdzv-endpoint", default="", metavar="HOST:PORT", help="node 0's address, for --nnodes > 1")
    p.add_argument("--dry-run", action="store_true", help="print the run's plan (every automatic choice decided, "
                   "and why) and stop: nothing is trained or recorded")  # fmt: skip
    common(p)


def add_config_option(parser: argparse.ArgumentParser, f: Field, choices: tuple[str, ...] | None) -> None:
    flag = "--" + f.name.replace("_", "-")
    default = f.default if f.default is not MISSING else f.default_factory()
    help_text = f.metadata.get("help", "")
    if isinstance(default, bool):
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif isinstance(default, list):
        parser.add_argument(flag, type=bounded(MILESTONE_BOUND, int), nargs="+", default=None, metavar="N",
                            help=help_text)  # fmt: skip
    elif f.name == "weights":  # a choice or a file path
        parser.add_argument(flag, default=None, metavar="none|imagenet|FILE", help=help_text)
    elif f.name in BOUNDS:  # every number has its bounds (core.train.config.BOUNDS)
        parser.add_argument(flag, type=bounded(BOUNDS[f.name], type(default)), default=None, help=help_text)
    else:
        parser.add_argument(flag, type=str, choices=choices, default=None, help=help_text)


def bounded(bound: Bound, kind: type) -> Callable[[str], Any]:
    """An argparse type: a whole number (``kind`` int) or a finite number within ``bound``, else an error in words
    (argparse then prints ``error: argument --x: ...`` and exits 2)."""

    def parse(text: str) -> int | float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if kind is int:
            if not value.is_integer():
                raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
            value = int(text) if text.strip().lstrip("+-").isdigit() else int(value)  # exact for long digit strings
        if value < bound.low:
            raise argparse.ArgumentTypeError(f"{text} is too small: at least {_n(bound.low)}")
        if value > bound.high or (bound.below and value >= bound.high):
            raise argparse.ArgumentTypeError(f"{text} is too large: " + ("below " if bound.below else "at most ")
                                             + _n(bound.high))  # fmt: skip
        return value

    return parse


def _n(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def config_from_args(args: argparse.Namespace, ws: Workspace) -> TrainConfig:
    """The ``TrainConfig`` the options describe (unset options keep the default recipe)."""
    from core.datasets.sources import resolve_dataset

    if not args.dataset:
        raise CoreError("give a DATASET to train on, or --resume RUN")
    ref = resolve_dataset(args.dataset, ws)  # fails early, with the dataset's own message
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    return TrainConfig(**{**given, "dataset": ref.spec}).validate()


def cmd_train(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:
    from core.train.launch import Nodes, sigterm_cancels

    nodes = Nodes(args.nnodes, args.node_rank, args.rdzv_endpoint).check()
    if args.dry_run:
        return dry_run(args, ws)
    with sigterm_cancels():  # a SIGTERM stops the run cleanly, its processes with it
        if nodes.rank > 0:  # another machine: it trains its ranks, node 0 records the run
            return _other_node(args, ws, RunStore(ws.runs_db), nodes)
        return _node_0(args, ws, nodes)


def _node_0(args: argparse.Namespace, ws: Workspace, nodes: Any) -> tuple[Any, str]:
    from core.datasets.sources import spec_paths
    from core.train.runner import result_json, train_and_wait

    store = RunStore(ws.runs_db)
    if args.resume is not None:
        if args.dataset:
            raise CoreError("--resume RUN continues a run with its own dataset and settings; drop DATASET")
        # The run's dataset was typed on this command line or picked in the dashboard when it started.
        ws = ws.for_operator(spec_paths(store.get_run(args.resume).dataset))
        run_id = train_and_wait(ws, store, None, resume_run=args.resume, nodes=nodes,
                                on_wait=_printer(store, args.json))  # fmt: skip
    else:
        run_id = train_and_wait(ws, store, config_from_args(args, ws), nodes=nodes, on_wait=_printer(store, args.json))
    result = result_json(store, run_id, ws)
    if result["status"] == "failed":
        raise CoreError(f"run {run_id} failed: {result['error']}")
    return result, _text(result)


def dry_run(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:
    """The run the options (or ``--resume RUN``'s stored plan) describe: its plan and why, the split sizes, the
    memory it takes and the warnings; nothing is trained or recorded."""
    from core.datasets.scan import scan_dataset
    from core.datasets.sources import resolve_dataset, spec_paths
    from core.train.checkpoints import stored_plan
    from core.train.plan import preview
    from core.train.runplan import RunPlan
    from core.train.transfer import with_parent

    store = RunStore(ws.runs_db)
    if args.resume is not None:
        run = store.get_run(args.resume)
        ws = ws.for_operator(spec_paths(run.dataset))
        source: TrainConfig | RunPlan | None = stored_plan(store, ws, run)
        if source is None:
            raise CoreError(f"run {args.resume} has no stored settings yet")
    else:
        source = with_parent(config_from_args(args, ws), store, ws)
    config = source.config if isinstance(source, RunPlan) else source
    seen = preview(source, scan_dataset(resolve_dataset(config.dataset, ws), ws.cache).manifest)
    out = {"plan": seen.plan.to_dict(), "why": seen.plan.explain(), "splits": seen.splits, "classes": seen.n_classes,
           "memory_bytes": seen.memory.total, "warnings": list(seen.warnings)}  # fmt: skip
    plan = seen.plan
    lines = [f"network {plan.arch}, input {plan.image_size} px, {plan.batch_size} images a step at a rate of {plan.lr:g}, "
             f"{plan.epochs.words()}",
             *(f"  {name}: {words}" for name, words in plan.explain().items() if name != "epochs"),
             f"images: {seen.splits['train']:,} train, {seen.splits['val']:,} val, {seen.splits['test']:,} test, "
             f"{seen.n_classes} classes; about {seen.memory.total / 2**30:.1f} GiB", *seen.warnings,
             "dry run: nothing was trained or recorded"]  # fmt: skip
    return out, "\n".join(lines)


def _other_node(args: argparse.Namespace, ws: Workspace, store: RunStore, nodes: Any) -> tuple[Any, str]:
    """Node K > 0 of several machines: start this machine's ranks and wait; the run is node 0's to record."""
    from core.train.launch import run_torchrun, threads_per_rank, torchrun_argv

    if args.resume is not None:  # the same run continues on every machine: its settings come from node 0
        raise CoreError("on machines other than node 0, give the same DATASET and options as node 0, not --resume")
    from core.train.plan import check_run

    config = config_from_args(args, ws)
    seen = check_run(config, ws, nodes.count)  # this machine's ranks get its plan: none of them decides again
    source = seen.plan if seen is not None else config
    try:
        code = run_torchrun(torchrun_argv(ws, source, 0, resume=False, nodes=nodes), threads_per_rank(config),
                            nodes=nodes)  # fmt: skip
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: this machine's ranks were stopped
        code = INTERRUPTED_EXIT
    result = {"node_rank": nodes.rank, "nnodes": nodes.count, "ranks": config.ranks, "exit_code": code}
    return (
        result,
        f"node {nodes.rank} of {nodes.count}: its {config.ranks} rank(s) ended (exit code {code}); "
        "node 0 prints the run's result",
    )


def _printer(store: RunStore, quiet: bool) -> Callable[[int], None]:
    """Prints each finished epoch, and each time the divergence guard steps in, to stderr while the run trains
    (nothing with --json: stdout stays JSON)."""
    shown: set[int] = set()
    told: list[str] = []

    def show(run_id: int) -> None:
        from core.train.runner import result_json

        if quiet:
            return
        result = result_json(store, run_id)
        for epoch in result["epochs"]:
            if epoch["epoch"] not in shown:
                shown.add(epoch["epoch"])
                sys.stderr.write(_epoch_line(epoch) + "\n")
        for words in result["runaways"][len(told) :]:
            told.append(words)
            sys.stderr.write(f"divergence guard: {words}\n")

    return show


def _epoch_line(e: dict) -> str:
    acc = e.get("val_acc")
    return (f"epoch {e['epoch']:>3}  train loss {_f(e.get('train_loss'))}  val loss {_f(e.get('val_loss'))}  "
            f"val acc {'-' if acc is None else percent(acc, 2)}  {'-' if e.get('seconds') is None else duration(e['seconds'])}")  # fmt: skip


def _f(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _text(result: dict) -> str:
    from core.train.verdict import DID_NOT_LEARN

    test = result["test"]
    acc = f"test accuracy {percent(test['accuracy'], 2)}" if "accuracy" in test else "no test result"
    if result["outcome"] == DID_NOT_LEARN and result["chance"] is not None:
        acc += f" (chance level {percent(result['chance'], 2)})"
    lines = [f"run {result['run_id']} {result['status']}: {len(result['epochs'])} epochs, {acc}, "
             f"{duration(result['wall_s'] or 0)}; best checkpoint {result['checkpoint'] or '-'}"]  # fmt: skip
    if result["outcome"] == DID_NOT_LEARN:
        lines.append(f"it did not learn: {result['why']}")
    return "\n".join(lines)
