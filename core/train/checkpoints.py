"""Checkpoints: the one file format that training writes and inference, resume and Grad-CAM read.

A checkpoint is a plain dict of tensors and Python primitives (checkpoints are data,
not code), so ``torch.load(weights_only=True)`` reads it and a planted pickle cannot run. Its keys are the
contract between the training loop and every reader:

    format (1), model (state dict), arch, num_classes, classes, image_size, mean, std, freeze, epoch, step,
    optimizer, scheduler, scaler (state dicts or None), rng (see :func:`capture_rng`), metrics, config

Writes are atomic: a temp file in the same folder, fsync, ``os.replace``; a crash or a full disk leaves
the previous checkpoint whole. :func:`save_checkpoint` converts what ``weights_only`` cannot read (numpy
scalars and arrays, paths) and refuses anything else before a byte is written.

:func:`build_checkpoint` is the one place the dict is assembled (the trainer's ``last.pt``/``best.pt`` and
any other writer); :func:`load_checkpoint` the one place it is read. The evaluation transform the
inference side applies lives beside the training data (``core.train.tensors``), so the two cannot drift.
"""

from __future__ import annotations

import errno
import os
import random
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.common.atomic import write_atomic
from core.common.diskspace import DiskFullError, file_size_limit, is_disk_full, write_failure
from core.common.errors import CoreError
from core.train.archs import ModelError
from core.train.models import build_model
from core.train.tensors import preprocess
from core.train.weights import refused_by_weights_only, unwrapped_state_dict

__all__ = [
    "CHECKPOINT_FORMAT",
    "REQUIRED_KEYS",
    "CheckpointDiskFullError",
    "CheckpointError",
    "InferenceModel",
    "build_checkpoint",
    "capture_rng",
    "device_for",
    "load_checkpoint",
    "load_for_inference",
    "restore_rng",
    "save_checkpoint",
    "to_plain",
]

CHECKPOINT_FORMAT = 1
# What inference needs; save_checkpoint refuses a state without them.
REQUIRED_KEYS: tuple[str, ...] = ("model", "arch", "num_classes", "classes", "image_size", "mean", "std")
# What load_checkpoint fills in when a key is absent, so readers can index every contract key.
_DEFAULTS: dict[str, Any] = {
    "freeze": "none", "epoch": 0, "step": 0, "optimizer": None, "scheduler": None, "scaler": None, "rng": None,
    "metrics": {}, "config": {},
}  # fmt: skip
_PRIMITIVES = (bool, int, float, complex, str, bytes, type(None), torch.Size, torch.dtype, torch.device)


class CheckpointError(CoreError):
    """A checkpoint that cannot be written or read: missing, damaged, not plain data, or not ours."""


class CheckpointDiskFullError(CheckpointError, DiskFullError):
    """A checkpoint not written for want of space: "disk full: N MB free in DIR"; the previous file is whole."""


# --- plain data --------------------------------------------------------------------------------------------


def to_plain(obj: Any, where: str = "state") -> Any:
    """``obj`` made readable by ``torch.load(weights_only=True)``.

    numpy scalars become Python numbers (``np.float64`` subclasses ``float`` but pickles as a numpy object,
    which weights_only refuses), numpy arrays become tensors, paths become strings; dicts, lists and tuples
    are converted inside. Anything else (functions, objects, sets) raises :class:`CheckpointError` naming
    where it sits, e.g. ``state['config']['callback']``.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, _PRIMITIVES):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise CheckpointError(f"{where}: a numpy array of Python objects is not plain data")
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        items = ((to_plain(k, f"{where} key"), to_plain(v, f"{where}[{k!r}]")) for k, v in obj.items())
        if not isinstance(obj, OrderedDict):
            return dict(items)
        ordered = OrderedDict(items)
        if hasattr(obj, "_metadata"):  # a state_dict's per-module versions, which load_state_dict consults
            ordered._metadata = to_plain(obj._metadata, f"{where}._metadata")  # type: ignore[attr-defined]
        return ordered
    if isinstance(obj, list | tuple):
        converted = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return converted if isinstance(obj, list) else tuple(converted)
    raise CheckpointError(f"{where}: a {type(obj).__name__} is not plain data (tensors, numbers, strings, "
                          "lists, tuples, dicts); store its state_dict() or a description instead")  # fmt: skip


def capture_rng() -> dict[str, Any]:
    """The random states of Python, numpy, torch (CPU and initialised CUDA devices), as plain data."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }  # fmt: skip


def restore_rng(state: Mapping[str, Any] | None) -> None:
    """Put back what :func:`capture_rng` returned (a missing part is left as it is)."""
    if not state:
        return
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]][: torch.cuda.device_count()])


# --- writing and reading -----------------------------------------------------------------------------------


def build_checkpoint(
    model: nn.Module,
    *,
    arch: str,
    classes: Sequence[str],
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    freeze: str = "none",
    epoch: int = 0,
    step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    metrics: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    rng: bool = True,
) -> dict[str, Any]:
    """The checkpoint dict for a training state (DDP wrappers are unwrapped; objects give their state dicts)."""
    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel) else model
    return {
        "format": CHECKPOINT_FORMAT, "model": net.state_dict(), "arch": arch, "num_classes": len(classes),
        "classes": [str(c) for c in classes], "image_size": int(image_size), "mean": [float(m) for m in mean],
        "std": [float(s) for s in std], "freeze": freeze, "epoch": int(epoch), "step": int(step),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": capture_rng() if rng else None, "metrics": dict(metrics or {}), "config": dict(config or {}),
    }  # fmt: skip


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: the file is either the old one or the whole new one.

    Raises:
        CheckpointError: a required key is missing, a value is not plain data (nothing is written then), or
            the disk refused the write (the previous file at ``path`` is left untouched).
        CheckpointDiskFullError: (a CheckpointError) the disk is full: "disk full: N MB free in DIR"; the
            previous file is left untouched.
    """
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint state lacks {', '.join(missing)}")
    plain = to_plain({"format": CHECKPOINT_FORMAT, **state})
    folder, written = Path(path).parent, [0]

    def write(fh: Any) -> None:
        try:
            torch.save(plain, fh)
        except RuntimeError as e:  # torch hides a short write's errno ("unexpected pos"): ask the disk, now that
            written[0] = fh.tell()  # the partial file still takes the space it got
            if is_disk_full(e, folder):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from e
            if "unexpected pos" in str(e) and file_size_limit() is not None:  # a short write under ulimit -f
                raise OSError(errno.EFBIG, os.strerror(errno.EFBIG)) from e
            raise

    try:
        write_atomic(Path(path), write)
    except Exception as e:  # a full disk surfaces as OSError or as torch's RuntimeError
        needed = f" (over {written[0] / 1e6:.0f} MB)" if written[0] else ""
        full = write_failure(e, folder, f"checkpoint {Path(path).name}{needed} was not written; "
                             "the previous one there is unchanged", CheckpointDiskFullError)  # fmt: skip
        if full is not None:
            raise full from e
        detail = e.strerror if isinstance(e, OSError) and e.strerror else _short(e)
        raise CheckpointError(
            f"could not write checkpoint {path} ({detail}); a previous file there is unchanged"
        ) from e


def load_checkpoint(path: Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint as plain data only; every contract key is present in the result (defaults filled).

    Raises:
        CheckpointError: missing, truncated or damaged file, code or objects inside, or not a studio checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    _check_archive(path)
    try:
        loaded = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # the zip and pickle readers raise many types on a cut or damaged file
        if refused_by_weights_only(e):
            raise CheckpointError(f"{path.name} holds code or Python objects, not plain data; it was not loaded") from e
        raise CheckpointError(f"{path.name} is damaged or not a PyTorch file ({_short(e)})") from e
    if not isinstance(loaded, dict) or "format" not in loaded:
        raise CheckpointError(f"{path.name} is a PyTorch file but not a studio checkpoint")
    if loaded["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path.name} has checkpoint format {loaded['format']!r}; this version reads "
                              f"format {CHECKPOINT_FORMAT}")  # fmt: skip
    missing = [k for k in REQUIRED_KEYS if k not in loaded]
    if missing:
        raise CheckpointError(f"{path.name} lacks {', '.join(missing)}")
    return {**_DEFAULTS, **loaded}


def _check_archive(path: Path) -> None:
    """Refuse a file whose zip records fail their CRC-32: torch.load does not check them, so a flipped bit
    in a tensor would load silently as a wrong weight. Costs one extra read (about 0.04 s per 100 MB)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path.name} is damaged or not a PyTorch file ({_short(e)})") from e
    if bad_member is not None:
        raise CheckpointError(f"{path.name} is damaged: {bad_member} fails its checksum")


def _short(error: Exception) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first_line[:100]}" if first_line else type(error).__name__


# --- inference ---------------------------------------------------------------------------------------------


def device_for(prefer: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; ``"cpu"``; ``"cuda"``/``"cuda:N"`` (must be available)."""
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if prefer == "cpu":
        return torch.device("cpu")
    if prefer == "cuda" or prefer.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelError(f"device {prefer!r} asked for, but no CUDA GPU is available here")
        return torch.device(prefer)
    raise ModelError(f"unknown device {prefer!r}; choose auto, cpu, cuda or cuda:N")


@dataclass
class InferenceModel:
    """A trained network ready to predict: in eval mode on ``device``, with what its inputs must look like."""

    model: nn.Module
    arch: str
    classes: list[str]
    image_size: int
    mean: list[float]
    std: list[float]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    info: dict[str, Any] = field(default_factory=dict)  # epoch, step, metrics, config, freeze of the checkpoint

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, n_classes) on the CPU for a preprocessed batch."""
        with torch.inference_mode():
            return self.model(batch.to(self.device)).softmax(dim=1).cpu()

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> the batch this model expects."""
        return preprocess(images, self.image_size, self.mean, self.std)

    def predict_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Class probabilities for PIL images."""
        return self.predict(self.preprocess(images))


def load_for_inference(path: Path, device: torch.device | str | None = None) -> InferenceModel:
    """The model saved in the checkpoint at ``path``, in eval mode on ``device`` (default: :func:`device_for`).

    Raises:
        CheckpointError: the file cannot be read, or its weights do not fit the network it names.
    """
    ck = load_checkpoint(path)
    target = device if isinstance(device, torch.device) else device_for(device or "auto")
    if len(ck["classes"]) != ck["num_classes"]:
        raise CheckpointError(f"{Path(path).name}: {ck['num_classes']} outputs but {len(ck['classes'])} class names")
    try:
        model = build_model(ck["arch"], ck["num_classes"], in_channels=len(ck["mean"]))
        model.load_state_dict(unwrapped_state_dict(ck["model"]))
    except (ModelError, RuntimeError) as e:
        raise CheckpointError(f"{Path(path).name}: its weights do not fit {ck['arch']!r} ({_short(e)})") from e
    info = {k: ck[k] for k in ("epoch", "step", "metrics", "config", "freeze")}
    return InferenceModel(model.eval().to(target), ck["arch"], list(ck["classes"]), int(ck["image_size"]),
                          list(ck["mean"]), list(ck["std"]), target, info)  # fmt: skip
