"""The CAM methods the studio offers (the grad-cam package computes each map), and what explaining returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM

from core.common.errors import CoreError


class ExplainError(CoreError):
    """Bad input to :func:`explain`: an unknown method, a class index out of range, an unusable layer."""


@dataclass(frozen=True)
class CamMethod:
    """One CAM method the studio offers.

    Attributes:
        name: The key used by the UI and the command line, e.g. ``"gradcam"``.
        label: What the UI shows.
        help: One line for the UI.
        cam_class: The grad-cam class whose weighting code computes the map.
        slow: True for methods that run hundreds of forward passes (the library's normal path).
        uses_gradients: False for gradient-free methods (no backward at all).
        class_specific: False for a map that ignores the class asked for (Eigen-CAM's main pattern).
    """

    name: str
    label: str
    help: str
    cam_class: type[BaseCAM]
    slow: bool = False
    uses_gradients: bool = True
    class_specific: bool = True  # False: the same map whatever class is asked (Eigen-CAM)


METHODS: dict[str, CamMethod] = {
    m.name: m
    for m in (
        CamMethod("gradcam", "Grad-CAM", "Weights each feature channel by its mean gradient: the standard map, "
                  "class-specific and cheap.", GradCAM),
        CamMethod("hirescam", "HiResCAM", "Gradient times activation, cell by cell: shows exactly what the head "
                  "summed; a little noisier.", HiResCAM),
        CamMethod("gradcam++", "Grad-CAM++", "Weights positive gradients per cell: better when several objects of "
                  "the class are in the picture.", GradCAMPlusPlus),
        CamMethod("xgradcam", "XGrad-CAM", "Grad-CAM weights normalised by the activations: usually close to "
                  "Grad-CAM.", XGradCAM),
        CamMethod("layercam", "LayerCAM", "Positive gradients times activations, cell by cell: finer detail.",
                  LayerCAM),
        CamMethod("eigencam", "Eigen-CAM", "Main pattern of the feature map, no gradients: NOT class-specific "
                  "(the same map for every class).", EigenCAM, uses_gradients=False, class_specific=False),
    )
}  # fmt: skip

SLOW_METHODS: dict[str, CamMethod] = {
    m.name: m
    for m in (
        CamMethod("scorecam", "Score-CAM (slow)", "Masks the image with each feature channel and re-runs the "
                  "model: one forward pass per channel of the explained layer.", ScoreCAM, slow=True,
                  uses_gradients=False),
        CamMethod("ablationcam", "Ablation-CAM (slow)", "Switches off each feature channel in turn and measures "
                  "the score drop: one forward pass per channel.", AblationCAM, slow=True, uses_gradients=False),
    )
}  # fmt: skip

ALL_METHODS: dict[str, CamMethod] = {**METHODS, **SLOW_METHODS}
DEFAULT_METHOD = "gradcam"


@dataclass(frozen=True, eq=False)
class CamResult:
    """One image classified and explained.

    Attributes:
        heatmap: float32 (h, w) in [0, 1] at ``out_size``; all zeros when ``has_evidence`` is False.
        class_index: The class the map explains (the top class unless one was asked for).
        probabilities: float32 softmax of the logits of the same forward pass, one per class.
        top_class: The model's prediction (argmax of the logits); differs from ``class_index`` when another
            class was asked for.
        has_evidence: False when nothing in the map counts for the class (all zero after the ReLU, a uniform
            map, or NaN/inf activations): show ``note`` instead of an empty overlay.
        forward_ms: The forward pass (classification).
        cam_ms: Everything after it: backward through the head and the map.
        method: The method's key.
        note: Empty when there is evidence; otherwise why there is none, in one sentence.
        layer: The explained layer's name in the model (e.g. ``layer3.1``).
        map_size: (h, w) of that layer's feature map: the cells the heat map was made of before upscaling.
    """

    heatmap: np.ndarray
    class_index: int
    probabilities: np.ndarray
    has_evidence: bool
    forward_ms: float
    cam_ms: float
    top_class: int
    method: str = DEFAULT_METHOD
    note: str = ""
    layer: str = ""
    map_size: tuple[int, int] | None = None


def method_info(method: str) -> CamMethod:
    """The :class:`CamMethod` called ``method``; an :class:`ExplainError` naming the allowed ones otherwise."""
    if method not in ALL_METHODS:
        raise ExplainError(f"unknown CAM method {method!r}; choose one of: {', '.join(ALL_METHODS)}")
    return ALL_METHODS[method]
