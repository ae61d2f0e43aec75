"""Checkpoints: the one file format that training writes and inference, resume and Grad-CAM read, and the one place
old records are read into today's types.

On disk a checkpoint is a plain dict of tensors and Python primitives (checkpoints are data, not code), so
``torch.load(weights_only=True)`` reads it and a planted pickle cannot run. Its keys are the contract with every
reader, the studio's and a person's own script:

    format (2), model (state dict), arch, num_classes, classes, image_size, mean, std, freeze, epoch, step,
    optimizer, scheduler, scaler (state dicts or None), rng (``core.train.plain.capture_rng``), metrics, plan

``plan`` is the run's :class:`~core.train.runplan.RunPlan` (``to_dict``), the same one the run store keeps; arch,
image_size and freeze are written from it. Format 1 (before plans) held the resolved settings as ``config`` beside
``image_size``: :meth:`Checkpoint.from_state` reads both. In the code a checkpoint is a :class:`Checkpoint`; nothing
outside this module indexes the dict.

Writes are atomic: a temp file in the same folder, fsync, ``os.replace``; a crash or a full disk leaves
the previous checkpoint whole. :func:`save_checkpoint` converts what ``weights_only`` cannot read (numpy
scalars and arrays, paths) and refuses anything else before a byte is written. The evaluation transform the
inference side applies lives beside the training data (``core.train.tensors``), so the two cannot drift.

:func:`stored_plan` is what every reader of a run's settings calls (Compare, predict, resume, evaluate): the run's
stored plan, or for a run recorded before plans were stored its resolved settings (``params.settings``) or its
checkpoint's.
"""

from __future__ import annotations

import errno
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import nn

from core.common.atomic import write_atomic
from core.common.diskspace import DiskFullError, file_size_limit, is_disk_full, write_failure
from core.common.errors import CoreError, check_choice
from core.train.archs import ModelError
from core.train.config import TrainConfig
from core.train.models import build_model
from core.train.plain import CheckpointError, capture_rng, restore_rng, to_plain
from core.train.runplan import RunPlan, recorded_plan
from core.train.tensors import preprocess
from core.train.weights import refused_by_weights_only, unwrapped_state_dict

if TYPE_CHECKING:
    from core.common.workspace import Workspace
    from core.store.records import RunRecord
    from core.store.runs import RunStore

__all__ = [
    "CHECKPOINT_FORMAT",
    "REQUIRED_KEYS",
    "Checkpoint",
    "CheckpointDiskFullError",
    "CheckpointError",
    "InferenceModel",
    "capture_rng",
    "device_for",
    "load_checkpoint",
    "load_for_inference",
    "restore_rng",
    "save_checkpoint",
    "stored_plan",
    "to_plain",
]

CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)  # 1: before plans, the resolved settings as "config" beside "image_size"
# What inference needs; save_checkpoint refuses a state without them.
REQUIRED_KEYS: tuple[str, ...] = ("model", "arch", "num_classes", "classes", "image_size", "mean", "std")


class CheckpointDiskFullError(CheckpointError, DiskFullError):
    """A checkpoint not written for want of space: "disk full: N MB free in DIR"; the previous file is whole."""


@dataclass
class Checkpoint:
    """What ``last.pt`` and ``best.pt`` hold: the network's weights, the run's plan, the classes and the input
    scaling (what inference needs), and what a resume needs besides (optimizer, scheduler and AMP scaler states,
    random states, and ``metrics``: the trainer's history, best-checkpoint and partial-epoch state)."""

    weights: Mapping[str, torch.Tensor]  # the network's state dict (never a DDP wrapper's)
    plan: RunPlan
    classes: list[str]
    mean: list[float]
    std: list[float]
    epoch: int = 0
    step: int = 0
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return self.plan.arch

    @property
    def image_size(self) -> int:
        return self.plan.image_size

    @property
    def freeze(self) -> str:
        return self.plan.config.freeze

    @classmethod
    def of(cls, model: nn.Module, plan: RunPlan, classes: Sequence[str], mean: Sequence[float], std: Sequence[float],
           *, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, scaler: Any = None,
           rng: bool = True, **values: Any) -> Checkpoint:  # fmt: skip
        """A training state's checkpoint: DDP wrappers are unwrapped, objects give their state dicts, ``rng`` takes
        the random states now; ``values``: epoch, step, metrics."""
        net = model.module if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel) else model
        states = [o.state_dict() if o is not None else None for o in (optimizer, scheduler, scaler)]
        return cls(net.state_dict(), plan, [str(c) for c in classes], [float(m) for m in mean],
                   [float(s) for s in std], *(int(values.pop(k, 0)) for k in ("epoch", "step")), *states,
                   capture_rng() if rng else None, dict(values.pop("metrics", None) or {}), **values)  # fmt: skip

    def to_state(self) -> dict[str, Any]:
        """The dict written to disk (see the module docstring)."""
        return {"format": CHECKPOINT_FORMAT, "model": self.weights, "arch": self.arch, "num_classes": len(self.classes),
                "classes": list(self.classes), "image_size": self.image_size, "mean": list(self.mean),
                "std": list(self.std), "freeze": self.freeze, "epoch": self.epoch, "step": self.step,
                "optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler, "rng": self.rng,
                "metrics": self.metrics, "plan": self.plan.to_dict()}  # fmt: skip

    @classmethod
    def from_state(cls, state: Mapping[str, Any], name: str = "checkpoint") -> Checkpoint:
        """The checkpoint a loaded dict holds, of either format (``name``: the file, for the messages).

        Raises:
            CheckpointError: not a studio checkpoint, a format this version does not read, or keys missing.
        """
        if not isinstance(state, Mapping) or "format" not in state:
            raise CheckpointError(f"{name} is a PyTorch file but not a studio checkpoint")
        if state["format"] not in READABLE_FORMATS:
            raise CheckpointError(f"{name} has checkpoint format {state['format']!r}; this version reads "
                                  f"formats {', '.join(map(str, READABLE_FORMATS))}")  # fmt: skip
        missing = [k for k in REQUIRED_KEYS if k not in state]
        if missing:
            raise CheckpointError(f"{name} lacks {', '.join(missing)}")
        if len(state["classes"]) != state["num_classes"]:
            raise CheckpointError(f"{name}: {state['num_classes']} outputs but {len(state['classes'])} class names")
        try:
            plan = RunPlan.from_dict(state["plan"]) if "plan" in state else _recorded(state)
        except (CoreError, KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{name}: its plan cannot be read ({_short(e)})") from e
        return cls(dict(state["model"]), plan, [str(c) for c in state["classes"]], [float(m) for m in state["mean"]],
                   [float(s) for s in state["std"]], int(state.get("epoch", 0)), int(state.get("step", 0)),
                   state.get("optimizer"), state.get("scheduler"), state.get("scaler"), state.get("rng"),
                   dict(state.get("metrics") or {}))  # fmt: skip


def _recorded(state: Mapping[str, Any]) -> RunPlan:
    """Format 1: the plan of a checkpoint whose ``config`` held the resolved settings (possibly none at all: a
    checkpoint written by a script), with its own network, input size and freezing."""
    settings = {**_known(state.get("config") or {}), "arch": state["arch"], "image_size": int(state["image_size"]),
                "freeze": state.get("freeze", "none")}  # fmt: skip
    config = TrainConfig.from_dict(settings)
    return recorded_plan(config, config)


def _known(values: Mapping[str, Any]) -> dict[str, Any]:
    """The options of an old record this version still has (a removed option is dropped, not an error)."""
    names = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in values.items() if k in names}


# --- writing and reading -----------------------------------------------------------------------------------


def save_checkpoint(path: Path, checkpoint: Checkpoint | Mapping[str, Any]) -> None:
    """Write ``checkpoint`` (or a state dict of the same keys) to ``path`` atomically: the file is either the old
    one or the whole new one.

    Raises:
        CheckpointError: a required key is missing, a value is not plain data (nothing is written then), or
            the disk refused the write (the previous file at ``path`` is left untouched).
        CheckpointDiskFullError: (a CheckpointError) the disk is full: "disk full: N MB free in DIR"; the
            previous file is left untouched.
    """
    state = checkpoint.to_state() if isinstance(checkpoint, Checkpoint) else checkpoint
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


def load_checkpoint(path: Path, map_location: str | torch.device | None = "cpu") -> Checkpoint:
    """Read a checkpoint as plain data only (either format).

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
    return Checkpoint.from_state(loaded, path.name)


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
    check_choice("device", prefer, ("auto", "cpu", "cuda", "cuda:N"))
    raise AssertionError("unreachable")


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
    info: dict[str, Any] = field(default_factory=dict)  # epoch, step, metrics, plan (RunPlan) of the checkpoint

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
    try:
        model = build_model(ck.arch, len(ck.classes), in_channels=len(ck.mean))
        model.load_state_dict(unwrapped_state_dict(ck.weights))
    except (ModelError, RuntimeError) as e:
        raise CheckpointError(f"{Path(path).name}: its weights do not fit {ck.arch!r} ({_short(e)})") from e
    info = {"epoch": ck.epoch, "step": ck.step, "metrics": ck.metrics, "plan": ck.plan}
    return InferenceModel(model.eval().to(target), ck.arch, ck.classes, ck.image_size, ck.mean, ck.std, target, info)


# --- what a run recorded -----------------------------------------------------------------------------------


def stored_plan(store: RunStore, ws: Workspace, run: RunRecord) -> RunPlan | None:
    """The plan ``run`` trains or trained with: the one every reader reads (Compare, predict, resume, evaluate).

    Its ``plan`` param; for a run recorded before plans were stored, its resolved settings (``params.settings``,
    their input size from a checkpoint when they left it automatic) or its last checkpoint's; None when the run
    has none of these (queued, or failed before its data was read).
    """
    from core.train.run_folder import checkpoint_path

    params = store.params(run.run_id)
    if isinstance(params.get("plan"), dict):
        return RunPlan.from_dict(params["plan"])
    asked = TrainConfig.from_dict(_known(run.config))
    saved = next((checkpoint_path(ws, run.run_id, k) for k in ("last", "best")
                  if checkpoint_path(ws, run.run_id, k).is_file()), None)  # fmt: skip
    settings = params.get("settings")
    if isinstance(settings, dict) and (settings.get("image_size") or saved is None):
        return recorded_plan(asked, TrainConfig.from_dict(_known(settings)))
    if saved is None:
        return None
    plan = load_checkpoint(saved).plan
    return RunPlan(asked, *[getattr(plan, f.name) for f in fields(RunPlan)][1:])
