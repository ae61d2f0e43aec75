"""The two ways a map is computed (see ``core.explain.cam``): the fast path, which cuts the network at the
target layer and back-propagates through the head only, and the library's own path for the slow methods."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
import torch
from pytorch_grad_cam import AblationCAM
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.utils.find_layers import replace_layer_recursive
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from core.explain.methods import CamMethod, CamResult, ExplainError


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


def explain_fast(
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


def explain_slow(
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
