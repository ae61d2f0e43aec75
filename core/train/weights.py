"""Starting weights for a network, loaded as data only.

* ``weights="imagenet"``: torchvision's ImageNet weights. A file already in the torch hub cache
  (``torch.hub.get_dir()/checkpoints``) is loaded *by us*, with ``torch.load(weights_only=True)`` after its
  SHA-256 has been checked against the 8 hex digits in its name. torchvision's own loader would do
  neither on a cache hit (checked: a pickle planted as ``resnet34-b627a593.pth`` ran code). A missing
  file is downloaded with torch.hub's downloader (which checks the hash); offline, or with
  ``STUDIO_OFFLINE=1``, :class:`WeightsUnavailable` says which file to place where.
* ``weights="<path>"``: a local state-dict file (a torchvision-style ``.pth``/``.pt`` or a studio
  checkpoint). Keys and shapes are checked; the classification head is skipped when its shape differs.

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

from core.train.archs import (
    ARCHS,
    WEIGHTS_CHOICES,
    ArchInfo,
    ModelError,
    arch_info,
    bare_model,
    module_name,
    resolve_module,
)

OFFLINE_ENV = "STUDIO_OFFLINE"  # "1": never try the network for ImageNet weights


class WeightsUnavailable(ModelError):
    """ImageNet weights that are neither in the torch cache nor downloadable right now."""

    def __init__(self, message: str, weights_file: WeightsFile) -> None:
        self.weights_file = weights_file
        super().__init__(message)


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


def weights_state_dict(info: ArchInfo, weights: str | os.PathLike[str]) -> Mapping[str, Any] | None:
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


def load_compatible(model: nn.Module, info: ArchInfo, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``: every non-head tensor must be there with its shape; a head that is absent
    or of another size is skipped (it stays freshly initialised); 3-channel first filters are averaged for other
    inputs."""
    target = model.state_dict()
    head_prefix = module_name(model, resolve_module(model, info.head)) + "."
    first_conv_key = module_name(model, resolve_module(model, info.first_conv)) + ".weight"
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
    # A head may be absent: a parent run's weights for other classes come without theirs (core.train.transfer).
    problems += [f"missing {k}" for k in target
                 if k not in state and not k.endswith("num_batches_tracked") and not k.startswith(head_prefix)]  # fmt: skip
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
        return _comparable_keys(tuple(bare_model(arch, 10, 3).state_dict()))


def _comparable_keys(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(n for n in names if not n.endswith("num_batches_tracked"))  # older files lack them
