"""The architecture registry: which networks the studio trains (torchvision's ResNets and MobileNets and our
LeNet), what each is made of (head, last stage, first convolution, Grad-CAM layer, downsampling), and the
input size each gets.

``core.train.models`` builds and freezes them; ``core.train.weights`` loads their starting weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.common.errors import CoreError, check_choice

FREEZE_MODES: tuple[str, ...] = ("none", "backbone", "all-but-last")
WEIGHTS_CHOICES = ("none", "imagenet")  # or a path to a local state-dict file
IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)

# The map a heat map is drawn from should have about 7x7 cells (a ResNet's last stage at its ImageNet size):
# measured on a ResNet-18 trained on 96 px shapes, the last stage's 3x3 map put the Grad-CAM peak inside the
# object for 47% of the test images and the previous stage's 6x6 map for 86%. Below this side the explained
# layer moves to the finer map of an earlier stage (ArchInfo.cam_fallbacks).
CAM_MIN_MAP_SIDE = 7
# Input sizes. Torchvision networks get at least 112 px: 7 cells of the stride-16 stage (layer3), the smallest
# input at which some layer has a 7x7 map. Measured on the same 96 px shapes (bench.bench_cam_localisation,
# 240 test images): upscaled to 112 px the Grad-CAM peak fell inside the object for 96.7% of them (layer3 7x7)
# against 86.2% at 96 px (6x6), test accuracy 100% against 98.8%, for 1.24-1.42x the training time. Above 224 (the
# ImageNet training size) the cost grows with the square of the side on a CPU that does ~50-80 GFLOP/s
# (measured on the 2-core machine) for little gain on the small datasets the studio sees.
_MIN_TORCHVISION_SIDE = CAM_MIN_MAP_SIDE * 16
_MAX_TORCHVISION_SIDE = 224


class ModelError(CoreError):
    """An unknown architecture or option, or a weights file that does not fit the network."""


@dataclass(frozen=True)
class ArchInfo:
    """One entry of the registry: how to build, freeze and explain a network, and how to show it.

    Attributes:
        name: The registry key, e.g. ``"resnet18"``.
        label: What the UI shows, e.g. ``"ResNet-18"``.
        builder: torchvision builder name (``torchvision.models.get_model``); None for our own networks.
        weights: torchvision weights enum value for ``weights="imagenet"``, e.g. ``"ResNet18_Weights.IMAGENET1K_V1"``.
        image_size: Default input side in pixels.
        cam_layer: Dotted path of the Grad-CAM target layer (negative numbers index from the end).
        gflops: Forward FLOPs (2 per multiply-add, as ``torch.utils.flop_counter`` counts) for one 224 px image.
        help: One line for the UI.
        head: Dotted path of the classification layer that is replaced for ``num_classes``.
        last_stage: Dotted paths that train with ``freeze="all-but-last"`` (besides the head).
        first_conv: Dotted path of the first convolution (replaced when ``in_channels != 3``).
        stride: Total downsampling from the input to the ``cam_layer`` map.
        cam_fallbacks: Earlier layers (dotted path, total stride), deepest first, explained instead of
            ``cam_layer`` when its map would be smaller than ``CAM_MIN_MAP_SIDE`` (see :func:`cam_layer_for`).
        max_side: Largest side :func:`choose_image_size` picks.
        min_side: Smallest side :func:`choose_image_size` picks: enough for a ``CAM_MIN_MAP_SIDE`` map at the
            finest candidate layer.
    """

    name: str
    label: str
    builder: str | None
    weights: str | None
    image_size: int
    cam_layer: str
    gflops: float
    help: str
    head: str
    last_stage: tuple[str, ...]
    first_conv: str
    stride: int = 32
    cam_fallbacks: tuple[tuple[str, int], ...] = ()
    max_side: int = _MAX_TORCHVISION_SIDE
    min_side: int = _MIN_TORCHVISION_SIDE


def _resnet(depth: int, weights: str, gflops: float, help_text: str) -> ArchInfo:
    return ArchInfo(
        name=f"resnet{depth}", label=f"ResNet-{depth}", builder=f"resnet{depth}",
        weights=f"ResNet{depth}_Weights.{weights}", image_size=224, cam_layer="layer4.-1", gflops=gflops,
        help=help_text, head="fc", last_stage=("layer4",), first_conv="conv1", cam_fallbacks=(("layer3.-1", 16),),
    )  # fmt: skip


ARCHS: dict[str, ArchInfo] = {
    "resnet18": _resnet(18, "IMAGENET1K_V1", 3.63, "Small ResNet: the usual first choice for fine-tuning on a CPU."),
    "resnet34": _resnet(34, "IMAGENET1K_V1", 7.33, "Twice ResNet-18's depth and cost; a little more accurate."),
    "resnet50": _resnet(50, "IMAGENET1K_V2", 8.18, "Bottleneck ResNet, 80.9% ImageNet top-1; slow to train on a CPU."),
    "resnet101": _resnet(101, "IMAGENET1K_V2", 15.6, "Deep ResNet; mostly for comparisons, costly on a CPU."),
    "resnet152": _resnet(152, "IMAGENET1K_V2", 23.0, "Deepest ResNet; for comparisons only on a CPU."),
    "mobilenet_v2": ArchInfo(
        name="mobilenet_v2", label="MobileNetV2", builder="mobilenet_v2", weights="MobileNet_V2_Weights.IMAGENET1K_V2",
        image_size=224, cam_layer="features.-1", gflops=0.60,
        help="Light network made for phones: about 6x cheaper than ResNet-18, close in accuracy.",
        head="classifier.1", last_stage=tuple(f"features.{i}" for i in range(14, 19)), first_conv="features.0.0",
        cam_fallbacks=(("features.13", 16),),
    ),
    "mobilenet_v3_small": ArchInfo(
        name="mobilenet_v3_small", label="MobileNetV3-Small", builder="mobilenet_v3_small",
        weights="MobileNet_V3_Small_Weights.IMAGENET1K_V1", image_size=224, cam_layer="features.-1", gflops=0.113,
        help="The cheapest pretrained network here (0.1 GFLOPs): fast previews, lower accuracy.",
        head="classifier.3", last_stage=tuple(f"features.{i}" for i in range(9, 13)), first_conv="features.0.0",
        cam_fallbacks=(("features.8", 16),),
    ),
    "lenet": ArchInfo(
        name="lenet", label="LeNet (small CNN)", builder=None, weights=None, image_size=16, cam_layer="features.-1",
        gflops=1.01, help="Three conv blocks (32/64/128 channels), trained from scratch: for tiny images like digits.",
        head="classifier", last_stage=("features.-1",), first_conv="features.0.0", stride=4, max_side=32, min_side=16,
    ),
}  # fmt: skip


class LeNet(nn.Module):
    """A LeNet-style CNN for tiny images: conv-BN-ReLU blocks with 2x2 max-pooling between them.

    ``features[-1]`` is the last conv block, whose output (after its ReLU) is the Grad-CAM target; then a
    global average ``pool`` and the ``classifier``. Global pooling instead of a flattening layer lets one
    network take any input side, so :func:`choose_image_size` is free to pick it.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for i, width in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            # ReLU not in-place: Grad-CAM hooks the block's output, and it must not be overwritten later.
            block = nn.Sequential(
                nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
            )
            layers.append(block)
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(previous, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class EvalModeBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that stays in eval mode: it normalises with, and never updates, its running statistics.

    :func:`apply_freeze` turns the BatchNorm layers of frozen parts into this class (same parameters, same
    state-dict keys), so that a plain ``model.train()`` anywhere (a training loop, DDP) cannot let a frozen
    backbone's statistics drift with the new data.
    """

    def train(self, mode: bool = True) -> EvalModeBatchNorm2d:
        return super().train(False)


# --- the registry --------------------------------------------------------------------------------------


def arch_info(arch: str) -> ArchInfo:
    """The registry entry for ``arch``; a ``ChoiceError`` naming the allowed values otherwise."""
    check_choice("arch", arch, tuple(ARCHS))
    return ARCHS[arch]


def arch_label(arch: str | None) -> str:
    """The network's name in words ("ResNet-18", "LeNet (small CNN)"), for pages and reports."""
    return ARCHS[arch].label if arch in ARCHS else (arch or "network not chosen yet")


def estimate_gflops(arch: str, image_size: int) -> float:
    """Forward GFLOPs for one image of ``image_size`` px: convolution cost grows with the pixel count."""
    return arch_info(arch).gflops * (image_size / 224) ** 2


def choose_image_size(arch: str, typical_side: int) -> int:
    """The input side (square) for images whose typical (e.g. median shorter) side is ``typical_side`` px.

    Rule: keep the images' own size when it fits, but
    * upscale small images to the arch's ``min_side``, so that the heat map has enough cells to point at
      something: ResNets and MobileNets get 112 px, where their stride-16 stage has a 7x7 map (at 96 px
      6x6, and the last stage only 3x3; see ``_MIN_TORCHVISION_SIDE`` for what that changed). LeNet
      downsamples 4x and takes 16 px: an 8x8 digit then gives a 4x4 map, one cell per 2x2 source pixels
      (finer cells would add no information). Measured on sklearn digits (15 epochs, Adam + one-cycle): 99.6%
      at 16 px, 98.5% at 32 px at 4x the cost (LeNet's receptive field is 18 px: at 32 px no unit sees the
      whole digit);
    * cap large ones at ``max_side``: 224, the ImageNet training size, for torchvision networks; 32 for
      LeNet, whose last units see 18 px: at 32 px each sees over half the image, at 64 px a quarter, too
      little to take in an object that fills half of it (coloured shapes, 1,600 images, from scratch:
      96.7% test accuracy at 32 px against 82% at 64 px, which also cost 6x the time);
    * round up to a multiple of the stride of the layer explained at that side (:func:`cam_layer_for`), so
      the heat map's cells tile the whole image instead of ending in a half cell of padding: 112 stays 112
      (layer3, 7x7), 200 becomes 224 (layer4, 7x7).
    """
    info = arch_info(arch)
    if typical_side < 1:
        raise ModelError(f"typical image side must be a positive number of pixels, got {typical_side}")
    side = min(max(typical_side, info.min_side), info.max_side)
    finest = min(stride for _, stride in cam_candidates(arch))
    side = -(-side // finest) * finest
    stride = _explained(info, side)[2]
    return -(-side // stride) * stride


def cam_layer_for(arch: str, image_size: int | None = None) -> tuple[str, int | None]:
    """(dotted path of the layer to explain, side of its map in cells) for ``arch`` at ``image_size`` px.

    The deepest layer whose map is at least ``CAM_MIN_MAP_SIDE`` cells a side, else the finest candidate: a
    ResNet keeps ``layer4`` at 224 px (7x7) and explains ``layer3`` below 224 (112 px: 7x7 instead of 4x4).
    The cost stays near one forward pass: the backward runs from the chosen layer up, and at 224 px nothing
    changes. LeNet has a single candidate (its last block sees 18 px, already a fine map on its 16-32 px
    inputs). Without ``image_size`` the deepest layer, side unknown.
    """
    info = arch_info(arch)
    if image_size is None:
        return info.cam_layer, None
    path, cells, _ = _explained(info, int(image_size))
    return path, cells


def cam_candidates(arch: str) -> tuple[tuple[str, int], ...]:
    """(dotted path, total stride) of every layer of ``arch`` that may be explained, deepest first."""
    info = arch_info(arch)
    return ((info.cam_layer, info.stride), *info.cam_fallbacks)


def _explained(info: ArchInfo, image_size: int) -> tuple[str, int, int]:
    """(path, map side in cells, stride) of the layer explained at ``image_size`` px (see :func:`cam_layer_for`)."""
    sides = [(path, -(-image_size // stride), stride) for path, stride in cam_candidates(info.name)]
    return next((c for c in sides if c[1] >= CAM_MIN_MAP_SIDE), sides[-1])


def default_mean_std(in_channels: int = 3) -> tuple[list[float], list[float]]:
    """Normalisation constants: ImageNet's (the pretrained weights expect them; fine from scratch too, as
    BatchNorm absorbs any fixed shift). One channel gets the channel average."""
    if in_channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    mean, std = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    return [mean] * in_channels, [std] * in_channels


def bare_model(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    """``arch`` with random weights for ``num_classes`` outputs and ``in_channels`` inputs (nothing frozen)."""
    info = arch_info(arch)
    if info.builder is None:
        return LeNet(num_classes=num_classes, in_channels=in_channels)
    from torchvision.models import get_model

    model = get_model(info.builder, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, info, in_channels)
    return model


def _replace_first_conv(model: nn.Module, info: ArchInfo, in_channels: int) -> None:
    old = resolve_module(model, info.first_conv)
    assert isinstance(old, nn.Conv2d), f"{info.name}: {info.first_conv} is {type(old).__name__}, not a Conv2d"
    new = nn.Conv2d(
        in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
        bias=old.bias is not None,
    )  # fmt: skip
    parent_path, _, leaf = info.first_conv.rpartition(".")
    setattr(resolve_module(model, parent_path) if parent_path else model, leaf, new)


# --- module paths ------------------------------------------------------------------------------------------


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DDP / DataParallel wrappers (their ``module``)."""
    while isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    return model


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted ``path`` such as ``"layer4.-1"``: numbers index Sequentials, negatives too."""
    module = model
    for part in path.split(".") if path else ():
        if part.lstrip("-").isdigit() and isinstance(module, nn.Sequential | nn.ModuleList):
            module = module[int(part)]
        else:
            module = getattr(module, part)
    return module


def module_name(model: nn.Module, target: nn.Module) -> str:
    """The state-dict prefix of ``target`` inside ``model``."""
    return next(name for name, module in model.named_modules() if module is target)
