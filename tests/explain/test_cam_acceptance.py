"""Acceptance: trained with the default recipe on coloured shapes over textured backgrounds (a dataset nothing
was tuned on), the Grad-CAM peak falls inside the object's box for at least 90% of the test images: at 64 px (LeNet)
and at 96 px (ResNet-18, upscaled to 112 px so that the explained layer has a 7x7 map; after the full run).

The 96 px claim is checked in two parts. What is decided without training (fast, in every run): the input side
and the layer the studio explains, at every side the recipe can pick for every network: a map of at least 7x7
whole cells. What needs a trained network (a measurement run by hand, ``-m measure``): the full default recipe, ``tests.shapes.FULL_96``, with
the 90% bar on Grad-CAM (a shorter run does not reach it: see the test). Figures from
``bench.bench_cam_localisation`` in each test's docstring.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.common.workspace import Workspace
from core.explain.predict import load_run_predictor, square_map_to_image
from core.store.runs import RunStore
from core.train import runner as train_run
from core.train.archs import ARCHS, CAM_MIN_MAP_SIDE, cam_candidates, cam_layer_for, choose_image_size
from core.train.config import LENET_UP_TO, TrainConfig
from core.train.jobs import JobRegistry
from tests.shapes import FULL_96, Recipe, box_contains, make_shapes_dataset

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

TYPICAL_SIDES = (1, 8, 16, 28, 32, 48, 64, 96, 100, 112, 128, 150, 160, 200, 224, 256, 300, 500, 4000)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_at_every_side_the_recipe_picks_the_explained_layer_has_at_least_7x7_whole_cells(arch: str) -> None:
    """Without training: whatever the images' size, the input side the recipe picks for ``arch`` is a whole number
    of the explained layer's cells, and that layer has at least 7x7 of them when any layer of ``arch`` can."""
    for typical in TYPICAL_SIDES:
        side = choose_image_size(arch, typical)
        path, cells = cam_layer_for(arch, side)
        stride = dict(cam_candidates(arch))[path]
        assert side % stride == 0 and cells == side // stride, (arch, typical, side, path)  # whole cells
        finest = min(s for _, s in cam_candidates(arch))
        assert cells >= CAM_MIN_MAP_SIDE or side // finest < CAM_MIN_MAP_SIDE, (arch, typical, side, path)


def test_96_px_images_are_trained_at_112_px_and_explained_at_layer3_with_7x7_cells() -> None:
    """What the slow test below trains: the default recipe takes ResNet-18 for 96 px images (over LeNet's 64 px),
    upscales them to 112 px, and explains layer3 (7x7 cells of 16 px) rather than layer4 (4x4 at 112 px, 3x3 at 96)."""
    assert FULL_96.size > LENET_UP_TO
    assert choose_image_size("resnet18", FULL_96.size) == 112
    assert cam_layer_for("resnet18", 112) == ("layer3.-1", 7)
    assert cam_layer_for("resnet18", 96) == ("layer3.-1", 6)  # the size it would have without the upscaling


def _peak_inside(heat: np.ndarray, box) -> bool:
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return box_contains(box, int(y), int(x))


def _localisation(tmp_path: Path, recipe: Recipe) -> tuple[float, dict[str, float]]:
    """Train ``recipe`` on its shapes and return (test accuracy, share of test images whose map peak is inside the
    object's box: Grad-CAM at the studio's layer, Grad-CAM at layer4, Grad-CAM++ at the studio's layer)."""
    from core.explain.cam import explain

    root = tmp_path / "shapes96"
    boxes = make_shapes_dataset(root, n_per_class=recipe.n_per_class, size=recipe.size, seed=recipe.seed)
    ws = Workspace.open(tmp_path / "ws")
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    config = TrainConfig(dataset=str(root), epochs=recipe.epochs, batch_size=recipe.batch_size)  # the rest: default
    run_id = train_run.submit_training(registry, ws, config)
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
        coarse = square_map_to_image(coarse, (recipe.size, recipe.size))  # onto the image the boxes are measured on
        shares["layer4"].append(_peak_inside(coarse, boxes[rel]))
        shares["gradcam++"].append(_peak_inside(predictor.run(root / rel, rel, cam="gradcam++").heatmap, boxes[rel]))
    share = {k: float(np.mean(v)) for k, v in shares.items()}
    accuracy = train_run.result_json(store, run_id, ws)["test"]["accuracy"]
    print(f"{recipe}: test accuracy {accuracy:.1%}; peak inside the box: {share}")
    return accuracy, share


# A measurement, run by hand (-m measure): its 7 minutes of training were 37% of the slow set's time, and CI must stay
# under 25 minutes with the scale and label-check tests to come. The 64 px acceptance above keeps the trained bar in
# CI; the layer and side decided for 96 px are checked without training in every run (the two tests above).
@pytest.mark.measure
@pytest.mark.timeout(3600)  # the suite's 600 s is below this test's 6-17 minutes of training
def test_at_96_px_the_gradcam_peak_falls_inside_the_object_box(tmp_path: Path) -> None:
    """``FULL_96``: the default recipe, automatic epochs, 400 images per class. It picks ResNet-18 and upscales the
    96 px images to 112 px, where layer3's map is 7x7 (at 96 px it would be 6x6, and layer4's 3x3); the explained
    layer is layer3. Its training takes 6-17 minutes on the 2-core CPU (1042 s in the bench's run beside other work; this test and
    the 64 px one 8 minutes together alone, 2026-12-07: 100% accuracy, 96.7% in the box); run it by hand
    with `./studio test -m measure -s`.

    Measured on this set (bench.bench_cam_localisation, 240 test images): at 112 px 100% test accuracy, Grad-CAM
    peak inside the box 96.7% with layer3 (the choice), Grad-CAM++ 97.5%; at the former 96 px input 98.8%
    accuracy, 86.2% with layer3 (6x6), 52.1% with layer4 (3x3), Grad-CAM++ 95.8%.

    Why not a shorter run: fixed-length recipes of 4 to 10 minutes (200-800 images per class, 10-24 epochs, batch
    32-64; bench.bench_cam_localisation --epochs N --batch-size N --per-class N) reached 99.6-100% test accuracy
    but put the Grad-CAM peak in the box for 78.8%-91.9% of the test images (the same recipe twice: 91.9% and
    86.7%), Grad-CAM++ 93-99%: the misses are near misses (3-4 px outside the box, a cell is 13.7 px) on the
    smallest stars and triangles. A short run does not prove the 90% bar, so the bar is checked on the run the
    studio really makes.
    """
    accuracy, share = _localisation(tmp_path, FULL_96)
    assert accuracy >= 0.9, accuracy
    assert share["chosen"] >= 0.9 and share["chosen"] > share["layer4"], share  # the bar: 90%
    assert share["gradcam++"] >= 0.9, share
