"""``python -m core export RUN``: a finished run as ONNX or TorchScript, with its preprocessing, golden images and
model card, proven to answer like the studio (``core.export``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.common.workspace import Workspace
from core.store.runs import RunStore

FORMATS = ("onnx", "torchscript")  # core.export.folder.FORMATS, without importing torch for --help


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser("export", help="a finished run as ONNX or TorchScript, with a demo page that needs no Python")
    p.add_argument("run", type=int, metavar="RUN", help="a completed training run")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="onnx", help="the model file (default: onnx)")
    p.add_argument("--out", metavar="DIR", help="the export folder (default: exports/run-N-FORMAT in the workspace; "
                   "an earlier export there is replaced)")  # fmt: skip
    p.add_argument("--demo", action="store_true", help="also write index.html: classify photos in a browser, offline")
    common(p)


def cmd_export(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:
    from core.datasets.sources import spec_paths
    from core.export.folder import export_run

    store = RunStore(ws.runs_db)
    # As ``evaluate``: the run's own dataset is the operator's, so its test images may be read for the golden set.
    ws = ws.for_operator(spec_paths(store.get_run(args.run).dataset))
    result = export_run(ws, store, args.run, args.fmt, Path(args.out) if args.out else None, demo=args.demo)
    p = result.parity
    lines = [f"run {result.run_id} exported as {result.fmt} to {result.folder}",
             f"answers like the studio: same top class on {p['top1_equal']} of {p['images']} golden images, "
             f"probabilities at most {p['max_top5_difference']:.1g} apart", *result.notes]  # fmt: skip
    if result.demo:
        lines.append(f"demo: open {result.folder / 'index.html'} in a browser (no Python, no network)")
    return result.to_json(), "\n".join(lines)
