"""One picture on the Classify page: the CAM controls, the original and its heat map side by side at the same
interpolation, the top-5 chart and what the times count."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from core.common.words import duration
from core.explain.methods import ALL_METHODS, DEFAULT_METHOD
from core.explain.overlay import COLORMAPS, DEFAULT_COLORMAP, overlay
from core.explain.predict import Prediction, Predictor
from core.explain.words import describe_layer
from ui.classify.models import ModelChoice
from ui.classify.results import Result, Upload, classified, enlarged, explained, is_stored
from ui.classify.words import not_sure_words
from ui.text import plain

TOP = ""  # the class picker's "top class" entry
TARGETS = "classify_targets"  # session key: {(model key, picture id): the class asked for}
TIME_HELP = ("Preparing the picture and one pass through the model (already warmed up), on this server: the same "
             "figure the command line's `predict` prints. Uploading and drawing the page are not counted, but the first "
             "picture after the page opens shares the server with that drawing and can read several times higher.")  # fmt: skip


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


def single(predictor: Predictor, model: ModelChoice, file: Upload) -> None:
    """One image: CAM controls, original and overlay side by side, the top-5 chart and the times."""
    pred = classified(predictor, model, file)
    if isinstance(pred, str):
        st.error(f"**{plain(file.name)}**: {plain(pred)}", icon=":material/broken_image:")
        return
    method, target, opacity, colormap = _cam_controls(predictor, model, pred, file)
    slow = ALL_METHODS[method].slow and not is_stored((file.file_id, model.key, method, target))
    if slow:
        _slow_warning(predictor, method)
    go_slow = slow and st.button(f"Run {ALL_METHODS[method].label}", key="classify_run_slow")
    cam = explained(predictor, model, file, method, target) if not slow or go_slow else None
    images, facts = st.columns([3, 2], gap="large")
    with facts:
        st.markdown(f"**{plain(file.name)}** · {pred.size[0]}×{pred.size[1]} px")
        if pred.not_sure:
            st.warning(not_sure_words(pred), icon=":material/help:")
        st.plotly_chart(top_chart(pred.top), key="classify_top5", config={"displayModeBar": False})
        a, b = st.columns(2)
        a.metric("Classification", f"{pred.ms:.1f} ms", help=TIME_HELP)
        b.metric("Heat map", f"{cam.cam_ms:.1f} ms" if isinstance(cam, Prediction) else "not made yet",
                 help="Making the heat map, after the classification's forward pass")  # fmt: skip
    with images:
        _images(pred.picture, cam, opacity, colormap)


def _slow_warning(predictor: Predictor, method: str) -> None:
    with st.spinner("Measuring how long it will take on this model..."):
        cost = predictor.slow_cam_cost()
    when = "a few seconds" if cost.seconds < 5 else f"about {duration(cost.seconds)}"
    st.warning(f"{ALL_METHODS[method].label.removesuffix(' (slow)')} runs the model once per channel of the "
               f"explained layer: {cost.channels:,} passes at {cost.ms_per_pass:.1f} ms each here, so "
               f"{when} for this picture.", icon=":material/hourglass_top:")  # fmt: skip


def _cam_controls(predictor: Predictor, model: ModelChoice, pred: Prediction,
                  file: Upload) -> tuple[str, str, float, str]:  # fmt: skip
    a, b, c, d = st.columns([3, 3, 2, 2])
    methods = list(ALL_METHODS)
    method = a.selectbox("Heat map method", methods, index=methods.index(DEFAULT_METHOD), key="classify_method",
                         format_func=lambda m: ALL_METHODS[m].label,
                         help="\n".join(f"- **{m.label}**: {m.help}" for m in ALL_METHODS.values()))  # fmt: skip
    top = str(pred.top[0]["label"])
    # One choice per picture: the class asked for on one photo does not carry over to the next one, and is
    # still there when the user comes back to it (Streamlit forgets a widget's state once it is not drawn).
    asked = st.session_state.setdefault(TARGETS, {})
    options = [TOP, *predictor.classes]
    remembered = asked.get((model.key, file.file_id), TOP)
    target = b.selectbox("Explain class", options, index=options.index(remembered) if remembered in options else 0,
                         key=f"classify_class_{model.key}_{file.file_id}",
                         format_func=lambda k: f"top class ({top})" if k == TOP else k,
                         disabled=not ALL_METHODS[method].class_specific,
                         help="Where the evidence for this class lies; any class of the model can be asked for. "
                         "Eigen-CAM shows the picture's main pattern whatever the class.")  # fmt: skip
    asked[(model.key, file.file_id)] = target
    opacity = c.slider(
        "Opacity", 0.0, 1.0, 0.5, 0.05, key="classify_opacity", help="0: the photo only, 1: colours only"
    )
    colormap = d.selectbox("Colour map", list(COLORMAPS), index=list(COLORMAPS).index(DEFAULT_COLORMAP),
                           key="classify_colormap", help="\n".join(f"- **{k}**: {v}" for k, v in COLORMAPS.items()))  # fmt: skip
    return method, target, opacity, colormap


def _images(picture: Image.Image, cam: Result | None, opacity: float, colormap: str) -> None:
    left, right = st.columns(2)
    # An enlarged tiny picture goes as PNG: JPEG would blur the square pixels it was enlarged to keep.
    fmt = "PNG" if enlarged(picture).size != picture.size else "auto"
    left.image(enlarged(picture), caption="Original", width="stretch", output_format=fmt)
    if cam is None:
        right.caption("Press the button above to make this heat map.")
    elif isinstance(cam, str):
        right.error(plain(cam), icon=":material/error:")
    elif cam.cam_note:
        right.info(
            f"**No heat map for “{plain(cam.cam_class)}”.** {plain(cam.cam_note)}", icon=":material/visibility_off:"
        )
    else:
        # Blended at the picture's own size, then enlarged like the original: the same pixels side by side.
        blended = enlarged(overlay(picture, cam.heatmap, opacity, colormap))
        info = ALL_METHODS[cam.cam_method]
        about = f"for “{plain(cam.cam_class)}”" if info.class_specific else "(the main pattern, the same for any class)"
        right.image(blended, caption=f"{info.label} {about}", width="stretch", output_format=fmt)
        if cam.cam_layer:  # which layer, and how coarse its map (a ResNet at 112 px: layer3 7x7, not 4x4)
            right.caption(describe_layer(cam.cam_layer, cam.cam_map, cam.input_size))
