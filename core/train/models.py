"""Building, freezing and describing networks of the registry (``core.train.archs``).

Every network is named by a key of ``ARCHS`` ("resnet18", ..., "lenet"). :func:`build_model` makes one
for ``num_classes`` classes, optionally starting from weights (``core.train.weights``: none, imagenet or a
local file), and freezes part of it:

Freezing (``freeze``): ``"none"``, ``"backbone"`` (only the head trains) or ``"all-but-last"`` (the last
stage and the head train). Frozen parameters get ``requires_grad=False`` and the BatchNorm layers whose
parameters are all frozen become ``EvalModeBatchNorm2d``, which stays in eval mode through
``model.train()``: a frozen backbone keeps its running statistics instead of drifting with each batch.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch import nn

from core.common.errors import check_choice
from core.train.archs import (
    FREEZE_MODES,
    EvalModeBatchNorm2d,
    ModelError,
    arch_info,
    bare_model,
    estimate_gflops,
    resolve_module,
    unwrap,
)
from core.train.weights import imagenet_weights_file, load_compatible, weights_state_dict


def build_model(
    arch: str, num_classes: int, *, weights: str | os.PathLike[str] = "none", freeze: str = "none", in_channels: int = 3
) -> nn.Module:
    """A network for ``num_classes`` classes, initialised from ``weights`` and frozen per ``freeze``.

    Args:
        arch: A key of :data:`ARCHS`.
        num_classes: Outputs of the classification head (>= 2).
        weights: ``"none"``, ``"imagenet"`` or a path to a local state-dict file.
        freeze: One of :data:`FREEZE_MODES`.
        in_channels: Input channels; with pretrained 3-channel weights the first filters are averaged.

    Raises:
        ModelError: an unknown value, or a weights file that is not a state dict for ``arch``.
        WeightsUnavailable: ImageNet weights neither cached nor downloadable.
    """
    info = arch_info(arch)
    check_choice("freeze", freeze, FREEZE_MODES)
    if num_classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, got {num_classes}")
    if in_channels < 1:
        raise ModelError(f"in_channels must be at least 1, got {in_channels}")
    state = weights_state_dict(info, weights)
    model = bare_model(arch, num_classes, in_channels)
    if state is not None:
        load_compatible(model, info, state, source=str(weights))
    apply_freeze(model, arch, freeze)
    return model


def describe(arch: str) -> str:
    """One line for the UI: label, size, cost at the default input side, weights file and help."""
    info = arch_info(arch)
    params = _parameter_count(arch)
    weights = f"ImageNet weights: {imagenet_weights_file(arch).file_name}" if info.weights else "no pretrained weights"
    cost = estimate_gflops(arch, info.image_size)
    return (
        f"{info.label}: {params / 1e6:.1f} M parameters, {cost:.3g} GFLOPs per {info.image_size} px image, "
        f"{weights}. {info.help}"
    )


@functools.cache
def _parameter_count(arch: str) -> int:
    # On the meta device: no memory is allocated and no initialiser runs, so even ResNet-152 is instant.
    with torch.device("meta"):
        return count_parameters(bare_model(arch, 1000 if arch != "lenet" else 10, 3))[0]


# --- freezing and parameter groups -------------------------------------------------------------------------


def apply_freeze(model: nn.Module, arch: str, freeze: str) -> nn.Module:
    """Freeze ``model`` (built by :func:`build_model` for ``arch``) per ``freeze``; returns it for chaining."""
    check_choice("freeze", freeze, FREEZE_MODES)
    net = unwrap(model)
    info = arch_info(arch)
    trainable = {"none": (), "backbone": (info.head,), "all-but-last": (*info.last_stage, info.head)}[freeze]
    for p in net.parameters():
        p.requires_grad_(freeze == "none")
    for path in trainable:
        for p in resolve_module(net, path).parameters():
            p.requires_grad_(True)
    for module in net.modules():
        if type(module) in (nn.BatchNorm2d, EvalModeBatchNorm2d):  # other BatchNorm kinds: set_train_mode
            frozen = not any(p.requires_grad for p in module.parameters(recurse=False))
            module.__class__ = EvalModeBatchNorm2d if frozen else nn.BatchNorm2d
            module.train(net.training and not frozen)
    return model


def set_train_mode(model: nn.Module, freeze: str | None = None) -> nn.Module:
    """Put ``model`` in training mode with the BatchNorm layers of frozen parts left in eval mode.

    Frozen BatchNorm layers are recognised by their parameters (all ``requires_grad=False``), so this is right
    for any freeze mode; ``freeze`` is only checked. After :func:`apply_freeze` a plain ``model.train()``
    already does the same; this function also covers models frozen by hand.
    """
    if freeze is not None:
        check_choice("freeze", freeze, FREEZE_MODES)
    model.train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()
    return model


def head_parameters(model: nn.Module, arch: str) -> list[nn.Parameter]:
    """The classification head's parameters (trainable or not)."""
    return list(resolve_module(unwrap(model), arch_info(arch).head).parameters())


def param_groups(model: nn.Module, arch: str, lr: float, backbone_lr_factor: float = 1.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups: ``{"name": "backbone", lr * factor}`` and ``{"name": "head", lr}``.

    Only trainable parameters are listed and an empty group is left out (a frozen backbone gives one group).
    Fine-tuning a pretrained backbone usually wants a smaller learning rate than the new head.
    """
    if lr <= 0 or backbone_lr_factor < 0:
        raise ModelError(f"lr must be > 0 and backbone_lr_factor >= 0, got {lr} and {backbone_lr_factor}")
    head_ids = {id(p) for p in head_parameters(model, arch)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"name": "backbone", "params": [p for p in trainable if id(p) not in head_ids], "lr": lr * backbone_lr_factor},
        {"name": "head", "params": [p for p in trainable if id(p) in head_ids], "lr": lr},
    ]
    return [g for g in groups if g["params"]]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- explanation -------------------------------------------------------------------------------------------


def cam_layer(model: nn.Module, arch: str, image_size: int | None = None) -> nn.Module:
    """The Grad-CAM target layer of ``model`` for ``image_size`` px inputs (:func:`core.train.archs.cam_layer_for`):
    the deepest feature map with enough cells to localise; without a size, the last 4-D feature map."""
    from core.train.archs import cam_layer_for

    return resolve_module(unwrap(model), cam_layer_for(arch, image_size)[0])
