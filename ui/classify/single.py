"""Drawing the Classify page: the model picker, one image explained (top-5 + CAM overlay), a batch gallery.

Results are kept per browser tab in ``st.session_state[RESULTS]``, keyed by (file_id, model, method, class):
moving the opacity slider or changing the colour map redraws the overlay from the stored heat map and never
recomputes the CAM. Models are loaded once per server process (``st.cache_resource``), keyed by run or
architecture. Stored pictures and maps are cut to display size, so a tab holding many photos stays small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image, ImageOps

from core.common.errors import CoreError, ImageError
from core.common.workspace import Workspace
from core.explain import predict
from core.explain.methods import ALL_METHODS, DEFAULT_METHOD
from core.explain.overlay import COLORMAPS, DEFAULT_COLORMAP, overlay
from core.explain.predict import Prediction, Predictor
from core.images.opener import open_image
from core.store.runs import RunStore
from core.train.archs import ARCHS
from core.train.runner import checkpoint_path
from core.train.weights import imagenet_weights_file
from ui.common import show_error

MAX_UPLOAD_MB = 50  # per file; the server-wide limit in .streamlit/config.toml is larger, for dataset ZIPs
RESULTS = "classify_results"  # session key: {(file_id, model key, method, class): Prediction | error text}
STORED_SIDE = 640  # pictures and heat maps are kept at most this large (display size)
SHOWN_SIDE = 360  # tiny images (8x8 digits) are enlarged pixel by pixel to about this
THUMB_SIDE = 150
GALLERY_COLUMNS = 6
GALLERY_MAX = 60
TOP = ""  # the class picker's "top class" entry

Result = Prediction | str  # a prediction, or why the file could not be used (in words)


@dataclass(frozen=True)
class ModelChoice:
    key: str  # "run:3:<checkpoint mtime>" or "imagenet:resnet50": part of every result's cache key
    label: str
    run_id: int | None = None
    arch: str | None = None


# --- models ------------------------------------------------------------------------------------------------


def model_choices(ws: Workspace, store: RunStore) -> list[ModelChoice]:
    """Completed runs with a checkpoint (newest first), then the ImageNet models whose weights are present."""
    out = []
    for run in store.list_runs(status="completed", kind="train"):
        path = checkpoint_path(ws, run.run_id, "best")
        if not path.is_file():
            continue
        parts = [f"run {run.run_id}", run.arch or "?", _short(run.dataset)]
        acc = store.best_metric(run.run_id, "val_acc")
        if acc is not None:
            parts.append(f"val acc {acc:.0%}")
        out.append(ModelChoice(f"run:{run.run_id}:{path.stat().st_mtime_ns}", " · ".join(parts), run_id=run.run_id))
    for arch, info in ARCHS.items():
        if info.weights and predict.imagenet_available(arch):
            out.append(ModelChoice(f"imagenet:{arch}", f"{info.label} · ImageNet (1,000 classes)", arch=arch))
    return out


def _short(dataset: str) -> str:
    return Path(dataset).name if "/" in dataset else dataset


def no_model() -> None:
    folder = imagenet_weights_file("resnet18").path.parent
    st.info("No model to classify with yet. Train one first (LeNet on the built-in digits takes under a minute), "
            f"or put torchvision's ImageNet weights files in `{folder}` to use those models.",
            icon=":material/info:")  # fmt: skip
    st.page_link("app_pages/train.py", label="Train a model", icon=":material/model_training:")


def pick_model(choices: list[ModelChoice], container=st) -> ModelChoice:
    by_key = {c.key: c for c in choices}
    key = container.selectbox("Model", list(by_key), format_func=lambda k: by_key[k].label, key="classify_model",
                              help="A completed training run (its best checkpoint), newest first, or a "
                              "torchvision ImageNet model whose weights are on this machine.")  # fmt: skip
    return by_key[key]


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def _predictor(
    run_id: int | None, arch: str | None, key: str, root: str, _ws: Workspace, _store: RunStore
) -> Predictor:
    if run_id is not None:
        return predict.load_run_predictor(_ws, _store, run_id)
    return predict.load_imagenet_predictor(arch)


def load(choice: ModelChoice, ws: Workspace, store: RunStore) -> Predictor | None:
    try:
        return _predictor(choice.run_id, choice.arch, choice.key, str(ws.root), ws, store)
    except CoreError as exc:
        show_error(exc, f"Cannot load {choice.label}")
        return None


# --- results (cached per tab) ------------------------------------------------------------------------------


def _results() -> dict[tuple, Result]:
    return st.session_state.setdefault(RESULTS, {})


def forget_others(files: list) -> None:
    """Drop the results of files that are no longer uploaded."""
    keep = {f.file_id for f in files}
    results = _results()
    for key in [k for k in results if k[0] not in keep]:
        del results[key]


def classified(predictor: Predictor, model: ModelChoice, file) -> Result:
    key = (file.file_id, model.key, None, None)
    results = _results()
    if key not in results:
        try:
            pred = predictor.run(file.getvalue(), file.name)  # what the command line and the endpoint call too
            # The model's copy of a big JPEG is decoded at reduced scale (draft); show the full-quality one.
            results[key] = replace(pred, picture=_fit(open_image(file.getvalue()), STORED_SIDE))
        except ImageError as exc:
            results[key] = exc.reason
    return results[key]


def explained(predictor: Predictor, model: ModelChoice, file, method: str, target: str) -> Result:
    key = (file.file_id, model.key, method, target)
    results = _results()
    if key not in results:
        try:
            with st.spinner(f"{ALL_METHODS[method].label} on {file.name}..."):
                pred = predictor.run(file.getvalue(), file.name, cam=method, target=target or None)
            # The map comes at the image's own size; kept at the size it is shown at (a 12 MP map is 48 MB).
            scale = min(1.0, STORED_SIDE / max(pred.size))
            size = (max(1, round(pred.size[0] * scale)), max(1, round(pred.size[1] * scale)))
            heat = np.asarray(Image.fromarray(pred.heatmap).resize(size, Image.Resampling.BILINEAR), np.float32)
            results[key] = replace(pred, picture=None, heatmap=heat)
        except CoreError as exc:
            results[key] = str(exc)
    return results[key]


def _fit(picture: Image.Image, side: int) -> Image.Image:
    """Shrunk to fit ``side`` (smooth) when larger; small images are left alone."""
    if max(picture.size) <= side:
        return picture
    return ImageOps.contain(picture, (side, side), Image.Resampling.LANCZOS)


def _shown(picture: Image.Image, side: int = SHOWN_SIDE) -> Image.Image:
    """Enlarged by a whole factor with square pixels (NEAREST) when tiny, so 8x8 digits read crisply."""
    factor = max(1, math.ceil(side / max(picture.size)))
    if factor == 1:
        return picture
    return picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)


# --- one image ---------------------------------------------------------------------------------------------


def top_chart(top: list[dict]) -> go.Figure:
    """The top-k classes as horizontal bars, most likely on top, probabilities in %."""
    labels, ps = [str(t["label"]) for t in top], [100 * float(t["p"]) for t in top]
    fig = go.Figure(go.Bar(x=ps, y=labels, orientation="h", text=[f"{p:.1f}%" for p in ps], textposition="auto",
                           marker_color=["#4C78A8"] + ["#A5C3E0"] * (len(ps) - 1), cliponaxis=False,
                           hovertemplate="%{y}: %{x:.2f}%<extra></extra>"))  # fmt: skip
    fig.update_layout(height=70 + 38 * len(ps), margin=dict(t=10, b=10, l=10, r=30), xaxis_title="probability",
                      xaxis=dict(range=[0, 100], ticksuffix="%"),
                      yaxis=dict(type="category", autorange="reversed"))  # fmt: skip
    return fig


def single(predictor: Predictor, model: ModelChoice, file) -> None:
    """One image: CAM controls, original and overlay side by side, the top-5 chart and the times."""
    pred = classified(predictor, model, file)
    if isinstance(pred, str):
        st.error(f"**{_plain(file.name)}**: {_plain(pred)}", icon=":material/broken_image:")
        return
    method, target, opacity, colormap = _cam_controls(predictor, model, pred)
    slow = ALL_METHODS[method].slow and (file.file_id, model.key, method, target) not in _results()
    if slow:
        st.warning(ALL_METHODS[method].help, icon=":material/hourglass_top:")
    go_slow = slow and st.button(f"Run {ALL_METHODS[method].label}", key="classify_run_slow")
    cam = explained(predictor, model, file, method, target) if not slow or go_slow else None
    images, facts = st.columns([3, 2], gap="large")
    with facts:
        st.markdown(f"**{_plain(file.name)}** · {pred.size[0]}×{pred.size[1]} px")
        st.plotly_chart(top_chart(pred.top), key="classify_top5", config={"displayModeBar": False})
        a, b = st.columns(2)
        a.metric("Classification", f"{pred.ms:.1f} ms", help="Preprocessing and one forward pass")
        b.metric("CAM", f"{cam.cam_ms:.1f} ms" if isinstance(cam, Prediction) else "—",
                 help="The heat map, after the forward pass")  # fmt: skip
    with images:
        _images(pred.picture, cam, opacity, colormap)


def _cam_controls(predictor: Predictor, model: ModelChoice, pred: Prediction) -> tuple[str, str, float, str]:
    a, b, c, d = st.columns([3, 3, 2, 2])
    methods = list(ALL_METHODS)
    method = a.selectbox("CAM method", methods, index=methods.index(DEFAULT_METHOD), key="classify_method",
                         format_func=lambda m: ALL_METHODS[m].label,
                         help="\n".join(f"- **{m.label}**: {m.help}" for m in ALL_METHODS.values()))  # fmt: skip
    top = str(pred.top[0]["label"])
    target = b.selectbox("Explain class", [TOP, *predictor.classes], key=f"classify_class_{model.key}",
                         format_func=lambda k: f"top class ({top})" if k == TOP else k,
                         help="Where the evidence for this class lies; any class of the model can be asked for.")  # fmt: skip
    opacity = c.slider(
        "Opacity", 0.0, 1.0, 0.5, 0.05, key="classify_opacity", help="0: the photo only, 1: colours only"
    )
    colormap = d.selectbox("Colour map", list(COLORMAPS), index=list(COLORMAPS).index(DEFAULT_COLORMAP),
                           key="classify_colormap", help="\n".join(f"- **{k}**: {v}" for k, v in COLORMAPS.items()))  # fmt: skip
    return method, target, opacity, colormap


def _images(picture: Image.Image, cam: Result | None, opacity: float, colormap: str) -> None:
    shown = _shown(picture)
    left, right = st.columns(2)
    left.image(shown, caption="Original", width="stretch")
    if cam is None:
        right.caption("Press the button above to compute this map.")
    elif isinstance(cam, str):
        right.error(cam, icon=":material/error:")
    elif cam.cam_note:
        right.info(
            f"**No heat map for “{_plain(str(cam.cam_class))}”.** {cam.cam_note}", icon=":material/visibility_off:"
        )
    else:
        blended = overlay(shown, cam.heatmap, opacity, colormap)
        right.image(blended, caption=f"{ALL_METHODS[cam.cam_method].label} for “{cam.cam_class}”",
                    width="stretch")  # fmt: skip


# --- a batch -----------------------------------------------------------------------------------------------


def batch(predictor: Predictor, model: ModelChoice, files: list) -> list[Result]:
    """Classify every file (new ones only), then the summary, the CSV download and the gallery."""
    todo = [f for f in files if (f.file_id, model.key, None, None) not in _results()]
    bar = st.progress(0.0, text=f"Classifying {len(todo)} images...") if len(todo) > 1 else None
    for i, file in enumerate(todo):
        classified(predictor, model, file)
        if bar is not None:
            bar.progress((i + 1) / len(todo), text=f"Classifying: {i + 1} / {len(todo)}")
    if bar is not None:
        bar.empty()
    preds = [classified(predictor, model, f) for f in files]
    bad = sum(isinstance(p, str) for p in preds)
    head, button = st.columns([4, 1], vertical_alignment="center")
    head.markdown(f"**{len(files)} images** · {len(files) - bad} classified"
                  + (f" · **{bad} could not be read** (see below)" if bad else ""))  # fmt: skip
    button.download_button("Predictions (CSV)", predictions_csv(files, preds), file_name="predictions.csv",
                           mime="text/csv", icon=":material/download:", key="classify_csv")  # fmt: skip
    gallery(files, preds)
    return preds


def predictions_csv(files: list, preds: list[Result]) -> bytes:
    """The batch as the same table ``python -m core predict --csv`` writes."""
    rows = [{"image": f.name, "error": p} if isinstance(p, str) else p.to_json() | {"image": f.name}
            for f, p in zip(files, preds, strict=True)]  # fmt: skip
    return predict.predictions_table(rows).to_csv(index=False).encode()


def gallery(files: list, preds: list[Result]) -> None:
    """A grid of thumbnails with the top label and its probability; an unreadable file says why in its cell."""
    shown = list(zip(files, preds, strict=True))[:GALLERY_MAX]
    if len(files) > GALLERY_MAX:
        st.caption(f"Showing the first {GALLERY_MAX} of {len(files)} images; the CSV has them all.")
    for start in range(0, len(shown), GALLERY_COLUMNS):
        for cell, (file, pred) in zip(
            st.columns(GALLERY_COLUMNS), shown[start : start + GALLERY_COLUMNS], strict=False
        ):
            with cell.container(border=True):
                if isinstance(pred, str):  # the reason in words, in the cell of the file that caused it
                    st.markdown(":red[:material/broken_image: **Cannot use this file**]")
                    st.markdown(f":red[{_plain(pred)}]")
                else:
                    st.image(_thumb(pred.picture), width="stretch")
                    st.markdown(f"**{_plain(str(pred.top[0]['label']))}** · {float(pred.top[0]['p']):.0%}")
                st.caption(file.name)


def _plain(text: str) -> str:
    """``text`` with the characters Markdown would act on escaped."""
    return "".join(f"\\{c}" if c in "\\`*_[]<>#|~$" else c for c in text)


def _thumb(picture: Image.Image) -> Image.Image:
    """A THUMB_SIDE square: tiny images enlarged with square pixels, others shrunk, padded on white."""
    resample = Image.Resampling.NEAREST if max(picture.size) < THUMB_SIDE else Image.Resampling.LANCZOS
    return ImageOps.pad(picture, (THUMB_SIDE, THUMB_SIDE), resample, color=(255, 255, 255))


def pick_one(files: list, preds: list[Result]) -> object | None:
    """The batch file to look at closely (readable ones only)."""
    good = [f for f, p in zip(files, preds, strict=True) if not isinstance(p, str)]
    if not good:
        return None
    names = {f.file_id: f.name for f in good}
    chosen = st.selectbox("Look closer at one image", list(names), format_func=names.get, key="classify_closer")
    return next(f for f in good if f.file_id == chosen)
