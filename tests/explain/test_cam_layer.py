"""Which layer a heat map comes from: the deepest feature map with at least about 7x7 cells at the model's input
size (a 3x3 map cannot say where a small object is), measured on the real networks, and said in the result."""

from __future__ import annotations

import pytest
import torch

from core.explain.cam import explain, inference_copy
from core.explain.words import describe_layer
from core.train.archs import ARCHS, CAM_MIN_MAP_SIDE, cam_layer_for, choose_image_size
from core.train.models import build_model, cam_layer


@pytest.mark.parametrize(
    ("arch", "side", "layer", "cells"),
    [
        ("resnet18", 96, "layer3.-1", 6),  # layer4 would give 3x3 (the recipe upscales such images to 112 px)
        ("resnet18", 112, "layer3.-1", 7),  # the smallest side the recipe picks for a ResNet
        ("resnet18", 160, "layer3.-1", 10),
        ("resnet18", 224, "layer4.-1", 7),  # the ImageNet size keeps the last stage
        ("resnet50", 224, "layer4.-1", 7),
        ("mobilenet_v2", 96, "features.13", 6),
        ("mobilenet_v3_small", 128, "features.8", 8),
        ("lenet", 16, "features.-1", 4),  # one candidate: its last block already sees the whole 16 px digit
    ],
)
def test_the_explained_layer_depends_on_the_input_size(arch: str, side: int, layer: str, cells: int) -> None:
    assert cam_layer_for(arch, side) == (layer, cells)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_the_chosen_layer_has_the_map_it_promises_at_every_size_the_recipe_picks(arch: str) -> None:
    """Every input side choose_image_size can return: the hooked layer's real map is the side promised, and at
    least CAM_MIN_MAP_SIDE when any candidate layer reaches it. The real network, on the meta device: every layer
    computes its output's shape and nothing else (ResNet-101 at 224 px took 18 s on a busy 2-core machine)."""
    with torch.device("meta"):
        model = build_model(arch, 3).eval()
    sides = sorted({choose_image_size(arch, s) for s in (1, 48, 64, 96, 100, 128, 150, 200, 224, 4000)})
    for side in sides:
        path, promised = cam_layer_for(arch, side)
        seen: dict[str, tuple] = {}
        handle = cam_layer(model, arch, side).register_forward_hook(
            lambda _m, _i, out, seen=seen: seen.update(hw=out.shape[-2:])
        )
        with torch.inference_mode():
            model(torch.zeros(1, 3, side, side, device="meta"))
        handle.remove()
        assert tuple(seen["hw"]) == (promised, promised), (arch, side, path)
        deepest = -(-side // ARCHS[arch].stride)
        assert promised >= CAM_MIN_MAP_SIDE or promised >= deepest, (arch, side)


def test_explain_says_which_layer_and_how_many_cells() -> None:
    torch.manual_seed(0)
    model = inference_copy(build_model("resnet18", 3))
    small = explain(model, torch.randn(1, 3, 96, 96), arch="resnet18")
    assert (small.layer, small.map_size) == ("layer3.1", (6, 6))
    assert small.heatmap.shape == (96, 96)
    large = explain(model, torch.randn(1, 3, 224, 224), arch="resnet18")
    assert (large.layer, large.map_size) == ("layer4.1", (7, 7))
    slow = explain(model, torch.randn(1, 3, 96, 96), arch="resnet18", method="scorecam")  # the library's own path
    assert (slow.layer, slow.map_size) == ("layer3.1", (6, 6))
    words = describe_layer(small.layer, small.map_size, 96)
    assert "6×6 grid" in words and "layer" not in words and "16×16 px of the 96 px image" in words
