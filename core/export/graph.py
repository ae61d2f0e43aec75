"""The network as it leaves the studio: one module whose outputs carry everything a consumer needs, written as ONNX
(torch's dynamo exporter, one file) or TorchScript (``torch.jit.trace``), and run back for the parity check.

Outputs, by name (the order of :data:`OUTPUTS` where present):

* ``probabilities`` (N, K): the softmax the studio shows;
* ``unlike`` (N,): the run's "not sure" check (``core.train.familiar``) computed inside the graph from the same
  two banks of training images and thresholds; above 1 the photo is not like the photos the model learned from.
  Only for runs that kept the check. Computing it in the graph means the standalone script and the browser page
  need no copy of the rule, only "> 1";
* ``block`` (N, C, h, w): the activations of the last convolutional block, only for networks whose head is global
  average pooling + one linear layer (:data:`GAP_LINEAR_BLOCKS`). There the class map ``relu(W[k] . block)`` is
  Grad-CAM of that block for class k up to a positive factor: the gradient of logit k with respect to
  ``block[c]`` is ``W[k, c] / (h * w)`` at every cell.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.common.errors import CoreError
from core.train.familiar import Familiarity, last_linear, mean_nearest_distance, thumbnail

OUTPUTS = ("probabilities", "unlike", "block")
# The block whose output feeds global average pooling and then the one linear layer, per architecture family.
GAP_LINEAR_BLOCKS = {"resnet": "layer4", "mobilenet_v2": "features"}
OPSET = 18  # what onnxruntime (1.32) and onnxruntime-web (1.31) both run


class ExportError(CoreError):
    """A run that cannot be exported, or an export that does not answer like the studio."""


def gap_linear_block(arch: str) -> str | None:
    """The dotted name of the block the demo's heat map comes from, or None when the head is not GAP + linear."""
    for family, block in GAP_LINEAR_BLOCKS.items():
        if arch == family or (family == "resnet" and arch.startswith("resnet")):
            return block
    return None


class Exported(nn.Module):
    """``model`` with the outputs above. Hooks read the last linear layer's input and the block's output during
    the one forward pass; tracing and export run them as plain Python, so they become part of the graph."""

    def __init__(self, model: nn.Module, familiar: Familiarity | None, block: str | None) -> None:
        super().__init__()
        self.model = model.eval()
        self.has_unlike, self.has_block = familiar is not None, block is not None
        self._seen: dict[str, torch.Tensor] = {}
        last_linear(model).register_forward_pre_hook(lambda _m, args: self._seen.__setitem__("features", args[0]))
        if block is not None:
            model.get_submodule(block).register_forward_hook(lambda _m, _a, out: self._seen.__setitem__("block", out))
        if familiar is not None:
            self.register_buffer("bank", familiar.bank.float())
            self.register_buffer("pixel_bank", familiar.pixel_bank.float())
            self.threshold, self.pixel_threshold = familiar.threshold, familiar.pixel_threshold

    @property
    def output_names(self) -> list[str]:
        return [name for name, there in zip(OUTPUTS, (True, self.has_unlike, self.has_block), strict=True) if there]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = [self.model(image).softmax(dim=1)]
        if self.has_unlike:
            features = self._seen["features"].flatten(1)
            far = mean_nearest_distance(self.bank, features) / self.threshold
            far_pixels = mean_nearest_distance(self.pixel_bank, thumbnail(image)) / self.pixel_threshold
            out.append(torch.maximum(far, far_pixels))
        if self.has_block:
            out.append(self._seen["block"])
        return tuple(out)


def write_onnx(module: Exported, example: torch.Tensor, path: Path) -> Path:
    """``module`` as one ONNX file (weights inside; a dynamic batch), checked by ``onnx.checker``."""
    import onnx

    batch = torch.export.Dim("batch", min=1, max=4096)
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=["image"], output_names=module.output_names,
                          dynamic_shapes=({0: batch},), dynamo=True, external_data=False, opset_version=OPSET,
                          verbose=False)  # fmt: skip
    onnx.checker.check_model(str(path), full_check=True)
    return path


def write_torchscript(module: Exported, example: torch.Tensor, path: Path) -> Path:
    """``module`` traced (its control flow does not depend on the data) and saved for ``torch.jit.load``."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice: the file format is what users load
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, str(path))
    return path


def run_onnx(path: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The ONNX file's outputs for ``batch`` (float32 NCHW), by name, with ONNX Runtime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": batch.astype(np.float32)}), strict=True))


def run_torchscript(path: Path, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The TorchScript file's outputs for ``batch``, named as :meth:`Exported.output_names` said."""
    module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        out = module(torch.from_numpy(batch.astype(np.float32)))
    return {name: value.numpy() for name, value in zip(names, out, strict=True)}
