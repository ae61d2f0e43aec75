"""core.explain.cam and core.overlay: maps that are right where the answer is known, equal to the library's default
path, cheap to get on frozen models, and calls that leave the model exactly as found.

Real torchvision networks (random weights, small inputs) and hand-built ones; nothing is mocked. The slow
methods (hundreds of forwards) run on the small nets by default and on ResNet-18 / MobileNetV2 only with
``-m slow``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from core.common.errors import CoreError
from core.explain.cam import explain, find_target_layer, inference_copy
from core.explain.methods import ALL_METHODS, DEFAULT_METHOD, METHODS, SLOW_METHODS, ExplainError, method_info
from core.explain.overlay import COLORMAPS, OverlayError, colorize, overlay, peak, side_by_side
from tests.shapes import CLASSES, box_contains, make_shapes_dataset, split_counts

GRADIENT_METHODS = [name for name, info in METHODS.items() if info.uses_gradients]


# --- models -----------------------------------------------------------------------------------------------


class GapLinear(nn.Module):
    """features (a ReLU: the target layer's output is the ReLU'd input) -> global average pool -> linear.

    For this head Grad-CAM is known in closed form: dScore_c/dA_k(i, j) = w_ck / (H W), so the map is
    ReLU(sum_k w_ck A_k) / (H W) before the min-max scaling.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class ColourNet(GapLinear):
    """Channel 0 of a 1x1 conv fires on red pixels, channel 1 on green ones; class 0 reads channel 0, class 1
    channel 1: the evidence for each class lies exactly on the pixels of its colour."""

    def __init__(self) -> None:
        super().__init__(torch.eye(2))
        conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]]).view(2, 3, 1, 1))
        self.features = nn.Sequential(conv, nn.ReLU())


class TinyLeNet(nn.Module):
    """A LeNet-style net built like core.train.archs.LeNet: ``features`` (Sequential), ``pool``, ``classifier``."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


SIDES = {"resnet18": 64, "mobilenet_v2": 64, "lenet": 16}  # resnet/mobilenet maps are 2x2, LeNet's 8x8


def make_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyLeNet() if name == "lenet" else torchvision.models.get_model(name, num_classes=4)
    return model.eval()


def make_input(name: str, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, SIDES[name], SIDES[name], generator=generator)


@pytest.fixture(scope="module", params=list(SIDES))
def net(request: pytest.FixtureRequest) -> tuple[str, nn.Module, torch.Tensor]:
    return request.param, make_model(request.param), make_input(request.param)


def library_map(model: nn.Module, x: torch.Tensor, method: str, class_index: int) -> np.ndarray:
    """The grad-cam package's default path for one image: the reference our fast path must equal (on the layer
    ``explain`` picks for this input size: a ResNet's layer3 below 224 px)."""
    with ALL_METHODS[method].cam_class(model, [find_target_layer(model, image_size=x.shape[-1])]) as cam:
        return cam(x, targets=[ClassifierOutputTarget(class_index)])[0]


def model_state(model: nn.Module) -> tuple[list, list, int]:
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    return modes, flags, hooks


# --- the registry --------------------------------------------------------------------------------------------


def test_methods_are_listed_in_order_with_labels_and_help() -> None:
    assert list(METHODS) == ["gradcam", "hirescam", "gradcam++", "xgradcam", "layercam", "eigencam"]
    assert list(SLOW_METHODS) == ["scorecam", "ablationcam"]
    assert DEFAULT_METHOD == "gradcam" and list(ALL_METHODS) == [*METHODS, *SLOW_METHODS]
    assert all(info.label and info.help and not info.slow for info in METHODS.values())
    assert all(info.slow and "slow" in info.label.lower() for info in SLOW_METHODS.values())
    with pytest.raises(ExplainError, match="choose one of: gradcam, hirescam"):
        method_info("gradcam+++")


# --- maps where the answer is known ----------------------------------------------------------------------------


def _min_max(cam: np.ndarray) -> np.ndarray:
    cam = cam - cam.min()
    return cam / cam.max()


@pytest.mark.parametrize(
    ("method", "weights_of"),
    [("gradcam", lambda w: w), ("hirescam", lambda w: w), ("layercam", lambda w: np.maximum(w, 0))],
)
def test_map_equals_the_closed_form_for_a_gap_linear_head(method: str, weights_of) -> None:
    torch.manual_seed(3)
    weight = torch.randn(3, 5)
    model = GapLinear(weight).eval()
    x = torch.randn(1, 5, 6, 8)
    result = explain(model, x, method=method, target_class=2)
    activation = torch.relu(x)[0].numpy()
    # Grad-CAM / HiResCAM: ReLU(sum_k w_k A_k); LayerCAM: sum_k ReLU(w_k) A_k (the 1/HW cancels in the scaling)
    expected = _min_max(np.maximum(np.tensordot(weights_of(weight[2].numpy()), activation, axes=1), 0))
    assert result.heatmap.shape == (6, 8)
    np.testing.assert_allclose(result.heatmap, expected, atol=1e-5)
    assert result.class_index == 2 and result.has_evidence


def colour_picture() -> torch.Tensor:
    """20x20 black picture, a red 6x6 square (rows 2-7, cols 10-15) and a smaller green 4x4 one (rows 13-16,
    cols 3-6): class 0 (red) wins, class 1 (green) has its evidence elsewhere."""
    x = torch.zeros(1, 3, 20, 20)
    x[0, 0, 2:8, 10:16] = 1.0
    x[0, 1, 13:17, 3:7] = 1.0
    return x


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_peak_lies_on_the_evidence_of_the_chosen_class(method: str) -> None:
    model, x = ColourNet().eval(), colour_picture()
    top = explain(model, x, method=method, out_size=(40, 40))  # 2x the input: boxes scale by 2
    green = explain(model, x, method=method, target_class=1, out_size=(40, 40))
    assert top.class_index == top.top_class == 0 and green.class_index == 1 and green.top_class == 0
    np.testing.assert_array_equal(top.probabilities, green.probabilities)  # the same forward either way
    assert top.probabilities[0] > top.probabilities[1]
    assert box_contains((20, 4, 32, 16), *peak(top.heatmap))  # red square, (x0, y0, x1, y1) at 2x
    assert box_contains((6, 26, 14, 34), *peak(green.heatmap))  # green square at 2x
    assert top.heatmap[4:16, 20:32].mean() > 0.5 > top.heatmap[26:34, 6:14].mean()


def test_no_positive_evidence_is_reported_not_drawn() -> None:
    model = GapLinear(-torch.rand(2, 4) - 0.1).eval()  # every channel counts against every class
    result = explain(model, torch.rand(1, 4, 5, 5), out_size=(10, 12))
    assert not result.has_evidence and "No positive evidence" in result.note
    assert result.heatmap.shape == (10, 12) and not result.heatmap.any()
    assert peak(result.heatmap) is None


def test_nan_activations_give_no_explanation() -> None:
    x = torch.rand(1, 4, 5, 5)
    x[0, :, 2, 2] = float("nan")
    result = explain(GapLinear(torch.rand(2, 4)).eval(), x)
    assert not result.has_evidence and "NaN" in result.note
    assert np.isfinite(result.heatmap).all() and not result.heatmap.any()


# --- every method on real networks ------------------------------------------------------------------------------


def _check_map(result, size: tuple[int, int]) -> None:
    assert result.heatmap.shape == size and result.heatmap.dtype == np.float32
    assert np.isfinite(result.heatmap).all()
    assert 0.0 <= result.heatmap.min() and result.heatmap.max() <= 1.0
    assert result.probabilities.shape == (4,) and abs(float(result.probabilities.sum()) - 1.0) < 1e-5
    assert result.forward_ms > 0 and result.cam_ms > 0


@pytest.mark.parametrize("method", list(METHODS))
def test_fast_methods_give_a_map_of_the_image_size_equal_to_the_library(net, method: str) -> None:
    name, model, x = net
    result = explain(model, x, method=method, out_size=(50, 70))
    _check_map(result, (50, 70))
    assert result.class_index == result.top_class and result.method == method
    ours = explain(model, x, method=method, target_class=3)  # at the input's size, like the library
    reference = library_map(model, x, method, class_index=3)
    assert ours.heatmap.shape == reference.shape == x.shape[-2:]
    if ours.has_evidence:
        assert np.abs(ours.heatmap - reference).max() < 1e-4
    else:
        assert reference.max() < 1e-4  # the library draws its empty map as all zeros too


@pytest.mark.parametrize("method", list(SLOW_METHODS))
def test_slow_methods_run_on_a_small_net(method: str) -> None:
    model, x = make_model("lenet"), make_input("lenet")
    result = explain(model, x, method=method, out_size=(30, 20))
    _check_map(result, (30, 20))
    reference = library_map(model, x, method, result.class_index)
    at_input = explain(model, x, method=method)
    np.testing.assert_allclose(at_input.heatmap, reference, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("method", list(SLOW_METHODS))
def test_slow_methods_run_on_torchvision_nets(name: str, method: str) -> None:
    result = explain(make_model(name), make_input(name), method=method, out_size=(50, 70))
    _check_map(result, (50, 70))


# --- frozen models ------------------------------------------------------------------------------------------------


def test_fully_frozen_model_works_where_the_library_fails() -> None:
    model, x = make_model("resnet18"), make_input("resnet18")
    reference = library_map(model, x, "gradcam", 1)
    frozen = inference_copy(model)
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.training
    with pytest.raises(RuntimeError, match="does not require grad"):
        library_map(frozen, x, "gradcam", 1)
    result = explain(frozen, x, target_class=1)
    assert result.has_evidence and np.abs(result.heatmap - reference).max() < 1e-4
    assert not any(p.requires_grad for p in frozen.parameters())  # still frozen


def test_frozen_backbone_with_a_trainable_head_works_where_the_library_fails() -> None:
    model, x = make_model("mobilenet_v2"), make_input("mobilenet_v2")
    reference = library_map(model, x, "gradcam", 2)
    model.features.requires_grad_(False)  # "fine-tune only the classifier"
    with pytest.raises(AttributeError):  # no gradient ever reaches the target layer's hook
        library_map(model, x, "gradcam", 2)
    result = explain(model, x, target_class=2)
    assert np.abs(result.heatmap - reference).max() < 1e-4


def test_inference_copy_is_independent_of_the_original() -> None:
    model = make_model("lenet").train()
    model.classifier[-1].weight.grad = torch.ones_like(model.classifier[-1].weight)
    twin = inference_copy(model)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert not twin.training and all(p.grad is None for p in twin.parameters())
    with torch.no_grad():
        twin.classifier[-1].weight.zero_()
    assert model.classifier[-1].weight.abs().sum() > 0


# --- side effects, errors, threads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "eigencam", "ablationcam", "scorecam"])
def test_model_is_left_exactly_as_found(method: str) -> None:
    model, x = make_model("lenet"), make_input("lenet")
    model.train()
    model.features[0].eval()  # a mixed state must come back mixed, not all-train or all-eval
    model.features[0].requires_grad_(False)
    head = model.classifier[-1].weight
    head.grad = torch.full_like(head, 7.0)
    target = model.features[-1]
    before = model_state(model)
    explain(model, x, method=method)
    assert model_state(model) == before
    assert torch.equal(head.grad, torch.full_like(head, 7.0))  # the library's path would zero it
    assert model.features[-1] is target  # Ablation-CAM swaps it out while it runs


def test_a_failed_call_leaves_no_hook_and_the_same_state() -> None:
    model, x = make_model("resnet18").train(), make_input("resnet18")
    before = model_state(model)
    with pytest.raises(ExplainError, match="out of range: the model has 4 classes"):
        explain(model, x, target_class=4)
    with pytest.raises(ExplainError, match="out of range"):
        explain(model, x, method="scorecam", target_class=-1)
    with pytest.raises(ExplainError, match=r"feature map, got \(1, 4\)"):
        explain(model, x, target_layer=model.fc)
    assert model_state(model) == before


def test_bad_arguments_are_explained() -> None:
    model, x = make_model("lenet"), make_input("lenet")
    cases = [
        ({"input_tensor": x.repeat(2, 1, 1, 1)}, "one image"),
        ({"input_tensor": x[0]}, "one image"),
        ({"input_tensor": (x * 255).to(torch.uint8)}, "floats"),
        ({"target_class": True}, "class index"),
        ({"out_size": (0, 5)}, "out_size"),
        ({"out_size": (5.5, 5)}, "out_size"),
        ({"out_size": 64}, "out_size"),
        ({"target_layer": nn.Conv2d(3, 3, 1)}, "never ran"),
        ({"method": "gradcam+++"}, "unknown CAM method"),
    ]
    for overrides, message in cases:
        kwargs = {"input_tensor": x, **overrides}
        with pytest.raises(ExplainError, match=message):
            explain(model, kwargs.pop("input_tensor"), **kwargs)
    with pytest.raises(ExplainError, match="pass target_layer="):
        explain(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2)), x)
    assert issubclass(ExplainError, CoreError)


def test_a_layer_the_output_does_not_depend_on_is_refused() -> None:
    class SideBranch(TinyLeNet):
        def __init__(self) -> None:
            super().__init__()
            self.side = nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.side(x)  # computed, then thrown away
            return super().forward(x)

    model = SideBranch().eval()
    with pytest.raises(ExplainError, match="does not depend"):
        explain(model, make_input("lenet"), target_layer=model.side)


def test_target_layer_is_found_by_structure_and_by_registry() -> None:
    resnet, mobilenet, lenet = make_model("resnet18"), make_model("mobilenet_v2"), make_model("lenet")
    assert find_target_layer(resnet) is resnet.layer4[-1]
    assert find_target_layer(mobilenet) is mobilenet.features[-1]
    assert find_target_layer(lenet) is lenet.features[-1]
    from core.train.models import build_model

    registered = build_model("lenet", 3).eval()
    x = torch.randn(1, 3, 16, 16)
    by_arch = explain(registered, x, arch="lenet")
    by_layer = explain(registered, x, target_layer=registered.features[-1])
    np.testing.assert_array_equal(by_arch.heatmap, by_layer.heatmap)


def test_works_inside_the_callers_inference_mode() -> None:
    model, x = make_model("lenet"), make_input("lenet")
    expected = explain(model, x).heatmap
    with torch.inference_mode():
        inside = explain(model, x.clone()).heatmap
    np.testing.assert_array_equal(inside, expected)


def assert_same_map(heatmap: np.ndarray, expected: np.ndarray) -> None:
    """The same map up to float rounding: within 1e-4 of the map's own scale (its peak), not bitwise. Threads that
    share the cores may sum in another order: 140 of 4,096 cells once differed by up to 1.6e-6 on a busy 2-core
    machine, where an absolute 1e-6 failed; a map of another class or method differs by tenths."""
    np.testing.assert_allclose(heatmap, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


def test_two_threads_on_one_model_get_the_serial_results() -> None:
    model, x = make_model("resnet18"), make_input("resnet18")
    jobs = [(method, target) for method in ("gradcam", "gradcam++", "eigencam", "layercam") for target in (0, 2)]
    serial = {job: explain(model, x, method=job[0], target_class=job[1]).heatmap for job in jobs}
    results: dict[tuple[int, tuple[str, int]], np.ndarray] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for job in jobs[worker::2] + jobs[1 - worker :: 2]:  # both threads cover every job, in other orders
                results[worker, job] = explain(model, x, method=job[0], target_class=job[1]).heatmap
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 2 * len(jobs)
    for (_, job), heatmap in results.items():
        assert_same_map(heatmap, serial[job])
    with pytest.raises(AssertionError):  # a mix-up (another class's map) is far outside that tolerance
        assert_same_map(serial["gradcam", 0], serial["gradcam", 2])
    assert model_state(model)[2] == 0


def test_a_plain_forward_in_another_thread_is_not_cut() -> None:
    model, x = inference_copy(make_model("resnet18")), make_input("resnet18")
    expected = model(x)
    outputs: list[torch.Tensor] = []
    stop = threading.Event()

    def forwards() -> None:
        while not stop.is_set():
            outputs.append(model(x))

    other = threading.Thread(target=forwards)
    other.start()
    try:
        for _ in range(5):
            explain(model, x)
    finally:
        stop.set()
        other.join()
    assert outputs and all(not out.requires_grad and torch.allclose(out, expected, atol=1e-5) for out in outputs)


# --- overlay ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
def test_overlay_is_rgb_at_the_images_own_size(mode: str) -> None:
    image = Image.new("RGB", (37, 23), (90, 120, 30)).convert(mode)
    heat = np.random.default_rng(0).random((7, 7)).astype(np.float32)
    result = overlay(image, heat, opacity=0.4, colormap="viridis")
    assert result.mode == "RGB" and result.size == (37, 23)


def test_overlay_opacity_ends_and_colormaps() -> None:
    image = Image.new("RGB", (8, 6), (10, 200, 30))
    heat = np.zeros((6, 8), np.float32)
    heat[2, 5] = 1.0
    np.testing.assert_array_equal(np.asarray(overlay(image, heat, opacity=0.0)), np.asarray(image))
    for name in COLORMAPS:
        colours = np.asarray(overlay(image, heat, opacity=1.0, colormap=name))
        np.testing.assert_array_equal(colours, colorize(heat, name))
        assert not np.array_equal(colours[2, 5], colours[0, 0])  # hot differs from cold
    jet = colorize(np.array([[0.0, 1.0]]), "jet")
    assert jet[0, 0, 2] > jet[0, 0, 0] and jet[0, 1, 0] > jet[0, 1, 2]  # jet: blue cold, red hot
    np.testing.assert_array_equal(colorize(np.array([[0.0, 1.0]]), "gray"), [[[0, 0, 0], [255, 255, 255]]])


def test_overlay_refuses_bad_options() -> None:
    image, heat = Image.new("RGB", (4, 4)), np.zeros((4, 4), np.float32)
    with pytest.raises(OverlayError, match="choose one of: jet"):
        overlay(image, heat, colormap="rainbow-unicorn")
    with pytest.raises(OverlayError, match="between 0 and 1"):
        overlay(image, heat, opacity=1.5)
    with pytest.raises(OverlayError, match="2-D"):
        overlay(image, np.zeros((1, 4, 4)))


def test_side_by_side_and_peak() -> None:
    left, right = Image.new("L", (30, 20), 50), Image.new("RGB", (40, 10), (1, 2, 3))
    both = side_by_side(left, right, gap=5)
    assert both.mode == "RGB" and both.size == (75, 20)
    assert both.getpixel((50, 10)) == (1, 2, 3) and both.getpixel((32, 10)) == (255, 255, 255)
    heat = np.zeros((9, 11), np.float32)
    heat[6, 2] = 0.8
    assert peak(heat) == (6, 2)
    assert peak(np.full((3, 3), np.nan)) is None


def test_overlay_of_a_real_result_on_the_original_photo() -> None:
    model, photo = ColourNet().eval(), Image.new("RGB", (60, 45))
    x = colour_picture()
    result = explain(model, x, out_size=(photo.height, photo.width))
    shown = overlay(photo, result.heatmap)
    assert shown.size == photo.size
    y, x_ = peak(result.heatmap)
    assert np.asarray(shown)[y, x_, 0] > np.asarray(shown)[y, x_, 2]  # red (hot) where the peak is


# --- the shapes dataset ----------------------------------------------------------------------------------------------


def test_shapes_dataset_has_known_boxes_and_is_reproducible(tmp_path: Path) -> None:
    boxes = make_shapes_dataset(tmp_path / "a", n_per_class=7, size=48, seed=5)
    again = make_shapes_dataset(tmp_path / "b", n_per_class=7, size=48, seed=5)
    assert boxes == again and split_counts(7) == {"train": 5, "val": 1, "test": 1}
    assert len(boxes) == 7 * len(CLASSES)
    assert json.loads((tmp_path / "a" / "boxes.json").read_text()) == {k: list(v) for k, v in boxes.items()}
    for relative, (x0, y0, x1, y1) in boxes.items():
        split, label, _ = relative.split("/")
        assert split in ("train", "val", "test") and label in CLASSES
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48 and x1 - x0 >= 6 and y1 - y0 >= 6
        image = Image.open(tmp_path / "a" / relative)
        assert image.mode == "RGB" and image.size == (48, 48)
        assert (tmp_path / "b" / relative).read_bytes() == (tmp_path / "a" / relative).read_bytes()
    assert make_shapes_dataset(tmp_path / "c", n_per_class=7, size=48, seed=6) != boxes
