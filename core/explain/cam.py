"""Grad-CAM: where in the picture the evidence for a class lies, classified and explained in one forward pass.

:func:`explain` classifies one image and returns a heat map for the chosen class (default: the top one).

Fast path (every method in :data:`METHODS`). The library's default path records a graph for the whole network
and back-propagates into every parameter: about 3x a plain forward on a CPU (research/gradcam-and-weights.md
section 6), and it fails on a frozen backbone. Here one forward hook on the target layer *cuts* the network
there: everything below the cut runs under ``torch.no_grad()``; the layer's output A becomes a fresh autograd
leaf and autograd is switched on for the rest of that same forward (the head: pooling + classifier for a
ResNet or MobileNet, ``pool`` + ``classifier`` for LeNet). ``torch.autograd.grad`` then gives dScore/dA through
the head only. The model's own ``forward`` runs unchanged, so no per-architecture "tail" has to be rebuilt,
and parameters' ``requires_grad`` flags do not matter (a fully frozen copy works). The map itself comes from
the grad-cam package's code for each method (``get_cam_image``/``get_cam_weights``, ``scale_cam_image``,
``aggregate_multi_layers``) applied to A and dA, so it equals the library's default result.

Slow methods (:data:`SLOW_METHODS`: Score-CAM, Ablation-CAM) need hundreds of full forwards; they run the
library's normal path inside its context manager.

Thread safety and side effects. Pass an inference copy (:func:`inference_copy`), never a model another thread
is training: for the call the model is switched to eval mode (BatchNorm must use its running statistics).
Calls on one model object are serialised by a per-model lock; hooks are always removed; every module's
train/eval flag and every parameter's ``requires_grad`` are restored exactly as found; ``.grad`` is never
touched (the library's default path would zero it).
"""

from __future__ import annotations

import copy
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import torch
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
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.find_layers import replace_layer_recursive
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from core.common.errors import CoreError

__all__ = [
    "ALL_METHODS",
    "DEFAULT_METHOD",
    "METHODS",
    "SLOW_METHODS",
    "CamMethod",
    "CamResult",
    "ExplainError",
    "explain",
    "find_target_layer",
    "inference_copy",
    "method_info",
]


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
    """

    name: str
    label: str
    help: str
    cam_class: type[BaseCAM]
    slow: bool = False
    uses_gradients: bool = True


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
                  "(the same map for every class).", EigenCAM, uses_gradients=False),
    )
}  # fmt: skip

SLOW_METHODS: dict[str, CamMethod] = {
    m.name: m
    for m in (
        CamMethod("scorecam", "Score-CAM (slow)", "Masks the image with each feature channel and re-runs the "
                  "model: hundreds of forward passes, a minute or more on a CPU.", ScoreCAM, slow=True,
                  uses_gradients=False),
        CamMethod("ablationcam", "Ablation-CAM (slow)", "Switches off each feature channel in turn and measures "
                  "the score drop: hundreds of forward passes.", AblationCAM, slow=True, uses_gradients=False),
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


def method_info(method: str) -> CamMethod:
    """The :class:`CamMethod` called ``method``; an :class:`ExplainError` naming the allowed ones otherwise."""
    if method not in ALL_METHODS:
        raise ExplainError(f"unknown CAM method {method!r}; choose one of: {', '.join(ALL_METHODS)}")
    return ALL_METHODS[method]


# --- the model: target layer, private copy, lock, state --------------------------------------------------


def find_target_layer(model: nn.Module, arch: str | None = None) -> nn.Module:
    """The layer whose output is explained: the last one that still yields a 4-D feature map.

    With ``arch`` the registry (:func:`core.train.models.cam_layer`) decides; otherwise the model's structure:
    ``layer4[-1]`` for a ResNet, ``features[-1]`` for MobileNets and LeNet-style models.
    """
    if arch is not None:
        from core.train.models import cam_layer  # only needed when an arch name is given

        return cam_layer(model, arch)
    layer4 = getattr(model, "layer4", None)
    if isinstance(layer4, nn.Sequential) and len(layer4):
        return layer4[-1]
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and len(features):
        return features[-1]
    raise ExplainError(
        f"cannot tell the Grad-CAM layer of a {type(model).__name__}: pass target_layer= (the last module whose "
        "output is a 4-D feature map) or arch="
    )


def inference_copy(model: nn.Module) -> nn.Module:
    """A private copy to explain with: unwrapped from DDP, deep-copied, eval mode, every parameter frozen.

    Take it between optimizer steps of a running training (a copy taken mid-step may mix old and new weights).
    Freezing costs nothing here: :func:`explain` needs gradients only at the target layer's output.
    """
    while isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    twin = copy.deepcopy(model)
    twin.eval()
    for p in twin.parameters():
        p.requires_grad_(False)
        p.grad = None  # deepcopy copied them; a copy for inference never needs them
    return twin


_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _lock_for(model: nn.Module) -> threading.Lock:
    """One lock per model object (dropped with the model): the library keeps state on the model's hooks."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.Lock()
        return lock


@contextmanager
def _state_kept(model: nn.Module) -> Iterator[None]:
    """Restore every module's train/eval flag and every parameter's ``requires_grad`` as found.

    Flags are set directly rather than through ``train()``: some modules override ``train`` (a frozen
    BatchNorm that stays in eval mode), and a model may be in a mixed state on purpose.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)


# --- explain ------------------------------------------------------------------------------------------------


def explain(
    model: nn.Module,
    input_tensor: torch.Tensor,
    *,
    method: str = DEFAULT_METHOD,
    target_class: int | None = None,
    target_layer: nn.Module | None = None,
    arch: str | None = None,
    out_size: tuple[int, int] | None = None,
) -> CamResult:
    """Classify one image and explain the chosen class with a CAM heat map.

    Args:
        model: An inference copy (:func:`inference_copy`); never a model another thread trains.
        input_tensor: The preprocessed image, shape (1, C, H, W).
        method: A key of :data:`METHODS` or :data:`SLOW_METHODS`.
        target_class: The class to explain; None explains the top class.
        target_layer: The layer to explain; None asks :func:`find_target_layer` (with ``arch`` if given).
        arch: Registry name of the architecture, used only to find the target layer.
        out_size: (height, width) of the returned map: the original image's own size when the tensor is a
            plain resize of the whole image (no crop). None: the tensor's H x W.

    Raises:
        ExplainError: an unknown method, a bad tensor or size, a class out of range, an unusable layer.
    """
    info = method_info(method)
    x = _checked_input(model, input_tensor)
    height, width = _checked_out_size(out_size, x)
    layer = target_layer if target_layer is not None else find_target_layer(model, arch)
    # inference_mode(False): inside a caller's inference_mode block autograd could not record the head.
    with _lock_for(model), _state_kept(model), torch.inference_mode(False):
        model.eval()
        run = _explain_slow if info.slow else _explain_fast
        return run(model, x, layer, info, target_class, (height, width))


def _checked_input(model: nn.Module, input_tensor: torch.Tensor) -> torch.Tensor:
    if not isinstance(input_tensor, torch.Tensor) or input_tensor.dim() != 4 or input_tensor.shape[0] != 1:
        shape = tuple(input_tensor.shape) if isinstance(input_tensor, torch.Tensor) else type(input_tensor).__name__
        raise ExplainError(f"explain takes one image as a (1, C, H, W) tensor, got {shape}")
    if not input_tensor.is_floating_point():
        raise ExplainError(f"the input tensor must hold floats (a normalised image), got {input_tensor.dtype}")
    param = next(model.parameters(), None)
    return input_tensor.to(param.device) if param is not None else input_tensor


def _checked_out_size(out_size: tuple[int, int] | None, x: torch.Tensor) -> tuple[int, int]:
    if out_size is None:
        return int(x.shape[-2]), int(x.shape[-1])
    if not isinstance(out_size, tuple | list) or len(out_size) != 2 or not all(map(_is_side, out_size)):
        raise ExplainError(f"out_size must be (height, width) in whole pixels > 0, got {out_size!r}")
    return int(out_size[0]), int(out_size[1])


def _is_side(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0


def _choose_class(logits: torch.Tensor, target_class: int | None) -> int:
    if logits.dim() != 2 or logits.shape[0] != 1:
        raise ExplainError(f"the model must return (1, classes) logits, got shape {tuple(logits.shape)}")
    if target_class is None:
        return int(logits[0].argmax())
    n_classes = int(logits.shape[1])
    if isinstance(target_class, bool) or not isinstance(target_class, int | np.integer):
        raise ExplainError(f"target_class must be a class index, got {target_class!r}")
    if not 0 <= target_class < n_classes:
        raise ExplainError(f"target_class {target_class} is out of range: the model has {n_classes} classes")
    return int(target_class)


def _probabilities(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.detach().float(), dim=1)[0].cpu().numpy()


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


# --- fast path: cut at the target layer ----------------------------------------------------------------------


class _Cut:
    """Forward hook on the target layer: keeps its output and, for gradient methods, makes it the graph's start.

    Only the thread that registered it acts (another thread's plain forward on the model passes through).
    """

    def __init__(self, with_grad: bool) -> None:
        self.with_grad = with_grad
        self.thread = threading.get_ident()
        self.activation: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, module: nn.Module, inputs: object, output: object) -> torch.Tensor | None:
        if threading.get_ident() != self.thread:
            return None
        self.calls += 1
        if self.calls > 1:
            return None  # reported after the forward: a layer used twice has no single map
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ExplainError(f"the target layer must output a (1, C, h, w) feature map, got {shape}")
        leaf = output.detach().clone()  # a copy: later in-place ops must not change the map's input
        self.activation = leaf
        if not self.with_grad:
            return None
        leaf.requires_grad_(True)
        # Record only what follows (the head). Grad mode is thread-local, and the caller's no_grad block
        # restores it on exit, even if the forward raises.
        torch.set_grad_enabled(True)
        return leaf.clone()  # the head gets a non-leaf: an in-place op there would be refused on a leaf


@contextmanager
def _cut_at(layer: nn.Module, with_grad: bool) -> Iterator[_Cut]:
    cut = _Cut(with_grad)
    handle = layer.register_forward_hook(cut)
    try:
        yield cut
    finally:
        handle.remove()


def _explain_fast(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    info: CamMethod,
    target_class: int | None,
    size: tuple[int, int],
) -> CamResult:
    started = time.perf_counter()
    with _cut_at(layer, info.uses_gradients) as cut, torch.no_grad():
        logits = model(x)
    forward_ms = _ms(started)
    started = time.perf_counter()
    activation = _single_activation(cut)
    class_index = _choose_class(logits, target_class)
    grads = _head_gradient(logits, class_index, activation) if info.uses_gradients else None
    positive, heatmap = _library_cam(info, x, layer, class_index, activation, grads, size)
    return _result(info, logits, class_index, positive, heatmap, forward_ms, started)


def _result(info: CamMethod, logits: torch.Tensor, class_index: int, positive: np.ndarray, heatmap: np.ndarray,
            forward_ms: float, cam_started: float) -> CamResult:  # fmt: skip
    """The result both paths return; a map without positive evidence becomes zeros plus a note saying why."""
    has_evidence, note = _evidence(positive, heatmap)
    return CamResult(
        heatmap=heatmap if has_evidence else np.zeros(heatmap.shape, np.float32), class_index=class_index,
        probabilities=_probabilities(logits), has_evidence=has_evidence, forward_ms=forward_ms,
        cam_ms=_ms(cam_started), top_class=int(logits[0].argmax()), method=info.name, note=note,
    )  # fmt: skip


def _single_activation(cut: _Cut) -> torch.Tensor:
    if cut.calls != 1 or cut.activation is None:
        how = "never ran" if cut.calls == 0 else f"ran {cut.calls} times"
        raise ExplainError(f"the target layer {how} in the model's forward; pick a layer that runs exactly once")
    return cut.activation


def _head_gradient(logits: torch.Tensor, class_index: int, activation: torch.Tensor) -> torch.Tensor:
    """dScore/dA through the head only; parameters' ``.grad`` stay untouched (``autograd.grad``, not backward)."""
    unused = ExplainError("the model's output does not depend on the target layer's output")
    if not logits.requires_grad:
        raise unused
    (grads,) = torch.autograd.grad(logits[0, class_index], activation, allow_unused=True)
    if grads is None:  # the output needs grad through other (trainable) parameters, not through A
        raise unused
    return grads


def _library_cam(
    info: CamMethod,
    x: torch.Tensor,
    layer: nn.Module,
    class_index: int,
    activation: torch.Tensor,
    grads: torch.Tensor | None,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """(ReLU'd raw map, final map at ``size``) by the grad-cam package's own code, as ``compute_cam_per_layer``
    and ``aggregate_multi_layers`` do it, except that the one upscale goes straight to ``size``."""
    # A CAM object on a throwaway one-parameter host with no target layers registers no hook on our model;
    # it only lends its per-method weighting code.
    cam = info.cam_class(nn.Linear(1, 1), [])
    acts = activation.detach().cpu().numpy()
    grad_array = grads.detach().cpu().numpy() if grads is not None else None
    targets = [ClassifierOutputTarget(class_index)]
    raw = cam.get_cam_image(x, layer, targets, acts, grad_array, eigen_smooth=False)
    positive = np.maximum(raw, 0)
    height, width = size
    per_layer = [scale_cam_image(positive, (width, height))[:, None, :]]
    return positive, cam.aggregate_multi_layers(per_layer)[0]


def _evidence(positive: np.ndarray, heatmap: np.ndarray) -> tuple[bool, str]:
    """Whether the map shows anything, and if not, why (an all-blue overlay reads as "nothing important").
    The note says "this class": callers show it next to the class's own name (the core knows only indices)."""
    if not (np.isfinite(positive).all() and np.isfinite(heatmap).all()):
        return False, "The feature map holds NaN or infinite values (did training diverge?): no explanation."
    if float(positive.max()) <= 0.0:
        return False, "No positive evidence for this class: every region of the image counts against it."
    if float(heatmap.max()) <= 0.0:
        return False, "The map for this class is uniform: no region stands out."
    return True, ""


# --- slow path: the library's own ------------------------------------------------------------------------------


def _explain_slow(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    info: CamMethod,
    target_class: int | None,
    size: tuple[int, int],
) -> CamResult:
    """Score-/Ablation-CAM by the library's normal path. The plain forward first classifies and validates the
    class: the library's context manager would swallow the IndexError of a bad class and return nothing."""
    started = time.perf_counter()
    with torch.no_grad():
        logits = model(x)
    forward_ms = _ms(started)
    class_index = _choose_class(logits, target_class)
    started = time.perf_counter()
    maps = _library_maps(model, x, layer, info, class_index)
    return _result(info, logits, class_index, maps[0], _resized(maps[0], size), forward_ms, started)


def _library_maps(model: nn.Module, x: torch.Tensor, layer: nn.Module, info: CamMethod, class_index: int) -> np.ndarray:
    # A fresh AblationLayer per call: the library's default argument is one instance shared by every caller.
    extra = {"ablation_layer": AblationLayer()} if info.cam_class is AblationCAM else {}
    maps = None
    try:
        # no_grad: these methods never back-propagate, so recording a graph would only cost memory.
        with torch.no_grad(), info.cam_class(model, [layer], **extra) as cam:
            maps = cam(x, targets=[ClassifierOutputTarget(class_index)])
    finally:
        ablation = extra.get("ablation_layer")
        if ablation is not None and any(m is ablation for m in model.modules()):
            replace_layer_recursive(model, ablation, layer)  # an error mid-way left the layer swapped out
    if maps is None:  # the library's __exit__ swallows an IndexError and prints it
        raise ExplainError(f"{info.label} failed on this model (see the message printed above)")
    return maps


def _resized(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if heatmap.shape == (height, width):
        return heatmap.astype(np.float32, copy=False)
    return cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
