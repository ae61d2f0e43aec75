"""``python -m core predict`` and ``python -m core serve``: classify with a run's best checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.common.percent import percent
from core.common.workspace import Workspace
from core.store.runs import RunStore


def add_parsers(sub: Any, common: Any) -> None:
    p = sub.add_parser("predict", help="top-5 classes (and a CAM heat map) for images")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    _model_args(p)
    p.add_argument("--cam", metavar="METHOD", help="also explain: gradcam, hirescam, gradcam++, xgradcam, layercam, "
                   "eigencam, scorecam (slow), ablationcam (slow)")  # fmt: skip
    p.add_argument("--class", dest="target", metavar="LABEL", help="explain this class instead of the top one")
    p.add_argument(
        "--cam-out",
        metavar="DIR",
        help="save each heat map as DIR/<stem>.npy (image's own size) and DIR/<stem>.png (over the image)",
    )
    p.add_argument(
        "--csv", metavar="FILE", help="also write the predictions as a table: image, top1, p1 .. p5, ms, error"
    )
    common(p)
    s = sub.add_parser("serve", help='an HTTP endpoint: POST /predict with image bytes or {"path": ...}')
    _model_args(s)
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    common(s)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=int, metavar="RUN", help="a training run (default: the latest completed one)")
    p.add_argument("--imagenet", metavar="ARCH", help="a torchvision ImageNet model instead (weights must be present)")
    p.add_argument("--device", default="auto", help="auto (default: a GPU when there is one), cpu or cuda")


def _predictor(args: argparse.Namespace, ws: Workspace):
    from core.explain.predict import load_imagenet_predictor, load_run_predictor

    if args.imagenet:
        return load_imagenet_predictor(args.imagenet, args.device)
    return load_run_predictor(ws, RunStore(ws.runs_db), args.run, args.device)


def cmd_predict(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:
    from core.common.untrusted import spreadsheet_safe
    from core.explain.predict import predict_many, predictions_table

    predictor = _predictor(args, ws)
    rows = predict_many(predictor, args.images, cam=args.cam, cam_out=Path(args.cam_out) if args.cam_out else None,
                        target=args.target)  # fmt: skip
    if args.csv:
        spreadsheet_safe(predictions_table(rows)).to_csv(args.csv, index=False)  # labels may start with "="
    return rows, "\n".join(_line(r) for r in rows)


def _line(row: dict) -> str:
    from core.datasets.layouts import one_line  # a newline in a file name must not split the output's lines

    image = one_line(str(row["image"]))
    if "error" in row:
        return f"{image}: error: {one_line(str(row['error']))}"
    top = ", ".join(f"{one_line(str(t['label']))} {percent(t['p'], 1)}" for t in row["top"])
    cam = f", {row['cam_method']} {row['cam_ms']:.0f} ms" if "cam_ms" in row else ""
    return f"{image}: {top}  ({row['ms']:.0f} ms{cam})"


def cmd_serve(args: argparse.Namespace, ws: Workspace) -> tuple[Any, str]:
    from core.explain.serve import serve

    predictor = _predictor(args, ws)
    serve(predictor, ws, host=args.host, port=args.port)
    return {"stopped": True}, "server stopped"
