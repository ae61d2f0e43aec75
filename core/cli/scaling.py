"""``python -m core sweep prep|train|ddp DATASET --workers 1,2`` and ``python -m core scaling``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.common.errors import CoreError
from core.common.workspace import Workspace
from core.store.records import RunGroup
from core.store.runs import RunStore


def add_parsers(sub: Any, common: Any) -> None:
    p = sub.add_parser("sweep", help="time the same work with 1..N workers; every point is a stored run")
    p.add_argument("kind", choices=("prep", "train", "ddp"), help="prep: split+copy or fingerprint; train: intra-op "
                   "threads over a fixed number of steps; ddp: torch.distributed ranks")  # fmt: skip
    p.add_argument("dataset", metavar="DATASET", help="a folder, a .csv, a .zip, or sample:digits")
    p.add_argument("--workers", default="1,2", help="worker counts, comma-separated (default 1,2)")
    p.add_argument("--repeats", type=_bounded("repeats"), default=3,
                   help="points per worker count; tables show the median (3)")  # fmt: skip
    p.add_argument("--threads-per-worker", type=_bounded("threads_per_worker"), default=0,
                   help="torch threads per worker (default: cores / workers, never oversubscribed)")  # fmt: skip
    p.add_argument("--mode", choices=("processes", "threads"), default="processes", help="prep: processes or threads")
    p.add_argument("--task", choices=("copy", "fingerprint"), default="copy", help="prep: what to time (copy)")
    p.add_argument("--steps", type=_bounded("steps"), default=30, help="train: timed training steps per point (30)")
    p.add_argument("--epochs", type=_bounded("epochs"), default=1, help="ddp: epochs per point (1)")
    p.add_argument("--arch", default="auto", help="train and ddp: the network (auto)")
    common(p)
    q = sub.add_parser("scaling", help="tables of workers against time: speedup, efficiency, serial fraction")
    q.add_argument("--group", help="only this sweep (e.g. sweep-12)")
    q.add_argument("--all", action="store_true", help="also points measured beside other work or resumed")
    common(q)


def _bounded(name: str) -> Any:
    from core.cli.train import bounded
    from core.scaling.config import SWEEP_BOUNDS

    return bounded(SWEEP_BOUNDS[name], int)


def cmd_sweep(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:
    from core.datasets.sources import resolve_dataset
    from core.scaling.sweep import SweepConfig, sweep_and_wait

    try:
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        raise CoreError(f"--workers {args.workers!r}: expected whole numbers separated by commas, e.g. 1,2,4") from None
    dataset = resolve_dataset(args.dataset, ws).spec  # stored as a spec every page and command can open again
    config = SweepConfig(kind=args.kind, dataset=dataset, workers=workers, repeats=args.repeats,
                         threads_per_worker=args.threads_per_worker, mode=args.mode, task=args.task,
                         steps=args.steps, epochs=args.epochs, arch=args.arch)  # fmt: skip
    # The Scaling page's path (core.scaling.sweep.submit_sweep), waited for here; Ctrl-C stops it between points.
    say = None if args.json else lambda done, total, what: _say(f"point {done + 1}/{total}: {what}")
    swept = sweep_and_wait(ws, RunStore(ws.runs_db), config, on_point=say)
    group = str(RunGroup("sweep", swept.sweep_id))
    lines = [f"{group} {swept.status}: {len(swept.runs)} points stored (runs {', '.join(map(str, swept.runs))})",
             f"tables: python -m core scaling --group {group}"]  # fmt: skip
    return {"sweep_id": swept.sweep_id, "group": group, "status": swept.status, "runs": swept.runs}, "\n".join(lines)


def cmd_scaling(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:
    from core.scaling.points import stored_tables, sweep_task

    store = RunStore(ws.runs_db)
    tables = stored_tables(store, args.group, include_flagged=args.all)
    rows = [row.to_json() for table in tables for row in table.rows]
    if not rows:
        return rows, "no scaling points yet: run python -m core sweep prep|train|ddp DATASET first"
    lines = []
    for table in tables:
        task = sweep_task(store, table.group)
        lines.append(f"{table.group} · {table.kind}{f' ({task})' if task else ''} · {table.mode}")
        lines.append(f"  {'workers':>7} {'threads':>7} {'time s':>8} {'speedup':>8} {'efficiency':>10} {'serial':>7} "
                     f"{'img/s':>8}")  # fmt: skip
        for r in table.rows:
            lines.append(f"  {r.workers:>7} {r.threads_per_worker:>7} {r.time_s:>8.2f} {_f(r.speedup, '.2f'):>8} "
                         f"{_f(r.efficiency, '.0%'):>10} {_f(r.serial_fraction, '.2f'):>7} {r.images_per_s:>8.1f}"
                         + ("  oversubscribed" if r.oversubscribed else ""))  # fmt: skip
        if table.amdahl_serial is not None:
            lines.append(f"  Amdahl fit: serial fraction {table.amdahl_serial:.2f}, ceiling "
                         f"{_f(table.amdahl_ceiling, '.1f')}x")  # fmt: skip
        lines += [f"  note: {note}" for note in table.notes]
    return rows, "\n".join(lines)


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
