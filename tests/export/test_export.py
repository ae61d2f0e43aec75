"""Export (issue 26) on the default digits run (LeNet): ONNX Runtime and TorchScript answer like the studio on every
golden image, ``golden.json`` round-trips, the folder's ``predict.py`` agrees in a Python that has only numpy,
Pillow and onnxruntime, and bad requests are refused in words. ResNet-18, MobileNetV3 and every architecture of
the registry: ``test_export_archs.py`` (slow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as photos

from core.cli.main import main as cli
from core.explain.predict import load_run_predictor, predict_many
from core.export.folder import PARITY_TOLERANCE, ExportError, export_run
from core.export.golden import read_golden
from core.export.graph import run_onnx, run_torchscript
from core.store.runs import RunStore
from core.train.checkpoints import CheckpointError
from core.train.run_folder import checkpoint_path
from tests.export.standalone import imports_of, isolated_python, run_predict
from tests.support import TrainedRun, copy_workspace


@pytest.fixture(scope="module")
def digits(trained_digits: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """The session's digits run in a workspace of this module's own (the export fingerprints its dataset)."""
    return copy_workspace(trained_digits, tmp_path_factory.mktemp("export-digits") / "ws")


@pytest.fixture(scope="module")
def exported(digits: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("exports")
    store = RunStore(digits.ws.runs_db)
    return {fmt: export_run(digits.ws, store, digits.run_id, fmt, out / fmt).folder for fmt in ("onnx", "torchscript")}


@pytest.fixture(scope="module")
def only_numpy_pillow_onnxruntime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return isolated_python(tmp_path_factory.mktemp("isolated") / "venv")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_export_answers_like_the_studio_on_the_studios_own_tensors(digits: TrainedRun, exported, fmt) -> None:
    folder = exported[fmt]
    predictor = load_run_predictor(digits.ws, RunStore(digits.ws.runs_db), digits.run_id, "cpu")
    golden = read_golden(folder)
    files = [folder / row["file"] for row in golden["images"]]
    assert len(files) == 20 and all(f.is_file() for f in files)
    assert len({row["label"] for row in golden["images"]}) == 10  # every class shows
    batch = predictor.inference.preprocess([predictor.open(f) for f in files])
    studio = predictor.inference.predict(batch).numpy()
    names = json.loads((folder / "outputs.json").read_text())
    model = folder / ("model.onnx" if fmt == "onnx" else "model.pt")
    theirs = run_onnx(model, batch.numpy()) if fmt == "onnx" else run_torchscript(model, batch.numpy(), names)
    assert names == ["probabilities", "unlike"]  # a LeNet's head is not pooling + one linear layer: no block
    assert (theirs["probabilities"].argmax(1) == studio.argmax(1)).all()
    top5 = np.argsort(-studio, axis=1)[:, :5]
    gap = np.abs(np.take_along_axis(theirs["probabilities"], top5, 1) - np.take_along_axis(studio, top5, 1))
    assert gap.max() <= PARITY_TOLERANCE, gap.max()


def test_golden_json_round_trips_and_holds_the_studios_predict_json(digits: TrainedRun, exported) -> None:
    folder = exported["onnx"]
    golden = read_golden(folder)
    assert golden == json.loads((folder / "golden.json").read_text())
    predictor = load_run_predictor(digits.ws, RunStore(digits.ws.runs_db), digits.run_id, "cpu")
    files = [str(folder / row["file"]) for row in golden["images"]]
    studio = predict_many(predictor, files)
    for row, answer in zip(golden["images"], studio, strict=True):
        assert row["top"] == answer["top"] and row["not_sure"] == answer["not_sure"] and row["why"] == answer["why"]


def test_predict_py_needs_only_numpy_pillow_onnxruntime_and_agrees_with_the_studio(
    exported, only_numpy_pillow_onnxruntime: Path
) -> None:
    python, folder = only_numpy_pillow_onnxruntime, exported["onnx"]
    assert not imports_of(python, "torch", folder) and not imports_of(python, "core", folder)
    assert imports_of(python, "onnxruntime", folder)
    golden = read_golden(folder)["images"]
    rows = run_predict(python, folder, [row["file"] for row in golden])
    for want, got in zip(golden, rows, strict=True):
        assert got["image"] == want["file"] and set(got) == {"image", "top", "ms", "not_sure", "why"}
        assert got["top"][0]["label"] == want["top"][0]["label"], (want, got)
        assert abs(got["top"][0]["p"] - want["top"][0]["p"]) <= PARITY_TOLERANCE
        assert got["not_sure"] == want["not_sure"]


def test_predict_py_says_not_sure_where_the_studio_does(digits: TrainedRun, exported, only_numpy_pillow_onnxruntime,
                                                        tmp_path: Path) -> None:  # fmt: skip
    coffee, grey = tmp_path / "coffee.jpg", tmp_path / "grey.png"
    Image.fromarray(photos.coffee()).save(coffee)
    Image.new("L", (40, 30), 128).save(grey)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows = run_predict(only_numpy_pillow_onnxruntime, exported["onnx"], [str(coffee), str(grey), str(broken)])
    predictor = load_run_predictor(digits.ws, RunStore(digits.ws.runs_db), digits.run_id, "cpu")
    studio = predict_many(predictor, [str(coffee), str(grey)])
    for got, want in zip(rows[:2], studio, strict=True):
        assert got["not_sure"] and got["why"] == want["why"] == "not like the photos this model learned from"
    assert "error" in rows[2]


def test_the_folder_holds_what_the_issue_names(exported) -> None:
    folder = exported["onnx"]
    for name in ("model.onnx", "labels.json", "preprocess.json", "README.md", "golden.json", "predict.py"):
        assert (folder / name).is_file(), name
    prep = json.loads((folder / "preprocess.json").read_text())
    assert prep["side"] == 16 and prep["channels"] == 3 and prep["crop"] == "centre" and len(prep["mean"]) == 3
    card = (folder / "README.md").read_text()
    assert "Test accuracy" in card and "Chance level" in card and "copy among the training images" in card
    assert "python predict.py" in card
    assert json.loads((folder / "labels.json").read_text()) == [str(d) for d in range(10)]


def test_bad_requests_are_refused_in_words(digits: TrainedRun, tmp_path: Path, capsys) -> None:
    store = RunStore(digits.ws.runs_db)
    with pytest.raises(ExportError, match="the demo page runs the ONNX model"):
        export_run(digits.ws, store, digits.run_id, "torchscript", tmp_path / "x", demo=True)
    with pytest.raises(ExportError, match="format"):
        export_run(digits.ws, store, digits.run_id, "tflite", tmp_path / "x")
    assert cli(["export", "999", "--workspace", str(digits.ws.root)]) == 2
    assert "999" in capsys.readouterr().err


def test_a_damaged_or_missing_checkpoint_is_refused_in_words(digits: TrainedRun, tmp_path: Path) -> None:
    broken = copy_workspace(digits, tmp_path / "ws")
    best = checkpoint_path(broken.ws, broken.run_id, "best")
    best.write_bytes(best.read_bytes()[:1000])
    store = RunStore(broken.ws.runs_db)
    with pytest.raises(CheckpointError):
        export_run(broken.ws, store, broken.run_id, "onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out-*"))  # nothing half-written
    best.unlink()
    with pytest.raises(Exception, match="no best checkpoint"):
        export_run(broken.ws, store, broken.run_id, "onnx", tmp_path / "out")


def test_the_command_line_exports_and_prints_the_parity(digits: TrainedRun, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli-export"
    assert cli(["export", str(digits.run_id), "--out", str(out), "--json", "--workspace", str(digits.ws.root)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["parity"]["top1_equal"] == result["parity"]["images"] == 20
    assert result["parity"]["max_top5_difference"] <= PARITY_TOLERANCE
    assert (out / "model.onnx").is_file()
    assert cli(["export", str(digits.run_id), "--out", str(out), "--workspace", str(digits.ws.root)]) == 0
    assert "same top class on 20 of 20" in capsys.readouterr().out  # and an earlier export there is replaced
    shutil.rmtree(out)


def test_without_the_browser_runtime_the_export_is_kept_and_says_why(
    digits: TrainedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools

    from core.export import demo
    from core.export.folder import NO_DEMO

    # The real write_demo, pointed at an empty folder: a server where `npm ci --prefix web` never ran.
    monkeypatch.setattr(demo, "write_demo", functools.partial(demo.write_demo, runtime=tmp_path / "no-runtime"))
    result = export_run(digits.ws, RunStore(digits.ws.runs_db), digits.run_id, "onnx", tmp_path / "out", demo=True)
    assert not result.demo and (result.folder / "model.onnx").is_file() and not (result.folder / "index.html").exists()
    said = [n for n in result.notes if n.startswith(NO_DEMO)]
    assert len(said) == 1 and "npm ci --prefix web" in said[0], result.notes
