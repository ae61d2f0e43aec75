"""Export beyond LeNet (issue 26, slow): trained ResNet-18 and MobileNetV3 runs, a transferred run with a frozen
backbone, and every architecture of the registry at the graph level; each answers like the studio (ONNX Runtime and
TorchScript), and the folder's ``predict.py`` agrees on every golden file in a Python with only numpy, Pillow and
onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.common.workspace import Workspace
from core.export.folder import PARITY_TOLERANCE, export_run
from core.export.golden import read_golden
from core.export.graph import Exported, gap_linear_block, run_onnx, run_torchscript, write_onnx, write_torchscript
from core.store.runs import RunStore
from core.train.archs import ARCHS, arch_info, choose_image_size
from core.train.models import build_model
from tests import imagefactory as fx
from tests.export.standalone import isolated_python, run_predict
from tests.support import train_to_the_end

pytestmark = pytest.mark.slow  # ~2-3 min: three short trainings and every network exported twice


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    base = tmp_path_factory.mktemp("export-archs")
    ws = Workspace.open(base / "ws").with_roots(base)
    return ws, fx.write_colour_classes(base / "colours", 60, size=(32, 32))


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return isolated_python(tmp_path_factory.mktemp("isolated") / "venv")


def _check_folder(folder: Path, python: Path) -> None:
    golden = read_golden(folder)["images"]
    rows = run_predict(python, folder, [row["file"] for row in golden])
    disagree = [(w["file"], w["top"][0], g["top"][0]) for w, g in zip(golden, rows, strict=True)
                if w["top"][0]["label"] != g["top"][0]["label"]]  # fmt: skip
    assert not disagree, disagree


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_a_trained_run_exports_and_answers_like_the_studio(colours, python: Path, arch: str, tmp_path: Path) -> None:
    ws, data = colours
    run = train_to_the_end(ws, dataset=str(data), arch=arch, epochs=1)
    store = RunStore(ws.runs_db)
    for fmt in ("onnx", "torchscript"):
        result = export_run(ws, store, run.run_id, fmt, tmp_path / fmt)
        assert result.parity["top1_equal"] == result.parity["images"] == len(read_golden(result.folder)["images"])
        assert result.parity["max_top5_difference"] <= PARITY_TOLERANCE
    names = json.loads((tmp_path / "onnx" / "outputs.json").read_text())
    assert ("block" in names) == (arch == "resnet18")  # MobileNetV3's head has two linear layers: no class map
    if arch == "resnet18":
        head = json.loads((tmp_path / "onnx" / "head.json").read_text())
        assert head["block"] == "layer4" and len(head["weights"]) == 3 and head["map_side"] == 4  # 112 px / 32
    _check_folder(tmp_path / "onnx", python)


def test_a_transferred_run_with_a_frozen_backbone_exports(colours, python: Path, tmp_path: Path) -> None:
    ws, data = colours
    parent = train_to_the_end(ws, dataset=str(data), arch="resnet18", epochs=1)
    child = train_to_the_end(ws, dataset=str(data), arch="resnet18", epochs=1, from_run=parent.run_id,
                             freeze="backbone")  # fmt: skip
    result = export_run(ws, RunStore(ws.runs_db), child.run_id, "onnx", tmp_path / "child")
    assert result.parity["top1_equal"] == result.parity["images"]
    _check_folder(result.folder, python)


# One network per family of the registry: ResNet-34, -101 and -152 are ResNet-18's and -50's blocks, more of them (all
# eight were measured exporting with the same answers, 85 s; this set keeps CI within its budget).
FAMILIES = ["lenet", "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small"]


@pytest.mark.parametrize("arch", FAMILIES)
def test_every_network_of_the_registry_exports_with_the_same_answers(arch: str, tmp_path: Path) -> None:
    side = choose_image_size(arch, 16)  # the smallest input the studio gives it
    torch.manual_seed(0)
    model = build_model(arch, 4, weights="none").eval()
    module = Exported(model, None, gap_linear_block(arch))
    x = torch.randn(3, 3, side, side)
    with torch.no_grad():
        want = [t.numpy() for t in module(x)]
    onnx_out = run_onnx(write_onnx(module, x[:2], tmp_path / "m.onnx"), x.numpy())
    ts_out = run_torchscript(write_torchscript(module, x[:2], tmp_path / "m.pt"), x.numpy(), module.output_names)
    for got in (onnx_out, ts_out):
        for name, value in zip(module.output_names, want, strict=True):
            # Relative for the block: an untrained deep ResNet's activations reach 1e5 (float32 keeps ~7 digits).
            allowed = PARITY_TOLERANCE if name == "probabilities" else 1e-5 * float(np.abs(value).max()) + 1e-5
            assert np.abs(got[name] - value).max() <= allowed, (arch, name)
    assert (gap_linear_block(arch) is not None) == (arch_info(arch).builder or "").startswith(
        ("resnet", "mobilenet_v2")
    )


def test_every_family_is_tested() -> None:
    assert {a.rstrip("0123456789") for a in ARCHS} <= {a.rstrip("0123456789") for a in FAMILIES}
