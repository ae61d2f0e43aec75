"""AppTest for the Classify page: a real LeNet run trained once for the module, real uploads of good, odd and
broken files (AppTest drives ``st.file_uploader`` itself), CAM method and class changes, the batch CSV."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest, app_test

from core.common.workspace import Workspace
from core.explain.predict import Prediction, load_run_predictor
from core.store.runs import RunStore
from tests import imagefactory as fx
from tests.support import ROOT, TrainedRun, copy_workspace
from ui import classify as views

TIMEOUT = 120
COLOURS = fx.COLOURS


@pytest.fixture(scope="module")
def trained(trained_colours: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with one completed LeNet run on 3 colour classes (the session's, copied: the page writes in it)."""
    return copy_workspace(trained_colours, tmp_path_factory.mktemp("classify") / "ws").ws.root


@pytest.fixture
def use_workspace(monkeypatch: pytest.MonkeyPatch):
    """Point the app at a workspace; cached resources (workspace, store, models) are rebuilt for it."""

    def use(root: Path) -> None:
        monkeypatch.setenv("STUDIO_WORKSPACE", str(root))
        st.cache_resource.clear()

    yield use
    st.cache_resource.clear()


MEDIA = MemoryMediaFileStorage("/mock/media")


@pytest.fixture
def page(trained: Path, use_workspace, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The Classify page on the trained workspace; downloads land in MEDIA, where a test can read them."""
    use_workspace(trained)
    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", lambda prefix: MEDIA)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    return at.switch_page("app_pages/classify.py").run()


def png_bytes(colour=(220, 30, 30), size=(12, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(colour=(30, 40, 220), size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def file_bytes(tmp_path: Path, write, name: str, **kw) -> bytes:
    """The bytes of a file written by one of ``tests.imagefactory``'s writers."""
    return write(tmp_path / name, **kw).read_bytes()


def errors_of(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def results_of(at: AppTest) -> dict:
    return at.session_state[views.RESULTS]


def image_captions(at: AppTest) -> list[str]:
    return [caption for el in at.get("image") for caption in el.captions]


def upload(at: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    at.file_uploader(key="classify_files").set_value(list(files))
    return at.run()


# --- no model ----------------------------------------------------------------------------------------------


def test_without_a_trained_run_the_page_says_so_and_links_to_train(tmp_path: Path, use_workspace) -> None:
    use_workspace(tmp_path / "empty-ws")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/classify.py").run()
    assert not at.exception and not errors_of(at)
    assert any("No model to classify with yet" in i.value for i in at.info)
    links = [el.proto.page for el in at.get("page_link")]
    assert "train" in links, links
    assert not at.get("file_uploader")


def test_the_model_picker_lists_runs_newest_first_and_imagenet_models_with_weights(
    trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace.open(trained)
    monkeypatch.setattr(views.predict, "imagenet_available", lambda arch: arch == "resnet18")
    choices = views.model_choices(ws, RunStore(ws.runs_db))
    assert [c.run_id for c in choices] == [1, None]
    assert choices[0].label.startswith("Run 1 (the best on this data) · LeNet (small CNN) · colours · best validation "
                                       "accuracy ")  # fmt: skip
    assert choices[1].arch == "resnet18" and "ImageNet" in choices[1].label


# --- one image ---------------------------------------------------------------------------------------------


def test_one_png_shows_top5_times_and_the_overlay_beside_the_original(page: AppTest) -> None:
    at = upload(page, ("red.png", png_bytes(), "image/png"))
    assert not at.exception and not errors_of(at), errors_of(at)
    assert at.get("plotly_chart"), "no top-5 chart"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Classification"].endswith(" ms") and metrics["Heat map"].endswith(" ms")
    captions = image_captions(at)
    assert captions[0] == "Original" and captions[1].startswith("Grad-CAM for “")
    expected = load_run_predictor(Workspace.open(), RunStore(Workspace.open().runs_db), 1).run(png_bytes(), "x")
    assert at.selectbox(key="classify_model").value.startswith("run:1:")
    class_box = next(s for s in at.selectbox if s.label == "Explain class")
    assert class_box.format_func(class_box.value) == f"top class ({expected.top[0]['label']})"
    cams = [r for k, r in results_of(at).items() if k[2] == "gradcam"]
    assert len(cams) == 1 and cams[0].heatmap.shape == (12, 12)  # the image's own size
    assert [t["label"] for t in cams[0].top] == [t["label"] for t in expected.top]


def test_method_and_class_changes_recompute_but_the_slider_and_colours_only_redraw(page: AppTest) -> None:
    at = upload(page, ("red.png", png_bytes(), "image/png"))
    first = dict(results_of(at))
    at.slider(key="classify_opacity").set_value(0.8).run()
    next(s for s in at.selectbox if s.label == "Colour map").set_value("viridis").run()
    assert not at.exception
    assert results_of(at).keys() == first.keys()
    assert all(results_of(at)[k] is first[k] for k in first)  # the same objects: nothing recomputed

    at.selectbox(key="classify_method").set_value("hirescam").run()
    class_box = next(s for s in at.selectbox if s.label == "Explain class")
    class_box.set_value("green").run()
    assert not at.exception and not errors_of(at)
    cam = results_of(at)[next(k for k in results_of(at) if k[2:] == ("hirescam", "green"))]
    assert cam.cam_class == "green" and cam.heatmap.shape == (12, 12)
    if cam.cam_note:  # a red square may hold no evidence for "green": then the page says so
        assert any("No heat map for “green”" in i.value for i in at.info)
    else:
        assert image_captions(at)[1] == "HiResCAM for “green”"
    at.selectbox(key="classify_method").set_value("gradcam").run()
    class_box = next(s for s in at.selectbox if s.label == "Explain class")
    assert class_box.value == "green"  # the chosen class stays while the method changes
    # Stored: the classification, then Grad-CAM/top, HiResCAM/top, HiResCAM/green, Grad-CAM/green.
    assert not at.exception and [k[2:] for k in results_of(at)] == [
        (None, None),
        ("gradcam", ""),
        ("hirescam", ""),
        ("hirescam", "green"),
        ("gradcam", "green"),
    ]


def test_eigen_cam_is_not_said_to_be_for_a_class_and_its_class_box_is_off(page: AppTest) -> None:
    at = upload(page, ("red.png", png_bytes(), "image/png"))
    at.selectbox(key="classify_method").set_value("eigencam").run()
    assert not at.exception
    assert image_captions(at)[1] == "Eigen-CAM (the main pattern, the same for any class)"
    assert next(s for s in at.selectbox if s.label == "Explain class").disabled
    assert not any("part named" in c.value or "layer" in c.value for c in at.caption)  # no layer names for people


def test_a_slow_method_waits_for_its_button_then_runs(page: AppTest) -> None:
    at = upload(page, ("red.png", png_bytes(), "image/png"))
    at.selectbox(key="classify_method").set_value("scorecam").run()
    warning = next(w.value for w in at.warning if "passes at" in w.value)
    assert "runs the model once per channel" in warning and "for this picture" in warning
    assert not any(k[2] == "scorecam" for k in results_of(at))
    at.button(key="classify_run_slow").click().run()
    assert not at.exception and not errors_of(at)
    assert image_captions(at)[1].startswith("Score-CAM (slow) for")


def test_a_map_without_positive_evidence_says_so_instead_of_an_empty_overlay(page: AppTest) -> None:
    at = upload(page, ("red.png", png_bytes(), "image/png"))
    key = next(k for k in results_of(at) if k[2] == "gradcam")
    cam: Prediction = results_of(at)[key]
    note = "No positive evidence for this class: every region of the image counts against it."
    results_of(at)[key] = replace(cam, heatmap=np.zeros_like(cam.heatmap), cam_note=note)
    at.run()
    assert not at.exception
    assert any(note in i.value for i in at.info)
    assert image_captions(at) == ["Original"]


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("broken.jpg", lambda d: file_bytes(d, fx.write_truncated_jpeg, "t.jpg"), "truncated or corrupt"),
        ("notes.png", lambda d: file_bytes(d, fx.write_text_as_image, "t.png"), "not an image"),
        ("empty.png", lambda d: b"", "empty file"),
        ("bomb.png", lambda d: file_bytes(d, fx.write_bomb_png, "b.png"), "too large"),
    ],
)
def test_a_bad_upload_gives_its_reason_in_words_and_no_traceback(
    page: AppTest, tmp_path: Path, name: str, make, expected: str
) -> None:
    at = upload(page, (name, make(tmp_path), "image/png"))
    assert not at.exception
    assert any(name in e and expected in e for e in errors_of(at)), errors_of(at)
    assert not at.get("plotly_chart")


@pytest.mark.parametrize(("name", "write"), [("sixteen.png", fx.write_16bit_png), ("cmyk.jpg", fx.write_cmyk_jpeg)])
def test_odd_modes_are_classified(page: AppTest, tmp_path: Path, name: str, write) -> None:
    at = upload(page, (name, file_bytes(tmp_path, write, name), "image/png"))
    assert not at.exception and not errors_of(at), errors_of(at)
    assert at.get("plotly_chart") and len(image_captions(at)) == 2


# --- a batch -----------------------------------------------------------------------------------------------


def test_a_batch_shows_a_gallery_with_errors_in_their_cells_and_offers_a_csv(page: AppTest, tmp_path: Path) -> None:
    files = [
        ("red.png", png_bytes(), "image/png"),
        ("blue.jpg", jpeg_bytes(), "image/jpeg"),
        ("broken.jpg", file_bytes(tmp_path, fx.write_truncated_jpeg, "t.jpg"), "image/jpeg"),
        ("notes.png", file_bytes(tmp_path, fx.write_text_as_image, "n.png"), "image/png"),
        ("sixteen.png", file_bytes(tmp_path, fx.write_16bit_png, "s.png"), "image/png"),
        ("cmyk.jpg", file_bytes(tmp_path, fx.write_cmyk_jpeg, "c.jpg"), "image/jpeg"),
    ]
    at = upload(page, *files)
    assert not at.exception and not errors_of(at)
    text = " ".join(m.value for m in at.markdown)
    assert "**6 images** · 4 classified · **2 could not be read**" in text
    assert "truncated or corrupt" in text and "not an image" in text  # in the cells of the files
    assert [c.value for c in at.caption][:6] == [name for name, _, _ in files]
    assert at.get("download_button")

    table = _offered_csv(at)
    tops = [f"{p}{k}" for k in range(1, 6) for p in ("top", "p")]
    assert list(table.columns) == ["image", *tops, "not_sure", "why", "ms", "error"]
    assert list(table["image"]) == [name for name, _, _ in files]
    good, bad = table[table["error"].isna()], table[table["error"].notna()]
    assert list(bad["image"]) == ["broken.jpg", "notes.png"]
    assert set(good["top1"]) <= set(COLOURS) and good["p1"].between(0, 1).all()
    assert (good["p1"] >= good["p2"]).all() and (good["ms"] > 0).all()
    assert (good[["p1", "p2", "p3"]].sum(axis=1) - 1).abs().max() < 1e-3  # 3 classes: top3 is everything
    assert bad["top1"].isna().all() and bad["ms"].isna().all()

    # The closer look at one image of the batch: its CAM, and the gallery stays.
    good_ids = [k[0] for k, r in results_of(at).items() if k[2] is None and isinstance(r, Prediction)]
    at.selectbox(key="classify_closer").set_value(good_ids[1]).run()  # options are file ids, shown by name
    assert not at.exception
    assert any(c.startswith("Grad-CAM for") for c in image_captions(at))
    assert "blue.jpg" in " ".join(m.value for m in at.markdown)


def _offered_csv(at: AppTest) -> pd.DataFrame:
    """The CSV file behind the page's download button, read back from the media storage it was put in."""
    file_id = at.get("download_button")[0].proto.url.rsplit("/", 1)[-1].split(".")[0]
    return pd.read_csv(io.BytesIO(MEDIA.get_file(file_id).content))


# --- what the issue of presentable pages fixed ---------------------------------------------------------------


def test_the_same_picture_added_twice_is_classified_once_and_said_so(page: AppTest) -> None:
    at = upload(page, ("red.png", png_bytes(), "image/png"), ("red again.png", png_bytes(), "image/png"),
                ("blue.jpg", jpeg_bytes(), "image/jpeg"))  # fmt: skip
    assert not at.exception and not errors_of(at)
    assert [c.value for c in at.caption if c.value.startswith("Added more than once")] == [
        "Added more than once, classified once: red again.png. Remove the extra copies above with ✕."
    ]
    assert len({k[0] for k in results_of(at)}) == 2  # two pictures, not three
    assert at.selectbox(key="classify_closer").options == ["red.png", "blue.jpg"]


def test_the_class_asked_for_on_one_picture_does_not_carry_over_to_the_next(page: AppTest) -> None:
    at = upload(page, ("red.png", png_bytes(), "image/png"), ("blue.jpg", jpeg_bytes(), "image/jpeg"))
    next(s for s in at.selectbox if s.label == "Explain class").set_value("green").run()
    first, second = [k[0] for k, r in results_of(at).items() if k[2] is None]
    at.selectbox(key="classify_closer").set_value(second).run()
    assert not at.exception
    assert next(s for s in at.selectbox if s.label == "Explain class").value == ""  # the top class again
    at.selectbox(key="classify_closer").set_value(first).run()
    assert next(s for s in at.selectbox if s.label == "Explain class").value == "green"  # kept for the first


def test_a_webcam_photo_is_classified_and_explained_like_a_dropped_file(page: AppTest) -> None:
    at = page.radio(key="classify_source").set_value("The webcam").run()
    assert not at.exception and not at.get("file_uploader")
    photo = ("photo.jpg", jpeg_bytes(colour=(30, 200, 40), size=(64, 48)), "image/jpeg")
    at.camera_input(key="classify_camera").set_value(photo).run()
    assert not at.exception and not errors_of(at)
    assert any("**Webcam photo** · 64×48 px" in m.value for m in at.markdown)
    assert image_captions(at)[1].startswith("Grad-CAM for “")


def test_a_tiny_picture_and_its_heat_map_are_enlarged_with_the_same_square_pixels(page: AppTest) -> None:
    at = upload(page, ("red.png", png_bytes(size=(12, 12)), "image/png"))
    shown = at.get("image")
    original, heat = (Image.open(io.BytesIO(MEDIA.get_file(_media_id(el)).content)) for el in shown[:2])
    assert original.size == heat.size and original.width % 12 == 0
    factor = original.width // 12
    cells = np.asarray(heat.convert("RGB"))
    # every enlarged pixel is one flat block: no smoothing across the blocks of the picture
    blocks = cells.reshape(12, factor, 12, factor, 3)
    assert (blocks == blocks[:, :1, :, :1, :]).all()


def _media_id(element) -> str:
    return element.proto.imgs[0].url.rsplit("/", 1)[-1].split(".")[0]
