"""Plain data: what a checkpoint may hold (tensors and Python primitives, so ``torch.load(weights_only=True)`` reads
it and a planted pickle cannot run), and the random states a resumed run puts back. ``core.train.checkpoints``
writes and reads the files."""

from __future__ import annotations

import os
import random
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from core.common.errors import CoreError

_PRIMITIVES = (bool, int, float, complex, str, bytes, type(None), torch.Size, torch.dtype, torch.device)


class CheckpointError(CoreError):
    """A checkpoint that cannot be written or read: missing, damaged, not plain data, or not ours."""


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
