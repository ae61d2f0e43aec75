"""The optimizer over the model's parameter groups, and the numeric precision of the forward pass (AMP)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from core.train.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` (validated: ``TrainConfig.validate`` checks it, once) over the
    trainable parameters (backbone/head groups)."""
    from core.train.models import param_groups

    groups = param_groups(model, config.arch, config.lr, config.backbone_lr_factor)
    wd, momentum = config.weight_decay, config.momentum
    nesterov = config.nesterov and momentum > 0  # torch refuses Nesterov without momentum
    build = {
        "sgd": lambda: torch.optim.SGD(groups, lr=config.lr, momentum=momentum, nesterov=nesterov, weight_decay=wd),
        "adam": lambda: torch.optim.Adam(groups, lr=config.lr, weight_decay=wd),
        "adamw": lambda: torch.optim.AdamW(groups, lr=config.lr, weight_decay=wd),
        "adadelta": lambda: torch.optim.Adadelta(groups, lr=config.lr, weight_decay=wd),
        "rmsprop": lambda: torch.optim.RMSprop(groups, lr=config.lr, momentum=momentum, weight_decay=wd),
    }  # the keys are config.OPTIMIZERS
    return build[config.optimizer]()


@dataclass
class Precision:
    """How the forward pass runs: float32, or autocast to fp16 (with a gradient scaler) or bf16."""

    device: torch.device
    dtype: torch.dtype | None  # None: float32
    scaler: torch.amp.GradScaler

    def autocast(self) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def choose_precision(amp: str, device: torch.device) -> Precision:
    """``auto``: bf16 on GPUs that have it, else fp16 with a scaler; float32 on the CPU (bf16 there ran 40-50x
    slower without AVX512-BF16/AMX: ResNet-18 trained at 3.9 img/s against 130-200, so only an explicit ``bf16``
    uses it)."""
    if amp == "auto":
        amp = "off" if device.type != "cuda" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    dtype = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    return Precision(device, dtype, scaler)
