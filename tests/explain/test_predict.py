"""The ``predict`` command (core.predict + core.cli_predict) on a real, freshly trained run.

The session's tiny LeNet run on 3 colour classes of non-square 16x12 px images (``trained_colours``, in a copy of
its workspace); every test classifies real files through ``core.__main__.main`` and reads its JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from core.cli.main import main
from core.common.workspace import Workspace
from core.explain.methods import ALL_METHODS, METHODS, SLOW_METHODS
from core.explain.overlay import overlay
from core.explain.predict import TOP_K, imagenet_categories
from core.store.runs import RunStore
from core.train.weights import OFFLINE_ENV, imagenet_weights_file
from tests import imagefactory as f
from tests.support import TrainedRun, copy_workspace, train_to_the_end

COLOURS = f.COLOURS
CONTRACT_KEYS = {"image", "top", "ms", "not_sure", "why"}  # not_sure/why: issue 25's "not sure"
CAM_KEYS = {"cam_method", "cam_class", "cam_ms", "cam", "cam_layer", "cam_map"}  # which layer, its map h x w


@dataclass
class Trained:
    ws: Workspace
    run_id: int
    classes: list[str]
    images: Path  # a folder of test images outside the dataset


def _train(ws: Workspace, dataset: Path) -> int:
    return train_to_the_end(ws, dataset=str(dataset), arch="lenet", epochs=1, batch_size=16).run_id


@pytest.fixture(scope="module")
def trained(trained_colours: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    run = copy_workspace(trained_colours, tmp_path_factory.mktemp("predict") / "ws")
    ws, run_id = run.ws, run.run_id
    images = ws.root / "to-classify"
    f.write_rgb(images / "wide.png", size=(20, 12), color=COLOURS["red"], seed=3)  # 20 wide, 12 tall
    f.write_rgb(images / "photo.jpg", size=(14, 18), color=COLOURS["blue"], seed=4)  # taller than wide
    f.write_exif_rotated_jpeg(images / "rotated.jpg", size=(24, 12), orientation=6)  # upright: 12 wide, 24 tall
    f.write_rgb(images / "a" / "same.png", size=(16, 16), color=COLOURS["green"], seed=1)
    f.write_rgb(images / "b" / "same.png", size=(16, 16), color=COLOURS["red"], seed=2)
    f.write_16bit_png(images / "sixteen.png", size=(18, 12))
    f.write_cmyk_jpeg(images / "cmyk.jpg", size=(12, 18))
    f.write_truncated_jpeg(images / "truncated.jpg", size=(64, 64))
    f.write_text_as_image(images / "text.png")
    f.write_bomb_png(images / "bomb.png")
    return Trained(ws, run_id, sorted(COLOURS), images)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``python -m core ...`` in process: (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse errors leave through SystemExit(2)
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _predict(capsys, trained: Trained, *args: str) -> list[dict]:
    code, out, err = _cli(capsys, "predict", "--run", str(trained.run_id), *args,
                          "--workspace", str(trained.ws.root), "--json")  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    assert isinstance(rows, list)
    return rows


def _assert_one_line_error(code: int, out: str, err: str, *words: str) -> None:
    assert code == 2, (out, err)
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err


def _assert_top(top: list[dict], classes: list[str]) -> None:
    assert len(top) == min(TOP_K, len(classes))
    assert all(set(t) == {"label", "p"} for t in top)
    assert [t["label"] for t in top if t["label"] in classes] == [t["label"] for t in top]
    assert len({t["label"] for t in top}) == len(top)
    ps = [t["p"] for t in top]
    assert all(0.0 <= p <= 1.0 for p in ps)
    assert sum(ps) <= 1.0 + 1e-5  # rounded to 6 digits: a few millionths over 1 at most
    assert ps == sorted(ps, reverse=True)


# --- plain classification ------------------------------------------------------------------------


def test_predict_json_follows_the_contract(trained: Trained, capsys) -> None:
    paths = [str(trained.images / "wide.png"), str(trained.images / "photo.jpg")]
    rows = _predict(capsys, trained, *paths)
    assert [r["image"] for r in rows] == paths
    for row in rows:
        assert set(row) == CONTRACT_KEYS, row
        _assert_top(row["top"], trained.classes)
        assert isinstance(row["ms"], int | float) and row["ms"] >= 0
    # With 3 classes the top list holds every class, so the probabilities sum to 1.
    assert sum(t["p"] for t in rows[0]["top"]) == pytest.approx(1.0, abs=1e-5)


def test_predict_without_json_prints_one_line_per_image(trained: Trained, capsys) -> None:
    image = str(trained.images / "wide.png")
    code, out, err = _cli(capsys, "predict", "--run", str(trained.run_id), image,
                          str(trained.images / "text.png"), "--workspace", str(trained.ws.root))  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{image}: ") and "%" in lines[0] and "ms" in lines[0]
    assert "error:" in lines[1]


def test_unusual_but_good_images_classify(trained: Trained, capsys) -> None:
    paths = [str(trained.images / name) for name in ("sixteen.png", "cmyk.jpg", "rotated.jpg")]
    rows = _predict(capsys, trained, *paths)
    for row in rows:
        assert "error" not in row, row
        _assert_top(row["top"], trained.classes)


def test_bad_files_get_an_error_and_the_others_still_run(trained: Trained, capsys) -> None:
    good = [str(trained.images / "wide.png"), str(trained.images / "photo.jpg")]
    bad = {
        str(trained.images / "truncated.jpg"): "truncated",
        str(trained.images / "text.png"): "",
        str(trained.images / "bomb.png"): "",
        str(trained.images / "missing.png"): "not found",
        str(trained.images / "a"): "directory",
    }
    order = [good[0], *bad, good[1]]
    rows = _predict(capsys, trained, *order)
    assert [r["image"] for r in rows] == order
    by_image = {r["image"]: r for r in rows}
    for path, word in bad.items():
        row = by_image[path]
        assert set(row) == {"image", "error"}, row
        assert isinstance(row["error"], str) and row["error"].strip(), row
        assert word in row["error"], row
    for path in good:
        assert "error" not in by_image[path]
        _assert_top(by_image[path]["top"], trained.classes)


def test_csv_option_writes_the_same_predictions_as_a_table(trained: Trained, tmp_path: Path, capsys) -> None:
    import pandas as pd

    paths = [str(trained.images / "wide.png"), str(trained.images / "text.png")]
    table_file = tmp_path / "out.csv"
    rows = _predict(capsys, trained, *paths, "--csv", str(table_file))
    table = pd.read_csv(table_file, keep_default_na=False)
    assert list(table.columns) == [
        "image",
        *(f"{c}{k}" for k in range(1, 6) for c in ("top", "p")),
        "not_sure",
        "why",
        "ms",
        "error",
    ]
    assert table["image"].tolist() == paths
    good, bad = table.iloc[0], table.iloc[1]
    assert [good[f"top{k + 1}"] for k in range(3)] == [t["label"] for t in rows[0]["top"]]
    assert float(good["p1"]) == pytest.approx(rows[0]["top"][0]["p"], abs=1e-6) and good["error"] == ""
    assert bad["error"] == rows[1]["error"] and bad["top1"] == "" and bad["p1"] == ""


def test_the_same_file_gets_the_same_answer(trained: Trained, capsys) -> None:
    image = str(trained.images / "photo.jpg")
    first, second = _predict(capsys, trained, image, image)
    assert first["top"] == second["top"]


# --- CAM heat maps -------------------------------------------------------------------------------


def _centre_square_only(heat: np.ndarray) -> None:
    """Nonzero only inside the centre square the model saw (shorter side, centred)."""
    height, width = heat.shape
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    outside = np.ones_like(heat, dtype=bool)
    outside[top : top + side, left : left + side] = False
    assert not heat[outside].any()


@pytest.mark.parametrize(
    ("name", "shape"),
    [("wide.png", (12, 20)), ("photo.jpg", (18, 14)), ("rotated.jpg", (24, 12))],  # (height, width), upright
)
def test_cam_map_is_saved_at_the_image_own_size(name: str, shape, trained: Trained, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cams"
    (row,) = _predict(capsys, trained, str(trained.images / name), "--cam", "gradcam", "--cam-out", str(out))
    assert set(row) - {"cam_overlay", "cam_note"} == CONTRACT_KEYS | CAM_KEYS, row
    assert row["cam_method"] == "gradcam" and row["cam_class"] == row["top"][0]["label"]
    assert row["cam_ms"] >= 0
    assert row["cam_layer"] == "features.4" and row["cam_map"] == [4, 4]  # LeNet at 16 px: its last block, 4x4
    assert Path(row["cam"]) == out / f"{Path(name).stem}.npy"
    heat = np.load(row["cam"])
    assert heat.shape == shape
    assert np.issubdtype(heat.dtype, np.floating)
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    _centre_square_only(heat)
    assert heat.any() or row.get("cam_note"), row  # an all-zero map is explained by a note
    if not row.get("cam_note"):  # the PNG to look at: the map over the upright image, at its own size
        assert Path(row["cam_overlay"]) == out / f"{Path(name).stem}.png"
        with Image.open(row["cam_overlay"]) as png:
            assert png.size == (shape[1], shape[0]) and png.mode == "RGB"
            with Image.open(trained.images / name) as original:
                upright = ImageOps.exif_transpose(original).convert("RGB")
            assert np.array_equal(np.asarray(png), np.asarray(overlay(upright, heat)))  # the saved map, full size


def test_two_images_with_the_same_stem_get_two_maps(trained: Trained, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cams"
    a, b = str(trained.images / "a" / "same.png"), str(trained.images / "b" / "same.png")
    rows = _predict(capsys, trained, a, b, "--cam", "gradcam", "--cam-out", str(out))
    files = [Path(r["cam"]) for r in rows]
    assert len(set(files)) == 2
    assert all(p.is_file() and p.parent == out for p in files)
    overlays = [Path(r["cam_overlay"]) for r in rows if r.get("cam_overlay")]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files + overlays)
    assert all(np.load(p).shape == (16, 16) for p in files)


def test_cam_without_cam_out_reports_cam_ms_and_no_file(trained: Trained, capsys) -> None:
    (row,) = _predict(capsys, trained, str(trained.images / "wide.png"), "--cam", "eigencam")
    assert "cam" not in row
    assert {"cam_method", "cam_class", "cam_ms"} <= set(row)


def test_class_option_explains_that_class(trained: Trained, tmp_path: Path, capsys) -> None:
    image = str(trained.images / "wide.png")
    (plain,) = _predict(capsys, trained, image)
    other = plain["top"][-1]["label"]  # the least likely class: never the default explained one
    assert other != plain["top"][0]["label"]
    (row,) = _predict(capsys, trained, image, "--cam", "gradcam", "--class", other, "--cam-out", str(tmp_path))
    assert row["cam_class"] == other
    assert row["top"][0]["label"] == plain["top"][0]["label"]  # the prediction itself does not change
    assert np.load(row["cam"]).shape == (12, 20)


@pytest.mark.parametrize("method", sorted(ALL_METHODS))
def test_every_cam_method_runs(method: str, trained: Trained, tmp_path: Path, capsys) -> None:
    rows = _predict(capsys, trained, str(trained.images / "wide.png"), str(trained.images / "truncated.jpg"),
                    "--cam", method, "--cam-out", str(tmp_path))  # fmt: skip
    assert rows[0]["cam_method"] == method
    heat = np.load(rows[0]["cam"])
    assert heat.shape == (12, 20) and heat.min() >= 0.0 and heat.max() <= 1.0
    _centre_square_only(heat)
    assert set(rows[1]) == {"image", "error"}


def test_methods_cover_fast_and_slow() -> None:
    assert set(ALL_METHODS) == set(METHODS) | set(SLOW_METHODS)
    assert "gradcam" in METHODS and SLOW_METHODS


# --- bad requests: one line, exit 2 --------------------------------------------------------------


def test_unknown_cam_method_is_one_line(trained: Trained, capsys) -> None:
    code, out, err = _cli(capsys, "predict", "--run", str(trained.run_id), str(trained.images / "wide.png"),
                          "--cam", "nosuchcam", "--workspace", str(trained.ws.root), "--json")  # fmt: skip
    _assert_one_line_error(code, out, err, "nosuchcam")


@pytest.mark.parametrize(
    ("images", "cam"),
    [(["wide.png"], ["--cam", "gradcam"]), (["truncated.jpg", "wide.png"], ["--cam", "gradcam"]),
     (["truncated.jpg"], ["--cam", "gradcam"]), (["wide.png"], [])],
    ids=["good", "bad-first", "all-bad", "no-cam"],
)  # fmt: skip
def test_unknown_class_is_one_line(images, cam, trained: Trained, capsys) -> None:
    paths = [str(trained.images / name) for name in images]
    code, out, err = _cli(capsys, "predict", "--run", str(trained.run_id), *paths, *cam, "--class", "zebra",
                          "--workspace", str(trained.ws.root), "--json")  # fmt: skip
    _assert_one_line_error(code, out, err, "zebra")


def test_unknown_run_is_one_line(trained: Trained, capsys) -> None:
    code, out, err = _cli(capsys, "predict", "--run", "999", str(trained.images / "wide.png"),
                          "--workspace", str(trained.ws.root), "--json")  # fmt: skip
    _assert_one_line_error(code, out, err, "999")


def test_no_run_at_all_is_one_line(trained: Trained, tmp_path: Path, capsys) -> None:
    code, out, err = _cli(capsys, "predict", str(trained.images / "wide.png"), "--workspace", str(tmp_path / "empty"),
                          "--json")  # fmt: skip
    _assert_one_line_error(code, out, err, "train")


def test_no_image_is_one_line(trained: Trained, capsys) -> None:
    code, out, err = _cli(capsys, "predict", "--run", str(trained.run_id), "--workspace", str(trained.ws.root))
    _assert_one_line_error(code, out, err)


def test_imagenet_weights_missing_offline_names_the_file_and_folder(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv(OFFLINE_ENV, "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    wf = imagenet_weights_file("resnet18")
    assert wf.file_name == "resnet18-f37072fd.pth"
    code, out, err = _cli(capsys, "predict", "--imagenet", "resnet18", str(trained.images / "wide.png"),
                          "--workspace", str(trained.ws.root), "--json")  # fmt: skip
    _assert_one_line_error(code, out, err, "resnet18-f37072fd.pth", str(tmp_path / "torch-home"))
    assert not wf.path.exists()  # nothing downloaded, nothing half-written


def test_imagenet_categories_come_with_torchvision() -> None:
    names = imagenet_categories("resnet50")
    assert len(names) == 1000 and len(set(names)) == 1000
    assert all(isinstance(n, str) and n for n in names)


# --- the default run -----------------------------------------------------------------------------


def test_default_run_is_the_latest_completed_one(trained: Trained, tmp_path_factory, capsys) -> None:
    """Without --run: the newest completed run with a checkpoint, not a newer queued or checkpoint-less one."""
    ws = Workspace.open(tmp_path_factory.mktemp("default-run") / "ws")
    first = _train(ws, f.write_colour_classes(ws.datasets / "three", 8, size=(16, 12)))
    two = ("red", "blue")
    second = _train(ws, f.write_colour_classes(ws.datasets / "two", 8, size=(16, 12), labels=two))
    store = RunStore(ws.runs_db)
    no_checkpoint = store.create_run(dataset=str(ws.datasets / "two"))
    store.set_status(no_checkpoint, "completed")  # completed, yet no best.pt
    store.create_run(dataset=str(ws.datasets / "two"))  # queued, newest of all
    image = str(trained.images / "wide.png")

    def labels(*extra: str) -> set[str]:
        code, out, err = _cli(capsys, "predict", image, *extra, "--workspace", str(ws.root), "--json")
        assert code == 0, err
        (row,) = json.loads(out)
        return {t["label"] for t in row["top"]}

    assert labels() == set(two)
    assert labels("--run", str(second)) == set(two)
    assert labels("--run", str(first)) == set(COLOURS)


def test_a_large_jpeg_gets_its_map_at_its_own_size_not_the_reduced_decode(trained: Trained, tmp_path: Path,
                                                                          capsys) -> None:  # fmt: skip
    """Model inputs come from a JPEG draft (as in training); the map must still be the file's own size."""
    big = f.write_rgb(tmp_path / "big.jpg", size=(640, 480), color=(200, 40, 40), fmt="JPEG")
    rows = _predict(capsys, trained, str(big), "--cam", "gradcam", "--cam-out", str(tmp_path / "maps"))
    assert np.load(rows[0]["cam"]).shape == (480, 640)
