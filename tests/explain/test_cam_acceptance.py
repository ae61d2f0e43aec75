"""Acceptance: trained with the default recipe on coloured shapes over textured backgrounds (a dataset nothing
was tuned on), the Grad-CAM peak falls inside the object's box for at least 90% of the test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.common.workspace import Workspace
from core.explain.predict import load_run_predictor
from core.store.runs import RunStore
from core.train import runner as train_run
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry
from tests.shapes import box_contains, make_shapes_dataset

SEED = 20261123  # a seed used nowhere else: the recipe and the CAM code never saw these images
# 400 per class (280 of them for training): from scratch, with no pretrained weights offline, 100 per class is too few to learn
# the shapes whatever their colour and rotation (LeNet reached 37-75% test accuracy on 100 per class).
N_PER_CLASS = 400


@pytest.mark.slow
def test_gradcam_peak_falls_inside_the_object_box(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    boxes = make_shapes_dataset(root, n_per_class=N_PER_CLASS, size=64, seed=SEED)
    ws = Workspace.open(tmp_path / "ws")
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    run_id = train_run.submit_training(registry, ws, TrainConfig(dataset=str(root)))  # the default recipe
    job = registry.wait(run_id, timeout=1800)
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
