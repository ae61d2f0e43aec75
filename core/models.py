"""The architecture registry: which networks the studio trains, how they are built, frozen and explained.

Every network is named by a key of :data:`ARCHS` ("resnet18", ..., "lenet"). :func:`build_model` makes one
for ``num_classes`` classes, optionally starting from weights, and freezes part of it:

* ``weights="none"``: random initialisation.
* ``weights="imagenet"``: torchvision's ImageNet weights. A file already in the torch hub cache
  (``torch.hub.get_dir()/checkpoints``) is loaded *by us*, with ``torch.load(weights_only=True)`` after its
  SHA-256 has been checked against the 8 hex digits in its name. torchvision's own loader would do
  neither on a cache hit (research/gradcam-and-weights.md section 8: a planted pickle ran code). A missing
  file is downloaded with torch.hub's downloader (which checks the hash); offline, or with
  ``STUDIO_OFFLINE=1``, :class:`WeightsUnavailable` says which file to place where.
* ``weights="<path>"``: a local state-dict file (a torchvision-style ``.pth``/``.pt`` or a studio
  checkpoint). Keys and shapes are checked; the classification head is skipped when its shape differs.

Freezing (``freeze``): ``"none"``, ``"backbone"`` (only the head trains) or ``"all-but-last"`` (the last
stage and the head train). Frozen parameters get ``requires_grad=False`` and the BatchNorm layers whose
parameters are all frozen become :class:`EvalModeBatchNorm2d`, which stays in eval mode through
``model.train()``: a frozen backbone keeps its running statistics instead of drifting with each batch.

Callers pass paths typed by users through ``Workspace.confine`` first; nothing here confines paths.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from core.errors import CoreError

__all__ = [
    "ARCHS",
    "FREEZE_MODES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OFFLINE_ENV",
    "ArchInfo",
    "EvalModeBatchNorm2d",
    "LeNet",
    "ModelError",
    "WeightsFile",
    "WeightsUnavailable",
    "apply_freeze",
    "arch_info",
    "build_model",
    "cam_layer",
    "choose_image_size",
    "count_parameters",
    "default_mean_std",
    "describe",
    "estimate_gflops",
    "head_parameters",
    "imagenet_weights_file",
    "load_state_dict_file",
    "load_verified_state_dict",
    "param_groups",
    "refused_by_weights_only",
    "set_train_mode",
    "unwrapped_state_dict",
]

FREEZE_MODES: tuple[str, ...] = ("none", "backbone", "all-but-last")
WEIGHTS_CHOICES = ("none", "imagenet")  # or a path to a local state-dict file
OFFLINE_ENV = "STUDIO_OFFLINE"  # "1": never try the network for ImageNet weights
IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)

# Input sizes. Below MIN the last feature map (the Grad-CAM map) would be smaller than 3x3 and explain
# nothing; above 224 (the ImageNet training size) the cost grows with the square of the side on a CPU that
# does ~50-80 GFLOP/s (research/cpu-training.md) for little gain on the small datasets the studio sees.
_MIN_CAM_CELLS = 3
_MAX_TORCHVISION_SIDE = 224


class ModelError(CoreError):
    """An unknown architecture or option, or a weights file that does not fit the network."""


class WeightsUnavailable(ModelError):
    """ImageNet weights that are neither in the torch cache nor downloadable right now."""

    def __init__(self, message: str, weights_file: WeightsFile) -> None:
        self.weights_file = weights_file
        super().__init__(message)


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
        max_side: Largest side :func:`choose_image_size` picks.
        min_side: Smallest side :func:`choose_image_size` picks (at least ``3 * stride``).
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
    max_side: int = _MAX_TORCHVISION_SIDE
    min_side: int = _MIN_CAM_CELLS * 32


def _resnet(depth: int, weights: str, gflops: float, help_text: str) -> ArchInfo:
    return ArchInfo(
        name=f"resnet{depth}", label=f"ResNet-{depth}", builder=f"resnet{depth}",
        weights=f"ResNet{depth}_Weights.{weights}", image_size=224, cam_layer="layer4.-1", gflops=gflops,
        help=help_text, head="fc", last_stage=("layer4",), first_conv="conv1",
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
    ),
    "mobilenet_v3_small": ArchInfo(
        name="mobilenet_v3_small", label="MobileNetV3-Small", builder="mobilenet_v3_small",
        weights="MobileNet_V3_Small_Weights.IMAGENET1K_V1", image_size=224, cam_layer="features.-1", gflops=0.113,
        help="The cheapest pretrained network here (0.1 GFLOPs): fast previews, lower accuracy.",
        head="classifier.3", last_stage=tuple(f"features.{i}" for i in range(9, 13)), first_conv="features.0.0",
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
    """The registry entry for ``arch``; a :class:`ModelError` naming the allowed values otherwise."""
    if arch not in ARCHS:
        raise ModelError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    return ARCHS[arch]


def estimate_gflops(arch: str, image_size: int) -> float:
    """Forward GFLOPs for one image of ``image_size`` px: convolution cost grows with the pixel count."""
    return arch_info(arch).gflops * (image_size / 224) ** 2


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
        return count_parameters(_bare_model(arch, 1000 if arch != "lenet" else 10, 3))[0]


def choose_image_size(arch: str, typical_side: int) -> int:
    """The input side (square) for images whose typical (e.g. median shorter) side is ``typical_side`` px.

    Rule: keep the images' own size when it fits, but
    * upscale small images to the arch's ``min_side``: at least 3 x its stride, so the Grad-CAM map is at
      least 3x3 (ResNets and MobileNets downsample 32x: 96 px). LeNet downsamples 4x and takes 16 px: an 8x8
      digit then gives a 4x4 map, one cell per 2x2 source pixels (finer cells would add no information).
      Measured on sklearn digits (15 epochs, Adam + one-cycle): 99.6% at 16 px, 98.5% at 32 px at 4x the
      cost (LeNet's receptive field is 18 px: at 32 px no unit sees the whole digit);
    * cap large ones at ``max_side``: 224, the ImageNet training size, for torchvision networks; 32 for
      LeNet, whose last units see 18 px: at 32 px each sees over half the image, at 64 px a quarter, too
      little to take in an object that fills half of it (coloured shapes, 1,600 images, from scratch:
      96.7% test accuracy at 32 px against 82% at 64 px, which also cost 6x the time);
    * round up to a multiple of the stride, so every pooling divides evenly and the CAM map covers the
      whole image instead of dropping a border.
    """
    info = arch_info(arch)
    if typical_side < 1:
        raise ModelError(f"typical image side must be a positive number of pixels, got {typical_side}")
    side = min(max(typical_side, info.min_side), info.max_side)
    return -(-side // info.stride) * info.stride


def default_mean_std(in_channels: int = 3) -> tuple[list[float], list[float]]:
    """Normalisation constants: ImageNet's (the pretrained weights expect them; fine from scratch too, as
    BatchNorm absorbs any fixed shift). One channel gets the channel average."""
    if in_channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    mean, std = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    return [mean] * in_channels, [std] * in_channels


# --- building -----------------------------------------------------------------------------------------


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
    _check_choice("freeze mode", freeze, FREEZE_MODES)
    if num_classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, got {num_classes}")
    if in_channels < 1:
        raise ModelError(f"in_channels must be at least 1, got {in_channels}")
    state = _weights_state_dict(info, weights)
    model = _bare_model(arch, num_classes, in_channels)
    if state is not None:
        _load_compatible(model, info, state, source=str(weights))
    apply_freeze(model, arch, freeze)
    return model


def _bare_model(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    info = arch_info(arch)
    if info.builder is None:
        return LeNet(num_classes=num_classes, in_channels=in_channels)
    from torchvision.models import get_model

    model = get_model(info.builder, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, info, in_channels)
    return model


def _replace_first_conv(model: nn.Module, info: ArchInfo, in_channels: int) -> None:
    old = _resolve(model, info.first_conv)
    assert isinstance(old, nn.Conv2d), f"{info.name}: {info.first_conv} is {type(old).__name__}, not a Conv2d"
    new = nn.Conv2d(
        in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
        bias=old.bias is not None,
    )  # fmt: skip
    parent_path, _, leaf = info.first_conv.rpartition(".")
    setattr(_resolve(model, parent_path) if parent_path else model, leaf, new)


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ModelError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")


# --- weights -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsFile:
    """Where torchvision's ImageNet weights for one arch live, and how to get them."""

    file_name: str  # e.g. "resnet18-f37072fd.pth"
    url: str
    folder: Path  # torch.hub.get_dir()/checkpoints, read at call time (TORCH_HOME may change)
    sha256_prefix: str  # the hex digits in the file name

    @property
    def path(self) -> Path:
        return self.folder / self.file_name

    def instructions(self) -> str:
        """What a person does when the studio cannot download the file itself."""
        return (
            f"download {self.url} on a machine with internet access and place it, named {self.file_name}, "
            f"in {self.folder} (or upload it as a local weights file)"
        )


_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.")  # torchvision's convention: <name>-<sha256 prefix>.pth


def imagenet_weights_file(arch: str) -> WeightsFile:
    """The ImageNet weights file for ``arch`` (name, URL, cache folder, expected hash)."""
    info = arch_info(arch)
    if info.weights is None:
        raise ModelError(f"{info.label} has no ImageNet weights; use weights='none' or a local file")
    from torchvision.models import get_weight

    url = get_weight(info.weights).url
    name = Path(urlparse(url).path).name
    match = _HASH_IN_NAME.search(name)
    assert match, f"torchvision weights file {name} carries no hash"
    return WeightsFile(name, url, Path(torch.hub.get_dir()) / "checkpoints", match.group(1))


def _weights_state_dict(info: ArchInfo, weights: str | os.PathLike[str]) -> Mapping[str, Any] | None:
    if weights == "none":
        return None
    if weights == "imagenet":
        return _imagenet_state_dict(info)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelError(
            f"weights {weights!r}: not {' or '.join(repr(c) for c in WEIGHTS_CHOICES)}, "
            "and no such file (give a path to a .pth/.pt state-dict file)"
        )
    return load_state_dict_file(path)


def _imagenet_state_dict(info: ArchInfo) -> Mapping[str, Any]:
    wf = imagenet_weights_file(info.name)
    if not wf.path.is_file():
        _download(wf)
    return load_verified_state_dict(wf.path)


def _download(wf: WeightsFile) -> None:
    """Fetch ``wf`` into the cache with torch.hub's downloader (temp file, hash check, rename)."""
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise WeightsUnavailable(f"ImageNet weights {wf.file_name} are not cached and {OFFLINE_ENV} is set: "
                                 f"{wf.instructions()}", wf)  # fmt: skip
    # urlopen has no timeout: on a network that drops packets it would hang. A short connect test first
    # makes "offline" a quick, clear answer.
    host = urlparse(wf.url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=5).close()
        wf.folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(wf.url, str(wf.path), hash_prefix=wf.sha256_prefix, progress=False)
    except (OSError, RuntimeError) as e:  # URLError/socket errors are OSError; a bad hash is RuntimeError
        raise WeightsUnavailable(
            f"could not download ImageNet weights {wf.file_name} ({type(e).__name__}: {e}); {wf.instructions()}", wf
        ) from e


def load_verified_state_dict(path: Path) -> Mapping[str, Any]:
    """Load a torchvision-style weights file after checking that its SHA-256 starts with the hex in its name.

    The content is unpickled only once the hash matches, and then only as plain data (``weights_only``).

    Raises:
        ModelError: the name carries no hash, the hash differs, or the file is not a plain state dict.
    """
    match = _HASH_IN_NAME.search(path.name)
    if not match:
        raise ModelError(f"{path.name}: the name carries no hash (expected <name>-<sha256 prefix>.pth)")
    actual = _sha256(path, path.stat().st_size, path.stat().st_mtime_ns)
    if not actual.startswith(match.group(1)):
        raise ModelError(
            f"{path} is damaged or not the official file: its SHA-256 starts with {actual[: len(match.group(1))]}, "
            f"its name says {match.group(1)}; delete it so that it is downloaded again"
        )
    return load_state_dict_file(path)


@functools.lru_cache(maxsize=16)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    # Cached by (path, size, mtime): hashing ResNet-152's 230 MB on every build would cost about a second.
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict (name -> tensor) from a file, loaded as plain data only.

    Accepts a bare state dict, a studio checkpoint (its ``"model"`` entry) and DDP's ``module.`` prefixes.

    Raises:
        ModelError: unreadable, holding code or objects, or not a mapping of names to tensors.
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip and pickle readers raise many types on damaged files
        if refused_by_weights_only(e):
            raise ModelError(
                f"{path.name} is not a plain state dict: it holds code or Python objects, which are never loaded "
                "(save model.state_dict(), not the model)"
            ) from e
        raise ModelError(f"{path.name} could not be read as a PyTorch file ({type(e).__name__})") from e
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping) and "arch" in loaded:
        loaded = loaded["model"]  # a studio checkpoint
    if not isinstance(loaded, Mapping) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelError(f"{path.name} is not a state dict (a mapping of parameter names to tensors)")
    return unwrapped_state_dict(loaded)


def refused_by_weights_only(error: BaseException) -> bool:
    """Whether ``torch.load(weights_only=True)`` raised because the file holds more than plain data.

    torch words every unpickling failure "Weights only load failed"; a damaged file or a foreign pickle
    format says "Unsupported operand", a file naming a class or function says "Unsupported global" /
    "unsupported GLOBAL ..." (or, for allowed modules, "reduce for unrecognized function").
    """
    return isinstance(error, pickle.UnpicklingError) and bool(_NAMES_CODE.search(str(error)))


_NAMES_CODE = re.compile(r"\bglobal\b|unrecognized function|unsupported class", re.IGNORECASE)


def unwrapped_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the key prefixes of wrappers removed: ``module.`` (DDP) and ``_orig_mod.`` (torch.compile)."""
    unwrapped = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            key = str(key).removeprefix(prefix)
        unwrapped[key] = value
    return unwrapped


def _load_compatible(model: nn.Module, info: ArchInfo, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``: every non-head tensor must be there with its shape; a head of another
    size is skipped (it stays freshly initialised); 3-channel first filters are averaged for other inputs."""
    target = model.state_dict()
    head_prefix = _module_name(model, _resolve(model, info.head)) + "."
    first_conv_key = _module_name(model, _resolve(model, info.first_conv)) + ".weight"
    merged, problems = dict(target), []
    for key, tensor in state.items():
        if key not in target:
            problems.append(f"unexpected {key}")
        elif key == first_conv_key and tensor.dim() == 4 and tensor.shape[1] == 3 != target[key].shape[1]:
            channels = target[key].shape[1]  # keep the response to a grey image: sum of RGB filters, spread
            merged[key] = tensor.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1) * (3 / channels)
        elif tensor.shape != target[key].shape:
            if not key.startswith(head_prefix):
                problems.append(f"{key} has shape {tuple(tensor.shape)}, expected {tuple(target[key].shape)}")
        else:
            merged[key] = tensor
    # num_batches_tracked is absent from older torchvision files; BatchNorm does not need it.
    problems += [f"missing {k}" for k in target if k not in state and not k.endswith("num_batches_tracked")]
    if problems:
        guess = _guess_arch(state)
        hint = f" (it looks like {guess} weights)" if guess and guess != info.name else ""
        raise ModelError(
            f"{Path(source).name} does not hold {info.label} weights{hint}: {len(problems)} problems, e.g. "
            + "; ".join(problems[:3])
        )
    model.load_state_dict(merged)


def _guess_arch(state: Mapping[str, torch.Tensor]) -> str | None:
    """The registry arch whose parameter names match ``state`` best (built on the meta device: free)."""
    best, best_score = None, 0.0
    keys = _comparable_keys(tuple(state))
    for name in ARCHS:
        names = _arch_keys(name)
        score = len(keys & names) / len(keys | names)
        if score > best_score:
            best, best_score = name, score
    return best if best_score > 0.9 else None


@functools.cache
def _arch_keys(arch: str) -> frozenset[str]:
    with torch.device("meta"):
        return _comparable_keys(tuple(_bare_model(arch, 10, 3).state_dict()))


def _comparable_keys(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(n for n in names if not n.endswith("num_batches_tracked"))  # older files lack them


# --- freezing and parameter groups -------------------------------------------------------------------------


def apply_freeze(model: nn.Module, arch: str, freeze: str) -> nn.Module:
    """Freeze ``model`` (built by :func:`build_model` for ``arch``) per ``freeze``; returns it for chaining."""
    _check_choice("freeze mode", freeze, FREEZE_MODES)
    net = _unwrap(model)
    info = arch_info(arch)
    trainable = {"none": (), "backbone": (info.head,), "all-but-last": (*info.last_stage, info.head)}[freeze]
    for p in net.parameters():
        p.requires_grad_(freeze == "none")
    for path in trainable:
        for p in _resolve(net, path).parameters():
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
        _check_choice("freeze mode", freeze, FREEZE_MODES)
    model.train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()
    return model


def head_parameters(model: nn.Module, arch: str) -> list[nn.Parameter]:
    """The classification head's parameters (trainable or not)."""
    return list(_resolve(_unwrap(model), arch_info(arch).head).parameters())


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


def cam_layer(model: nn.Module, arch: str) -> nn.Module:
    """The Grad-CAM target layer of ``model``: the last module whose output is still a 4-D feature map."""
    return _resolve(_unwrap(model), arch_info(arch).cam_layer)


# --- module paths ------------------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside DDP / DataParallel wrappers (their ``module``)."""
    while isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    return model


def _resolve(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted ``path`` such as ``"layer4.-1"``: numbers index Sequentials, negatives too."""
    module = model
    for part in path.split(".") if path else ():
        if part.lstrip("-").isdigit() and isinstance(module, nn.Sequential | nn.ModuleList):
            module = module[int(part)]
        else:
            module = getattr(module, part)
    return module


def _module_name(model: nn.Module, target: nn.Module) -> str:
    """The state-dict prefix of ``target`` inside ``model``."""
    return next(name for name, module in model.named_modules() if module is target)
