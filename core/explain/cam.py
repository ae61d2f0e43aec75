"""Grad-CAM: where in the picture the evidence for a class lies, classified and explained in one forward pass.

:func:`explain` classifies one image and returns a heat map for the chosen class (default: the top one).

Fast path (every method in :data:`METHODS`). The library's default path records a graph for the whole network
and back-propagates into every parameter: about 3x a plain forward on a CPU (ResNet-18, 224 px, 2 cores: 194 ms
against 59), and it fails on a frozen backbone. Here one forward hook on the target layer *cuts* the network
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
import dataclasses
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from core.explain.cam_paths import explain_fast, explain_slow
from core.explain.methods import DEFAULT_METHOD, CamResult, ExplainError, method_info

# --- the model: target layer, private copy, lock, state --------------------------------------------------


def find_target_layer(model: nn.Module, arch: str | None = None, image_size: int | None = None) -> nn.Module:
    """The layer whose output is explained.

    With ``arch`` the registry decides (:func:`core.train.archs.cam_layer_for`): the deepest feature map with at
    least about 7x7 cells at ``image_size`` px (a ResNet's ``layer3`` below 224 px, ``layer4`` at 224).
    Otherwise the model's structure: the last 4-D feature map, ``layer4[-1]`` for a ResNet (``layer3[-1]`` when
    ``image_size`` makes layer4's map smaller than that), ``features[-1]`` for MobileNets and LeNet-style models.
    """
    if arch is not None:
        from core.train.models import cam_layer  # only needed when an arch name is given

        return cam_layer(model, arch, image_size)
    layer4 = getattr(model, "layer4", None)
    if isinstance(layer4, nn.Sequential) and len(layer4):  # a torchvision ResNet: the registry's ResNet rule decides
        from core.train.archs import cam_layer_for, resolve_module

        path, _ = cam_layer_for("resnet18", image_size)  # every ResNet shares its candidates (layer4, then layer3)
        try:
            return resolve_module(model, path)
        except (AttributeError, IndexError):  # a ResNet-like model without that layer
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
    side = min(int(x.shape[-2]), int(x.shape[-1]))
    layer = target_layer if target_layer is not None else find_target_layer(model, arch, side)
    # inference_mode(False): inside a caller's inference_mode block autograd could not record the head.
    with _lock_for(model), _state_kept(model), torch.inference_mode(False), _map_shape(layer) as shape:
        model.eval()
        run = explain_slow if info.slow else explain_fast
        result = run(model, x, layer, info, target_class, (height, width))
    return dataclasses.replace(result, layer=_layer_name(model, layer), map_size=shape.get("hw"))


@contextmanager
def _map_shape(layer: nn.Module) -> Iterator[dict[str, tuple[int, int]]]:
    """Records the (h, w) of ``layer``'s first output in this thread: the cells the heat map is made of."""
    seen: dict[str, tuple[int, int]] = {}
    thread = threading.get_ident()

    def remember(_module: nn.Module, _inputs: object, output: object) -> None:
        if threading.get_ident() == thread and isinstance(output, torch.Tensor) and output.dim() == 4:
            seen.setdefault("hw", (int(output.shape[-2]), int(output.shape[-1])))

    handle = layer.register_forward_hook(remember)
    try:
        yield seen
    finally:
        handle.remove()


def _layer_name(model: nn.Module, layer: nn.Module) -> str:
    return next((name for name, module in model.named_modules() if module is layer), type(layer).__name__)


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
