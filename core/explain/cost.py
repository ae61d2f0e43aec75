"""What a slow CAM method (Score-CAM, Ablation-CAM) will cost on one model, measured on that model.

Both run the network once per channel of the explained layer (the library batches them: 16 masked images at a
time for Score-CAM, 32 ablated copies for Ablation-CAM), so the time is about ``channels x the time of one
image inside a batch``. Measuring one batch of blank images here gives both numbers for this model, this input
size and this machine: a few hundredths of a second for LeNet, ~17 s for a ResNet-18 at 224 px on this 2-core
CPU, each said as such instead of one "a minute or more" for every model. ``bench/bench_slow_cam.py``: the
measured run took 0.86-1.12x the estimate for ResNet-18 (64 and 224 px) and MobileNetV3 (224 px).
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

import torch
from PIL import Image

from core.explain.cam import find_target_layer
from core.train.checkpoints import InferenceModel

BATCH = 16  # Score-CAM's batch in the grad-cam library (Ablation-CAM's is 32: per image, about the same)
OVERHEAD = 1.15  # masking / ablating and normalising each map, on top of the forward passes (measured ~1.1x)


@dataclass(frozen=True)
class SlowCamCost:
    """The estimate and what it rests on, so the page can say both."""

    seconds: float
    channels: int  # forward passes per image: one per channel of the explained layer
    ms_per_pass: float  # one image's share of a batched forward pass on this machine


# Keyed by the model object itself, held weakly: keyed by ``id()``, a model freed and a new one allocated at the same
# address got the old one's figures (a ResNet-18 at 64 px was told its explained layer had 128 channels, not 256).
_measured: weakref.WeakKeyDictionary[torch.nn.Module, dict[int, SlowCamCost]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def slow_cam_cost(inference: InferenceModel) -> SlowCamCost:
    """The estimate for one image on ``inference`` (measured once per model, then remembered)."""
    with _lock:
        by_side = _measured.setdefault(inference.model, {})
        if inference.image_size not in by_side:
            by_side[inference.image_size] = _measure(inference)
        return by_side[inference.image_size]


def _measure(inference: InferenceModel) -> SlowCamCost:
    side = inference.image_size
    batch = inference.preprocess([Image.new("RGB", (side, side))] * BATCH).to(inference.device)
    layer = find_target_layer(inference.model, inference.arch, side)
    channels: list[int] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: channels.append(int(out.shape[1])))
    try:
        with torch.inference_mode():
            inference.model(batch)  # the first pass pays one-time costs; the second is the one timed
            started = time.perf_counter()
            inference.model(batch)
            if inference.device.type == "cuda":
                torch.cuda.synchronize(inference.device)
            per_pass = (time.perf_counter() - started) / BATCH
    finally:
        handle.remove()
    n = channels[0] if channels else 0
    return SlowCamCost(seconds=n * per_pass * OVERHEAD, channels=n, ms_per_pass=per_pass * 1000)
