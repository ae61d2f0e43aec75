"""``export_run``: a trained run as a folder that works without the studio, proven to answer like it.

The folder (written beside itself, then renamed into place, so a failed export leaves nothing half-written):
``model.onnx`` or ``model.pt``, ``labels.json``, ``preprocess.json``, ``not_sure.json``, ``outputs.json``,
``head.json`` (networks whose head is pooling + one linear layer), ``golden/`` + ``golden.json``, ``README.md`` (the
model card), ``predict.py`` (ONNX: numpy + Pillow + onnxruntime only) and, with ``demo``, ``index.html`` and what
it needs to classify in a browser offline.

Before the folder is kept, the exported file is run on the studio's own input tensors of the golden images: the
same top class on every one and top-5 probabilities within :data:`PARITY_TOLERANCE`, and the same "not sure"
verdict, or the export is refused with the numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.common.errors import check_choice
from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train.archs import arch_label
from core.train.checkpoints import load_for_inference
from core.train.familiar import load_familiarity

from .golden import GOLDEN_FILE, Golden, golden_json, pick, write_golden
from .graph import Exported, ExportError, gap_linear_block, run_onnx, run_torchscript, write_onnx, write_torchscript

FORMATS = ("onnx", "torchscript")
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
PARITY_TOLERANCE = 1e-4
STANDALONE = Path(__file__).with_name("standalone_predict.py")
NO_DEMO = "the demo page was not written"  # how a note about a missing browser runtime starts


@dataclass
class ExportResult:
    """What was written, and how closely the exported file answered like the studio."""

    run_id: int
    fmt: str
    folder: Path
    files: list[str]
    parity: dict[str, Any]
    demo: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self, ws: Workspace | None = None) -> dict[str, Any]:
        shown = ws.relative_name(self.folder) if ws is not None else str(self.folder)
        return {"run": self.run_id, "format": self.fmt, "folder": shown, "files": self.files,
                "parity": self.parity, "demo": self.demo, "notes": self.notes}  # fmt: skip


def default_folder(ws: Workspace, run_id: int, fmt: str) -> Path:
    return ws.root / "exports" / f"run-{run_id}-{fmt}"


def export_run(ws: Workspace, store: RunStore, run_id: int, fmt: str = "onnx", out: Path | None = None,
               demo: bool = False) -> ExportResult:  # fmt: skip
    """Export run ``run_id``'s best checkpoint as ``fmt`` into ``out`` (default: ``exports/run-N-FMT`` in the
    workspace; an earlier export there is replaced).

    Raises:
        ExportError: not a finished training run, a demo without ONNX, or an export that does not answer like the
            studio. PredictError: no best checkpoint. CheckpointError: a damaged one. RunStoreError: unknown run.
    """
    from core.explain.predict import Predictor, run_checkpoint

    check_choice("format", fmt, FORMATS, ExportError)
    if demo and fmt != "onnx":
        raise ExportError("the demo page runs the ONNX model: export with the ONNX format to get it")
    run = store.get_run(run_id)
    if run.kind != "train" or run.status != "completed":
        raise ExportError(f"run {run_id} is not a finished training run ({run.status}): only a finished run exports")
    _, checkpoint = run_checkpoint(ws, store, run_id)
    studio = Predictor(load_for_inference(checkpoint, "cpu"), source=f"run {run_id}",
                       familiar=load_familiarity(checkpoint.parent))  # fmt: skip
    target = Path(out) if out is not None else default_folder(ws, run_id, fmt)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        result = _write(ws, store, run, studio, checkpoint, fmt, work, demo)
        _put_in_place(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    result.folder = target
    return result


def _write(ws, store, run, studio, checkpoint: Path, fmt: str, folder: Path, demo: bool) -> ExportResult:
    import torch

    from core.train.run_folder import run_splits

    from .card import head_json, model_card, not_sure_json, preprocess_json

    inference = studio.inference
    golden = _golden(ws, run, studio, folder, run_splits(ws, run.run_id))
    fresh = load_for_inference(checkpoint, "cpu")  # the exported copy gets hooks; the studio's stays as it is
    block = gap_linear_block(inference.arch)
    module = Exported(fresh.model, studio.familiar, block)
    example = golden.batch[:2]
    model_file = folder / MODEL_FILES[fmt]
    if fmt == "onnx":
        write_onnx(module, example, model_file)
        shutil.copyfile(STANDALONE, folder / "predict.py")
    else:
        write_torchscript(module, example, model_file)
    parity = check_parity(fmt, model_file, module.output_names, golden, studio)
    _json(folder / "labels.json", inference.classes)
    _json(folder / "preprocess.json", preprocess_json(inference))
    _json(folder / "not_sure.json", not_sure_json(studio.familiar))
    _json(folder / "outputs.json", module.output_names)
    _json(folder / GOLDEN_FILE, golden_json(run.run_id, golden))
    if block is not None:
        with torch.no_grad():
            side = int(module(example)[-1].shape[-1])  # the block's map, in cells
        _json(folder / "head.json", head_json(fresh.model, block, side))
    ev, problem = _evaluation(ws, store, run.run_id)
    (folder / "README.md").write_text(
        model_card(run, inference, fmt, ev, len(golden.rows), problem, demo), encoding="utf-8"
    )
    notes = [] if block is not None or not demo else [
        f"the demo page shows no heat map for {arch_label(inference.arch)}: it draws one for ResNet and MobileNetV2 runs"]  # fmt: skip
    if demo:
        from .demo import DemoError, write_demo

        try:
            write_demo(folder)
        except DemoError as exc:  # the model, its proof and predict.py are still worth having: keep them, say so
            demo = False
            notes.append(f"{NO_DEMO}: {exc}")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return ExportResult(run.run_id, fmt, folder, files, parity, demo, notes)


def _golden(ws, run, studio, folder: Path, splits) -> Golden:
    from core.evaluate.leakage import locate_dataset

    root, problem = locate_dataset(ws, run.dataset)
    if splits is None or root is None:
        raise ExportError(f"run {run.run_id}'s test images cannot be read ({problem or 'no stored split'}): the "
                          "export needs them to prove it answers like the studio")  # fmt: skip
    return write_golden(folder, studio, pick(splits, root))


def check_parity(fmt: str, model_file: Path, names: list[str], golden: Golden, studio) -> dict[str, Any]:
    """Run the exported file on the studio's own input tensors of the golden images and compare; raises
    :class:`ExportError` with the numbers when it does not answer like the studio."""
    import torch

    from core.train.familiar import caught_features

    batch = golden.batch.numpy()
    out = run_onnx(model_file, batch) if fmt == "onnx" else run_torchscript(model_file, batch, names)
    with torch.inference_mode(), caught_features(studio.inference.model) as seen:
        probs = studio.inference.predict(golden.batch).numpy()
    exported = out["probabilities"]
    top_equal = int((exported.argmax(1) == probs.argmax(1)).sum())
    k = min(5, probs.shape[1])
    order = np.argsort(-probs, axis=1)[:, :k]
    diff = float(np.abs(np.take_along_axis(exported, order, 1) - np.take_along_axis(probs, order, 1)).max())
    report = {"images": len(batch), "top1_equal": top_equal, "max_top5_difference": diff}
    if "unlike" in out and studio.familiar is not None:
        theirs = out["unlike"] > 1.0
        ours = (studio.familiar.strangeness(seen.features[0], seen.inputs[0]) > 1.0).numpy()
        report["unlike_equal"] = int((theirs == ours).sum())
    if top_equal < len(batch) or diff > PARITY_TOLERANCE or report.get("unlike_equal", len(batch)) < len(batch):
        raise ExportError(f"the exported model does not answer like the studio: top class equal on {top_equal} of "
                          f"{len(batch)} golden images, probabilities up to {diff:.2g} apart (allowed "
                          f"{PARITY_TOLERANCE:g})")  # fmt: skip
    return report


def _evaluation(ws, store, run_id: int):
    """The run's test evaluation with the leak check, for the card; (None, why) when there is none."""
    from core.common.errors import CoreError
    from core.evaluate.evaluation import evaluate_run

    try:
        return evaluate_run(ws, store, run_id, "test", leaks="compute"), ""
    except CoreError as exc:
        return None, str(exc)


def _json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _put_in_place(work: Path, target: Path) -> None:
    """Rename the finished folder into place; an earlier export there is moved aside first, then removed."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        target.rename(old)
    work.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
