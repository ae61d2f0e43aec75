"""``python -m core search`` and ``python -m core lr-find``: a search over training settings, and the learning-rate
finder, on the same engines as the Search and Train pages.

Both take every ``train`` option: for ``search`` they are the base settings each trial starts from, for ``lr-find``
the run whose learning rate is sought.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from core.common.errors import CoreError
from core.common.words import duration
from core.common.workspace import Workspace
from core.train.config import TrainConfig


def add_parsers(sub: Any, common: Any, help_lines: dict[str, str]) -> None:
    from core.cli.train import add_config_option, bounded
    from core.experiments.search import MAX_TRIALS
    from core.experiments.space import METHODS, METRICS
    from core.train.config import BOUNDS, Bound, choices
    from core.train.lr_find import MAX_STEPS, MIN_STEPS

    search = sub.add_parser("search", help=help_lines["search"])
    search.add_argument("dataset", metavar="DATASET", nargs="?", help="a folder, a .csv, a .zip, or sample:digits")
    search.add_argument("--space", metavar="FILE.json", help='the options to vary: {"optimizer": ["sgd", "adam"], '
                        '"lr": "usual"} (each trial\'s rate around its optimizer\'s usual rate: SGD 0.01-0.3, Adam '
                        '1e-4-3e-3), or a range for every optimizer, "lr": {"low": 0.01, "high": 0.3, "log": true} '
                        '(a file, or the JSON itself)')  # fmt: skip
    search.add_argument("--trials", type=bounded(Bound(0, MAX_TRIALS), int), default=0,
                        help=f"trials to run (default: the whole grid; random: 8), at most {MAX_TRIALS}")  # fmt: skip
    search.add_argument("--method", choices=METHODS, default="random", help="random draws, or every combination")
    search.add_argument("--metric", choices=list(METRICS), default="val_acc", help="what the best trial is chosen by")
    search.add_argument("--prune", action="store_true", help="cut hopeless trials short (successive halving)")
    search.add_argument("--search-seed", type=bounded(BOUNDS["seed"], int), default=0,
                        help="seed of the random draws and the grid's order")  # fmt: skip
    search.add_argument("--resume", type=int, metavar="SEARCH", help="continue a stopped search")
    finder = sub.add_parser("lr-find", help=help_lines["lr-find"])
    finder.add_argument("dataset", metavar="DATASET", nargs="?", help="a folder, a .csv, a .zip, or sample:digits")
    finder.add_argument("--steps", type=bounded(Bound(MIN_STEPS, MAX_STEPS), int), default=0,
                        help=f"training steps of the sweep ({MIN_STEPS} to {MAX_STEPS}; default: 100 at 64 images a "
                        "step, as fastai, and as many more as a smaller batch needs to see as many images)")  # fmt: skip
    for parser in (search, finder):
        for f in fields(TrainConfig):
            if f.name != "dataset":
                add_config_option(parser, f, choices().get(f.name))
        common(parser)


def cmd_search(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:
    from core.experiments.results import search_json
    from core.experiments.search import Searches, SearchSpec
    from core.experiments.space import parse_space
    from core.store.runs import RunStore
    from core.train.jobs import JobRegistry

    store = RunStore(ws.runs_db)
    searches = Searches(JobRegistry(store), ws)
    if args.resume is not None:
        if args.dataset or args.space:
            raise CoreError("--resume SEARCH continues a search with its own dataset and space; drop DATASET/--space")
        search_id = args.resume
        searches.resume(search_id)
    else:
        if not args.space:
            raise CoreError("give --space FILE.json: the options to vary (see: python -m core search --help)")
        base = _config(args, ws)
        spec = SearchSpec(base, parse_space(_space_text(args.space)), args.trials, args.method, args.metric,
                          args.prune, args.search_seed)  # fmt: skip
        search_id = searches.start(spec)
    if not args.json:  # what is searched, before the trials (minutes) start ending
        _say_space(store, search_id)
    _wait(searches, store, search_id, ws, quiet=args.json)
    result = search_json(store, search_id, ws)
    if result["status"] == "failed":
        raise CoreError(f"search {search_id} failed: {result['error']}")
    return result, _search_text(result)


def cmd_lr_find(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:
    from core.train.lr_find import RULE, estimate_seconds, find_lr, preview_sweep

    config = _config(args, ws)
    seen = preview_sweep(config, ws)  # refused here if it cannot fit; None: the data cannot be read (said below)
    estimate = estimate_seconds(seen, args.steps) if seen is not None else None
    if estimate is not None and not args.json:  # said before the sweep starts: it may take minutes
        sys.stderr.write(f"sweeping up to {args.steps} steps of rising learning rates: about {duration(estimate)}\n")
        sys.stderr.flush()
    finding = find_lr(seen.plan if seen is not None else config, ws, steps=args.steps)
    out = {**finding.to_json(), "estimated_seconds": None if estimate is None else round(estimate, 3)}
    swept = (f"{len(finding.lrs)} steps of rates {finding.lrs[0]:.1g} to {finding.lrs[-1]:.2g} in "
             f"{duration(finding.seconds)}" + ("; the loss blew up at the end, as it should" if finding.diverged else ""))  # fmt: skip
    if finding.suggested is None:
        return out, f"no learning rate suggested: {finding.why}\nfrom {swept}"
    text = f"suggested learning rate {finding.suggested:.3g} for {finding.config.optimizer} ({RULE} rule), from {swept}"
    return out, f"{text}\n{finding.why}"


def _config(args: argparse.Namespace, ws: Workspace) -> TrainConfig:
    from core.cli.train import config_from_args

    if not args.dataset:
        raise CoreError("give a DATASET")
    return config_from_args(args, ws)


def _space_text(value: str) -> str:
    """The space's JSON: given inline (starts with ``{``) or read from the file named."""
    if value.lstrip().startswith("{"):
        return value
    from core.experiments.space import SPACE_MAX_BYTES

    path = Path(value).expanduser()
    try:  # one byte past the limit is enough for parse_space to refuse it; any bytes decode (a PNG given by mistake)
        with path.open("rb") as fh:
            return fh.read(SPACE_MAX_BYTES + 1).decode("utf-8", errors="replace")
    except OSError as exc:
        raise CoreError(f"cannot read the search space {value}: {exc.strerror or exc}") from None


def _wait(searches: Any, store: Any, search_id: int, ws: Workspace, *, quiet: bool) -> None:
    """Wait for the search; print each trial as it ends (stderr, not with --json); Ctrl-C stops it cleanly."""
    from core.experiments.results import trial_rows

    shown: set[int] = set()
    metric_name = store.get_run(search_id).config["metric"]
    try:
        while not searches.wait(search_id, timeout=1.0):
            if not quiet:
                for row in trial_rows(store, search_id, metric_name, ws):
                    if row["status"] not in ("queued", "running") and row["run_id"] not in shown:
                        shown.add(row["run_id"])
                        sys.stderr.write(_trial_line(row) + "\n")
    except KeyboardInterrupt:
        searches.stop(search_id)
        searches.wait(search_id)


def _say_space(store: Any, search_id: int) -> None:
    """The space in words and the warnings on its rates (stderr)."""
    from core.experiments.space import parse_space, rate_warnings

    spec = store.get_run(search_id).config
    space, base = parse_space(spec["space"]), TrainConfig.from_dict(spec["base"])
    lines = [f"varied: {line}" for line in space.describe(base)]
    lines += [f"warning: {warning}" for warning in rate_warnings(space, base)]
    sys.stderr.write("".join(f"{line}\n" for line in lines))
    sys.stderr.flush()


def _trial_line(row: dict) -> str:
    value = "-" if row["value"] is None else f"{row['value']:.4f}"
    outcome = "pruned" if row["pruned"] else row["status"]
    note = f"  {row['note']}" if row.get("note") else ""  # about chance, or did not learn
    return f"trial {row['trial']} (run {row['run_id']}) {outcome:<9} {value:>7}{note}  {json.dumps(row['params'])}"


def _search_text(result: dict) -> str:
    lines = [f"search {result['search_id']} {result['status']}: {len(result['trials'])} trials "
             f"({result['method']}, by {result['metric']}), {duration(result['wall_s'] or 0)}"]  # fmt: skip
    lines += [_trial_line(row) for row in result["trials"]]
    best, why = result["best_run_id"], result.get("best_why", "")
    if best is not None:
        lines.append(f"best: run {best} ({result['best_value']:.4f})" + (f"; {why}" if why else ""))
    else:
        lines.append(f"best: none: {why}")
    return "\n".join(lines)
