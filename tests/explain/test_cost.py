"""The slow-CAM estimate: measured on the model it is for, from the explained layer's real channel count."""

from __future__ import annotations

import pytest
import torch

from core.explain.cam import find_target_layer
from core.explain.cost import OVERHEAD, slow_cam_cost
from core.train.archs import default_mean_std
from core.train.checkpoints import InferenceModel
from core.train.models import bare_model


def _inference(arch: str, side: int) -> InferenceModel:
    mean, std = default_mean_std(3)
    return InferenceModel(bare_model(arch, 3, 3).eval(), arch, ["a", "b", "c"], side, mean, std)


@pytest.mark.parametrize(("arch", "side"), [("lenet", 16), ("resnet18", 64)])
def test_the_estimate_counts_one_pass_per_channel_of_the_explained_layer(arch: str, side: int) -> None:
    inference = _inference(arch, side)
    layer = find_target_layer(inference.model, arch, side)
    shapes = []
    handle = layer.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
    with torch.no_grad():
        inference.model(torch.zeros(1, 3, side, side))
    handle.remove()
    cost = slow_cam_cost(inference)
    assert cost.channels == shapes[0][1] > 1
    assert cost.ms_per_pass > 0
    assert abs(cost.seconds - cost.channels * cost.ms_per_pass / 1000 * OVERHEAD) < 1e-9
    assert slow_cam_cost(inference) is cost  # measured once per model
