"""The command line: ``python -m core <command> ...``. It only parses and dispatches; the work is in core.

Contract (scripts and tests outside the project rely on it): every command takes ``--workspace DIR`` and
``--json``; exit 0 on success; bad input gives one ``error: ...`` line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from core.cli import dedup as cli_dedup
from core.cli import evaluate as cli_evaluate
from core.cli import experiments as cli_experiments
from core.cli import export as cli_export
from core.cli import labels as cli_labels
from core.cli import predict as cli_predict
from core.cli import scaling as cli_scaling
from core.cli import train as cli_train
from core.common.errors import CoreError
from core.common.words import duration
from core.common.workspace import Workspace
from core.store.records import STATUSES
from core.store.runs import RunStore


class _Parser(argparse.ArgumentParser):
    """argparse prints usage plus an error over two lines; the contract wants one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        # self.prog is "python -m core" for the top level and "python -m core scan" for a command.
        sys.stderr.write(f"error: {message} (see: {self.prog} --help)\n")
        raise SystemExit(2)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", default=None, help="where datasets, runs and checkpoints live (./workspace)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET", help="a folder, a .csv, a .zip, or sample:digits")
    parser.add_argument("--labels", metavar="FILE.csv", help="CSV of image,label (images beside it or in --images)")
    parser.add_argument("--images", metavar="DIR", help="folder holding the images named by --labels/--metadata")
    parser.add_argument("--metadata", metavar="DIR", help="folder of one JSON file per image")
    parser.add_argument("--label-key", metavar="KEY", help="the JSON key holding the label (a.b for nested keys)")


# One line per command for ``python -m core --help``. Only the command being run gets its full parser (some of
# them import torch to list their choices): ``--help`` and ``runs`` answer without loading it.
HELP = {
    "scan": "count images, classes and splits; list unreadable files",
    "runs": "list stored runs",
    "dedup": "find duplicate and leaking images; --apply writes a cleaned dataset",
    "train": "train a classifier (the Train page's engine); --ranks N on torch.distributed",
    "predict": "top-5 classes (and a CAM heat map) for images",
    "serve": 'an HTTP endpoint: POST /predict with image bytes or {"path": ...}',
    "evaluate": "how good a finished run is: metrics, mistakes, copies of train in test",
    "label-issues": cli_labels.HELP,
    "export": "a finished run as ONNX or TorchScript, with a demo page that needs no Python",
    "sweep": "time the same work with 1..N workers; every point is a stored run",
    "scaling": "tables of workers against time: speedup, efficiency, serial fraction",
    "search": "try training settings (grid or random, optional successive halving); every trial is a run",
    "lr-find": "sweep rising learning rates on the training images and suggest one (fastai's valley rule)",
}


def _add_scan(sub: Any) -> None:
    scan = sub.add_parser("scan", help=HELP["scan"])
    _dataset_args(scan)
    scan.add_argument("--workers", type=int, default=None, help="decoding processes (default: usable cores)")
    _common(scan)


def _add_runs(sub: Any) -> None:
    runs = sub.add_parser("runs", help=HELP["runs"])
    runs.add_argument("--status", choices=STATUSES, help="only runs with this status")
    _common(runs)


GROUPS: list[tuple[tuple[str, ...], Callable[[Any], None]]] = [
    (("scan",), _add_scan),
    (("runs",), _add_runs),
    (("dedup",), lambda sub: cli_dedup.add_parser(sub, _common, _dataset_args)),
    (("train",), lambda sub: cli_train.add_parser(sub, _common)),
    (("predict", "serve"), lambda sub: cli_predict.add_parsers(sub, _common)),
    (("evaluate",), lambda sub: cli_evaluate.add_parser(sub, _common)),
    (("label-issues",), lambda sub: cli_labels.add_parser(sub, _common, _dataset_args)),
    (("export",), lambda sub: cli_export.add_parser(sub, _common)),
    (("sweep", "scaling"), lambda sub: cli_scaling.add_parsers(sub, _common)),
    (("search", "lr-find"), lambda sub: cli_experiments.add_parsers(sub, _common, HELP)),
]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser: every command listed, ``command``'s (or, with None, every) full set of options."""
    parser = _Parser(prog="python -m core", description="Image-classification studio, command line.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for names, add in GROUPS:
        if command is None or command in names:
            add(sub)
        else:
            for name in names:
                sub.add_parser(name, help=HELP[name], add_help=False)
    return parser


def _command_in(argv: Sequence[str]) -> str:
    """The command word of ``argv`` ("" for none: the top-level parser then says what is missing)."""
    return next((a for a in argv if not a.startswith("-")), "")


def cmd_scan(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:
    from core.datasets.layouts import one_line
    from core.datasets.scan import scan_dataset
    from core.datasets.sources import resolve_dataset

    ref = resolve_dataset(args.dataset, ws, labels=args.labels, images=args.images,
                          metadata=args.metadata, label_key=args.label_key)  # fmt: skip
    result = scan_dataset(ref, ws.cache, workers=args.workers)
    summary = result.summary()
    name = one_line(ref.display)  # names go through one_line: a newline in a file name must not split a line
    lines = [f"{summary['n_images']} images, {summary['n_classes']} classes in {name} ({ref.kind})"]
    lines += [f"  {one_line(label):<24} {n:>7}" for label, n in result.classes.items()]
    if result.n_unlabelled:
        lines.append(f"  {'(no label)':<24} {result.n_unlabelled:>7}  (directly in the folder, not in class folders)")
    lines.append("splits: " + ", ".join(f"{s} {n}" for s, n in result.splits.items()))
    lines += [f"unreadable: {len(result.unreadable)}"] + [
        f"  {one_line(r.path)}: {r.reason}" for r in result.unreadable.itertuples()
    ]
    lines += [f"warning: {w}" for w in result.warnings]
    return summary, "\n".join(lines)


def cmd_runs(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:

    store = RunStore(ws.runs_db)
    rows = [store.summary(run) for run in store.list_runs(status=args.status)]
    if not rows:
        return rows, "no runs yet"
    header = f"{'id':>4}  {'status':<10} {'arch':<14} {'best val acc':>12} {'time':>11}  dataset"
    lines = [header] + [
        f"{r['run_id']:>4}  {r['status']:<10} {_network(r):<14} {_fmt(r['best_val_acc'], '.4f'):>12} "
        f"{'-' if r['wall_s'] is None else duration(r['wall_s']):>11}  {_one_line(str(r['dataset']))}"
        for r in rows
    ]
    return rows, "\n".join(lines)


def _network(row: dict) -> str:
    """The network of a training run; what a search or a sweep is, in its place (it trains none itself)."""
    if row["kind"] != "train":
        return f"({row['kind']})"
    return str(row["arch"] or "-")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


COMMANDS: dict[str, Callable[[argparse.Namespace, Workspace], tuple[Any, str]]] = {
    "scan": cmd_scan,
    "runs": cmd_runs,
    "dedup": cli_dedup.cmd_dedup,
    "train": cli_train.cmd_train,
    "predict": cli_predict.cmd_predict,
    "serve": cli_predict.cmd_serve,
    "evaluate": cli_evaluate.cmd_evaluate,
    "label-issues": cli_labels.cmd_label_issues,
    "export": cli_export.cmd_export,
    "sweep": cli_scaling.cmd_sweep,
    "scaling": cli_scaling.cmd_scaling,
    "search": cli_experiments.cmd_search,
    "lr-find": cli_experiments.cmd_lr_find,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_in(argv)).parse_args(argv)
    try:
        ws = _operator_view(args, Workspace.open(args.workspace))
        result, text = COMMANDS[args.command](args, ws)
    except CoreError as exc:
        sys.stderr.write(f"error: {_one_line(str(exc))}\n")
        return 2
    except OSError as exc:  # disk full, permissions on the workspace: the user's to fix, not a bug
        sys.stderr.write(f"error: {_one_line(str(exc))}\n")
        return 2
    sys.stdout.write((json.dumps(result, default=str) if args.json else text) + "\n")
    return 0


def _operator_view(args: argparse.Namespace, ws: Workspace) -> Workspace:
    """The workspace as the command line sees it: the dataset paths its operator typed may be read.

    The dashboard reads only the workspace and ``STUDIO_DATA_ROOTS``; the command line is run by whoever owns
    the shell, so ``scan ~/photos`` works as any command would. What files name (a CSV's images, a cleaned
    copy's source) is still confined to those roots.
    """
    if not getattr(args, "dataset", None):  # no DATASET on this command (predict's images are read directly)
        return ws
    from core.datasets.sources import spec_paths  # here: runs and --help must not import pandas

    typed = spec_paths(args.dataset)
    typed += [value for name in ("labels", "images", "metadata") if (value := getattr(args, name, None))]
    return ws.for_operator(typed) if typed else ws


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
