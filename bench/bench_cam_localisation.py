"""Does the heat map point at the object? The share of test images whose map peak falls inside the object's box,
per explained layer and CAM method, for the default recipe's model on shapes over real textures.

Trains the default recipe once on ``tests.shapes`` at ``--size`` px (or reuses ``--workspace`` with a completed
run), then scores: Grad-CAM on the layer the studio picks (``cam_layer_for``) and on its neighbours, the other
fast methods on the picked layer, and Grad-CAM on two layers averaged (the grad-cam library's multi-layer path).
Run: .venv/bin/python -m bench.bench_cam_localisation [--size 96] [--per-class 400] [--epochs N] [--batch-size N]
[--optimizer NAME] [--image-size N] [--seed N] [--holdout N] [--quick] [--workspace DIR]
(about 24 min on a 2-core CPU at 96 px with 400 per class and the automatic epochs: 17 of training at the recipe's
112 px, 6 of scoring). ``--image-size``: train and explain at N px instead of the recipe's choice (the images are
upscaled), e.g. 112 for 96 px images so that layer3 is 7x7. ``--epochs``/``--batch-size``: a fixed-length recipe
instead of the automatic epochs (0: the recipe's own); ``--optimizer``: another than the recipe's sgd.
``--holdout N``: score on N new images per class (another seed) instead of the set's own test split. ``--quick``:
score only what the acceptance test checks (the studio's layer, layer4, Grad-CAM++). Its recipe:
``tests.shapes.FULL_96``.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from core.common.workspace import Workspace
from core.explain.cam import explain
from core.explain.predict import load_run_predictor, square_map_to_image
from core.store.runs import RunStore
from core.train import runner as train_run
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry
from tests.shapes import FULL_96, box_contains, make_shapes_dataset, make_shapes_test_set

SEED = FULL_96.seed  # the 96 px acceptance set's seed (tests/explain/test_cam_acceptance.py)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--per-class", type=int, default=400)
    p.add_argument("--image-size", type=int, default=0, help="input side in px; 0: the recipe's choice")
    p.add_argument("--epochs", type=int, default=0, help="a fixed number of epochs; 0: the recipe's automatic ones")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="sgd", help="the recipe's sgd, or adam, adamw, ...")
    p.add_argument("--seed", type=int, default=SEED, help="the image set's seed")
    p.add_argument("--quick", action="store_true", help="score only the maps the acceptance test checks")
    p.add_argument("--holdout", type=int, default=0, help="score on this many new images per class (another seed) "
                   "instead of the dataset's own test split")  # fmt: skip
    p.add_argument("--workspace", default="bench/out/cam-localisation")
    args = p.parse_args()
    base = Path(args.workspace)
    root = base / f"shapes{args.size}-{args.per_class}-{args.seed}"
    started = time.perf_counter()
    boxes = make_shapes_dataset(root, n_per_class=args.per_class, size=args.size, seed=args.seed)
    print(f"wrote {len(boxes)} images in {time.perf_counter() - started:.0f} s")
    ws = Workspace.open(base / "ws").with_roots(base)
    store = RunStore(ws.runs_db)
    config = TrainConfig(dataset=str(root), image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
                         optimizer=args.optimizer)  # fmt: skip
    run_id = _trained(ws, store, config)
    predictor = load_run_predictor(ws, store, run_id)
    model = predictor.inference.model
    result = train_run.result_json(store, run_id, ws)
    accuracy = result["test"]["accuracy"]
    if args.holdout:
        root = base / f"holdout{args.size}-{args.holdout}-{args.seed + 1}"
        boxes = make_shapes_test_set(root, n_per_class=args.holdout, size=args.size, seed=args.seed + 1)
    tests = sorted(k for k in boxes if k.startswith("test/"))
    print(f"run {run_id}: {predictor.inference.arch} at {predictor.inference.image_size} px, {len(result['epochs'])} "
          f"epochs in {result['wall_s'] or 0:.0f} s, test accuracy {accuracy:.1%}, {len(tests)} test images")  # fmt: skip
    print("val accuracy by epoch:", " ".join(f"{e.get('val_acc', float('nan')):.2f}" for e in result["epochs"]))
    started = time.perf_counter()
    stages = {name: getattr(model, name)[-1] for name in ("layer2", "layer3", "layer4") if hasattr(model, name)}
    scores: dict[str, list[bool]] = {}
    score = functools.partial(_score, scores, side=args.size)
    for rel in tests:
        x = predictor.inference.preprocess([predictor.open(root / rel)])
        box = boxes[rel]
        pred = predictor.run(root / rel, rel, cam="gradcam")
        score(f"gradcam, studio's layer ({pred.cam_layer} {pred.cam_map})", pred.heatmap, box)
        if args.quick:
            score("gradcam, layer4", explain(model, x, target_layer=stages["layer4"]).heatmap, box)
            score("gradcam++, studio's layer", predictor.run(root / rel, rel, cam="gradcam++").heatmap, box)
            continue
        for name, layer in stages.items():
            score(f"gradcam, {name}", explain(model, x, target_layer=layer).heatmap, box)
        for method in ("gradcam++", "hirescam", "xgradcam", "layercam"):
            score(f"{method}, studio's layer", predictor.run(root / rel, rel, cam=method).heatmap, box)
        for pair in (("layer2", "layer3"), ("layer3", "layer4")):
            if all(n in stages for n in pair):
                score(f"gradcam, {' + '.join(pair)} averaged", _multi(model, x, pair, stages), box)
    print(f"{'map':<55}{'peak inside the box':>22}")
    for name, hits in scores.items():
        print(f"{name:<55}{np.mean(hits):>21.1%}")
    print(f"scored in {time.perf_counter() - started:.0f} s")


def _trained(ws: Workspace, store: RunStore, config: TrainConfig) -> int:
    """A completed run of ``config`` in ``ws`` (the same recipe's earlier run when there is one, else a new one)."""
    keys = ("dataset", "image_size", "epochs", "batch_size", "optimizer")
    wanted = {k: getattr(config, k) for k in keys}
    for run in store.list_runs(status="completed", kind="train"):
        if {k: run.config.get(k, getattr(TrainConfig(), k)) for k in keys} == wanted:
            return run.run_id
    started = time.perf_counter()
    registry = JobRegistry(store)
    run_id = train_run.submit_training(registry, ws, config)
    job = registry.wait(run_id, timeout=4 * 3600)
    print(f"trained run {run_id} ({job.status}) in {time.perf_counter() - started:.0f} s")
    return run_id


def _score(scores: dict[str, list[bool]], name: str, heat: np.ndarray, box, side: int) -> None:
    heat = square_map_to_image(heat, (side, side))  # a map at the input size (e.g. 112 px) onto the image's own side
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    scores.setdefault(name, []).append(box_contains(box, int(y), int(x)))


def _multi(model: torch.nn.Module, x: torch.Tensor, names: tuple[str, ...], stages: dict) -> np.ndarray:
    with torch.no_grad():
        target = int(model(x).argmax(1))
    with GradCAM(model, [stages[n] for n in names]) as cam:
        return cam(x, targets=[ClassifierOutputTarget(target)])[0]


if __name__ == "__main__":
    main()
