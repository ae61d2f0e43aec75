"""Acceptance: trained with the default recipe on coloured shapes over textured backgrounds (a dataset nothing
was tuned on), the Grad-CAM peak falls inside the object's box for at least 90% of the test images: at 64 px (LeNet)
and at 96 px (ResNet-18, upscaled to 112 px so that the explained layer has a 7x7 map)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.common.workspace import Workspace
from core.explain.predict import load_run_predictor, square_map_to_image
from core.store.runs import RunStore
from core.train import runner as train_run
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry
from tests.shapes import box_contains, make_shapes_dataset

SEED = 20261123  # a seed used nowhere else: the recipe and the CAM code never saw these images
# 400 per class (280 of them for training): from scratch, with no pretrained weights offline, 100 per class is too few to learn
# the shapes whatever their colour and rotation (LeNet reached 37-75% test accuracy on 100 per class).
N_PER_CLASS = 400


def _wait(registry: JobRegistry, run_id: int, timeout: float):
    """Wait for the training; stop it if the wait ends any other way (a timeout must not leave it training beside the
    next tests: on 2 cores it slowed them, and a process forked beside it can hang on a lock it held)."""
    try:
        return registry.wait(run_id, timeout=timeout)
    finally:
        registry.cancel(run_id)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_gradcam_peak_falls_inside_the_object_box(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    boxes = make_shapes_dataset(root, n_per_class=N_PER_CLASS, size=64, seed=SEED)
    ws = Workspace.open(tmp_path / "ws")
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    run_id = train_run.submit_training(registry, ws, TrainConfig(dataset=str(root)))  # the default recipe
    job = _wait(registry, run_id, timeout=1800)
    assert job.status == "completed", job.error
    predictor = load_run_predictor(ws, store, run_id)
    tests = sorted(p for p in boxes if p.startswith("test/"))
    inside = []
    for rel in tests:
        pred = predictor.run(root / rel, rel, cam="gradcam")
        y, x = np.unravel_index(int(np.argmax(pred.heatmap)), pred.heatmap.shape)
        inside.append(box_contains(boxes[rel], int(y), int(x)))
    share = float(np.mean(inside))
    accuracy = train_run.result_json(store, run_id, ws)["test"]["accuracy"]
    print(f"test accuracy {accuracy:.1%}; CAM peak inside the box for {share:.1%} of {len(tests)} test images")
    assert share >= 0.9, (share, accuracy)


# --- 96 px: the size at which a ResNet's last stage gives only a 3x3 map ------------------------------------------

SEED_96 = 20261207  # another unseen set, not the 64 px one
N_PER_CLASS_96 = 400


def _peak_inside(heat: np.ndarray, box) -> bool:
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return box_contains(box, int(y), int(x))


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the suite's 600 s is far below this test's 17 minutes of training
def test_at_96_px_the_gradcam_peak_falls_inside_the_object_box(tmp_path: Path) -> None:
    """The default recipe picks ResNet-18 and upscales the 96 px images to 112 px, where layer3's map is 7x7 (at
    96 px it would be 6x6, and layer4's 3x3); the explained layer is layer3.

    Its training takes about 17 minutes on the 2-core CPU (1042 s in the bench's run), so it runs with the slow
    tests in CI. Measured on this set (bench.bench_cam_localisation, 240 test images): at 112 px 100% test
    accuracy, Grad-CAM peak inside the box 96.7% with layer3 (the choice), Grad-CAM++ 97.5%; at the former 96 px
    input 98.8% accuracy, 86.2% with layer3 (6x6), 52.1% with layer4 (3x3), Grad-CAM++ 95.8%.
    """
    from core.explain.cam import explain

    root = tmp_path / "shapes96"
    boxes = make_shapes_dataset(root, n_per_class=N_PER_CLASS_96, size=96, seed=SEED_96)
    ws = Workspace.open(tmp_path / "ws")
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    run_id = train_run.submit_training(registry, ws, TrainConfig(dataset=str(root)))  # the default recipe
    job = _wait(registry, run_id, timeout=3000)
    assert job.status == "completed", job.error
    predictor = load_run_predictor(ws, store, run_id)
    assert (predictor.inference.arch, predictor.inference.image_size) == ("resnet18", 112)
    model = predictor.inference.model
    shares: dict[str, list[bool]] = {"chosen": [], "layer4": [], "gradcam++": []}
    for rel in sorted(p for p in boxes if p.startswith("test/")):
        pred = predictor.run(root / rel, rel, cam="gradcam")
        assert (pred.cam_layer, pred.cam_map) == ("layer3.1", (7, 7))
        shares["chosen"].append(_peak_inside(pred.heatmap, boxes[rel]))
        x = predictor.inference.preprocess([predictor.open(root / rel)])
        coarse = explain(model, x, target_layer=model.layer4[-1]).heatmap  # 4x4 cells, drawn at 112 px
        coarse = square_map_to_image(coarse, (96, 96))  # back onto the 96 px image the boxes are measured on
        shares["layer4"].append(_peak_inside(coarse, boxes[rel]))
        shares["gradcam++"].append(_peak_inside(predictor.run(root / rel, rel, cam="gradcam++").heatmap, boxes[rel]))
    share = {k: float(np.mean(v)) for k, v in shares.items()}
    accuracy = train_run.result_json(store, run_id, ws)["test"]["accuracy"]
    print(f"test accuracy {accuracy:.1%}; peak inside the box: {share}")
    assert accuracy >= 0.9, accuracy
    assert share["chosen"] >= 0.9 and share["chosen"] > share["layer4"], share  # the bar: 90%
    assert share["gradcam++"] >= 0.9, share
