"""``python -m core evaluate RUN``: the metrics of a finished run from its stored predictions, the leakage-honest
score, and optionally the per-image predictions as CSV and the HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.common.atomic import write_atomic
from core.common.words import SCORED_SPLITS
from core.common.workspace import Workspace
from core.store.runs import RunStore


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser("evaluate", help="how good a finished run is: metrics, mistakes, copies of train in test")
    p.add_argument("run", type=int, metavar="RUN", help="a completed training run")
    p.add_argument("--split", choices=SCORED_SPLITS, default="test", help="the images to score (default: test)")
    p.add_argument("--predictions", metavar="FILE.csv", help="write one row per image: image, label, pred1, p1 .. "
                   "pred5, p5")  # fmt: skip
    p.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report (opens offline)")
    common(p)


def cmd_evaluate(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:
    from core.common.untrusted import spreadsheet_csv
    from core.datasets.sources import spec_paths
    from core.evaluate.evaluation import evaluate_run, evaluation_json, predictions_table, text_summary

    store = RunStore(ws.runs_db)
    # As ``train --resume``: the run's own dataset is the operator's (typed when it was trained), so it may be read.
    ws = ws.for_operator(spec_paths(store.get_run(args.run).dataset))
    ev = evaluate_run(ws, store, args.run, args.split, leaks="compute")
    result = evaluation_json(ev)
    lines = [text_summary(ev)]
    if args.predictions:
        target = Path(args.predictions)
        write_atomic(target, spreadsheet_csv(predictions_table(ev)).encode())  # labels may start with "="
        result["predictions_file"] = str(target)
        lines.append(f"predictions: {target}")
    if args.report:
        from core.evaluate.report import report_for, write_report

        target = write_report(Path(args.report), report_for(ws, store, ev))
        result["report"] = str(target)
        lines.append(f"report: {target}")
    return result, "\n".join(lines)
