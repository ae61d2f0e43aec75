"""core.train.models: every architecture builds, trains a step, freezes what it says, and loads weights safely.

Weights files are real files written by the test (random state dicts, a pickle that would run code); the
torch cache is a temporary ``TORCH_HOME``. Nothing is mocked and nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from core.common.errors import ChoiceError, CoreError
from core.train.archs import (
    ARCHS,
    FREEZE_MODES,
    EvalModeBatchNorm2d,
    ModelError,
    cam_candidates,
    cam_layer_for,
    choose_image_size,
)
from core.train.models import (
    apply_freeze,
    build_model,
    cam_layer,
    count_parameters,
    describe,
    head_parameters,
    param_groups,
    set_train_mode,
)
from core.train.weights import OFFLINE_ENV, WeightsUnavailable, imagenet_weights_file, load_verified_state_dict

ALL_ARCHS = list(ARCHS)
HEAVY = {"resnet101", "resnet152"}  # forward + backward of these take seconds on 2 cores


@pytest.fixture(autouse=True)
def _one_thread_seeded() -> Iterator[None]:
    """One torch thread: these batches are tiny (a second thread adds little), and on a busy 2-core box a
    2-thread OpenMP team was measured 5-15x slower than one thread. Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache: ``torch.hub.get_dir()`` follows ``TORCH_HOME`` at every call."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    return home


def _arch_params(archs: list[str]) -> list:
    return [pytest.param(a, marks=pytest.mark.slow) if a in HEAVY else a for a in archs]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class RunsCode:
    """Unpickling this creates a folder: the proof that a loader executed code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


# --- building ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", _arch_params(ALL_ARCHS))
def test_every_arch_builds_and_trains_a_step_at_its_small_size(arch: str) -> None:
    side = choose_image_size(arch, 8)
    for num_classes in (3, 10):
        model = build_model(arch, num_classes)
        set_train_mode(model)
        logits = model(torch.randn(2, 3, side, side))
        assert logits.shape == (2, num_classes)
        nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
        assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_the_explained_map_tiles_the_image_at_every_chosen_size(arch: str) -> None:
    """At each side the recipe picks, the explained layer's map has whole cells over the whole image (no half
    cell of padding at the border) and at least 4x4 of them (7x7 for the torchvision networks)."""
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = build_model(arch, 10).eval()
    # Tiny, small, odd and huge images; each distinct chosen side is run once (a meta forward costs ~0.5 s).
    for side in sorted({choose_image_size(arch, typical) for typical in (1, 8, 30, 97, 130, 200, 4000)}):
        seen = {}
        handle = cam_layer(model, arch, side).register_forward_hook(
            lambda _m, _i, out, seen=seen: seen.update(shape=out.shape)
        )
        model(torch.empty(1, 3, side, side, device="meta"))
        handle.remove()
        height, width = seen["shape"][-2:]
        stride = dict(cam_candidates(arch))[cam_layer_for(arch, side)[0]]
        assert len(seen["shape"]) == 4 and height == width >= (4 if arch == "lenet" else 7), side
        assert side % stride == 0 and height * stride == side, side  # the map covers the image exactly


def test_choose_image_size_upscales_small_and_caps_large_images() -> None:
    assert choose_image_size("resnet18", 8) == 112  # layer3 (stride 16) 7x7
    assert choose_image_size("resnet50", 100) == 112
    assert choose_image_size("resnet50", 130) == 144  # rounded up to a multiple of layer3's stride 16
    assert choose_image_size("resnet34", 200) == 224  # layer4 (stride 32) is 7x7 from 193 px: a multiple of 32
    assert choose_image_size("mobilenet_v2", 224) == 224
    assert choose_image_size("resnet18", 3000) == 224
    assert choose_image_size("lenet", 8) == 16  # 8x8 digits: a 4x4 CAM map
    assert choose_image_size("lenet", 30) == 32
    assert choose_image_size("lenet", 64) == 32  # its last units see 18 px: larger inputs outgrow them
    assert choose_image_size("lenet", 500) == 32
    with pytest.raises(ModelError, match="positive"):
        choose_image_size("resnet18", 0)


def test_cam_layer_is_the_last_feature_block() -> None:
    resnet = build_model("resnet18", 3)
    assert cam_layer(resnet, "resnet18") is resnet.layer4[-1]
    mobile = build_model("mobilenet_v2", 3)
    assert cam_layer(mobile, "mobilenet_v2") is mobile.features[-1]
    lenet = build_model("lenet", 3)
    assert cam_layer(lenet, "lenet") is lenet.features[-1]
    out = lenet.features(torch.randn(2, 3, 16, 16))  # the target's output is the last activation: 4-D, >= 0
    assert out.dim() == 4 and out.min() >= 0


def test_unknown_values_are_refused_with_the_allowed_ones_named(tmp_path: Path) -> None:
    with pytest.raises(ChoiceError, match="arch 'vgg16': choose one of resnet18.*lenet"):
        build_model("vgg16", 3)
    with pytest.raises(ChoiceError, match="freeze 'everything': choose one of none, backbone, all-but-last"):
        build_model("resnet18", 3, freeze="everything")
    with pytest.raises(ModelError, match="'none' or 'imagenet'"):
        build_model("resnet18", 3, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ModelError, match="LeNet.*has no ImageNet weights"):
        build_model("lenet", 3, weights="imagenet")
    with pytest.raises(ModelError, match="at least 2 classes"):
        build_model("lenet", 1)
    assert issubclass(ModelError, CoreError) and issubclass(WeightsUnavailable, CoreError)


def test_one_channel_input_replaces_the_first_convolution() -> None:
    for arch in ("resnet18", "mobilenet_v3_small", "lenet"):
        model = build_model(arch, 4, in_channels=1)
        side = choose_image_size(arch, 8)
        assert model.eval()(torch.randn(2, 1, side, side)).shape == (2, 4)


@pytest.mark.parametrize("arch", _arch_params(ALL_ARCHS))
def test_gflops_in_the_registry_match_torch_flop_counter(arch: str) -> None:
    with torch.device("meta"):  # the counter needs shapes only
        model = build_model(arch, 1000)
        x = torch.empty(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() / 1e9 == pytest.approx(ARCHS[arch].gflops, rel=0.02)


def test_describe_and_count_parameters() -> None:
    text = describe("resnet18")
    assert "ResNet-18" in text and "11.7 M parameters" in text and "resnet18-f37072fd.pth" in text
    assert "no pretrained weights" in describe("lenet")
    model = build_model("resnet18", 10, freeze="backbone")
    total, trainable = count_parameters(model)
    assert trainable == 512 * 10 + 10 and total > 11_000_000


# --- freezing ------------------------------------------------------------------------------------------

# What must change in one optimizer step, per arch and freeze mode: state-dict key prefixes, written out
# here instead of taken from the registry so the test checks the registry too.
TRAINABLE = {
    "resnet18": {"backbone": ("fc.",), "all-but-last": ("layer4.", "fc.")},
    "mobilenet_v2": {
        "backbone": ("classifier.1.",),
        "all-but-last": tuple(f"features.{i}." for i in range(14, 19)) + ("classifier.1.",),
    },
    "mobilenet_v3_small": {
        "backbone": ("classifier.3.",),
        "all-but-last": tuple(f"features.{i}." for i in range(9, 13)) + ("classifier.3.",),
    },
    "lenet": {"backbone": ("classifier.2.",), "all-but-last": ("features.4.", "classifier.2.")},
}


def _one_sgd_step(model: nn.Module, arch: str, side: int, use_set_train_mode: bool) -> None:
    if use_set_train_mode:
        set_train_mode(model)
    else:
        model.train()  # a training loop that knows nothing about freezing
    optimizer = torch.optim.SGD(param_groups(model, arch, lr=0.5, backbone_lr_factor=1.0))
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, side, side)), torch.tensor([0, 1, 2, 0]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("arch", list(TRAINABLE))
@pytest.mark.parametrize("freeze", FREEZE_MODES)
def test_an_optimizer_step_changes_only_what_the_freeze_mode_trains(arch: str, freeze: str) -> None:
    model = build_model(arch, 3, freeze=freeze)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _one_sgd_step(model, arch, choose_image_size(arch, 8), use_set_train_mode=freeze != "backbone")
    prefixes = ("",) if freeze == "none" else TRAINABLE[arch][freeze]
    for key, after in model.state_dict().items():
        should_change = key.startswith(prefixes)
        changed = not torch.equal(before[key], after)
        # Weights, biases and BatchNorm running statistics alike: frozen means nothing moves.
        assert changed == should_change, f"{arch} freeze={freeze}: {key} {'changed' if changed else 'did not'}"


def test_frozen_batchnorm_stays_in_eval_mode_through_model_train() -> None:
    model = build_model("resnet18", 3, freeze="all-but-last")
    model.train()
    assert isinstance(model.bn1, EvalModeBatchNorm2d) and not model.bn1.training
    assert not model.layer3[0].bn1.training
    assert model.layer4[0].bn1.training and type(model.layer4[0].bn1) is nn.BatchNorm2d
    apply_freeze(model, "resnet18", "none")  # unfreezing gives ordinary BatchNorm back
    model.train()
    assert type(model.bn1) is nn.BatchNorm2d and model.bn1.training
    assert all(p.requires_grad for p in model.parameters())


def test_set_train_mode_also_covers_a_model_frozen_by_hand() -> None:
    model = build_model("lenet", 3)
    for p in model.features.parameters():
        p.requires_grad_(False)
    set_train_mode(model, "backbone")
    assert not model.features[0][1].training and model.classifier.training
    with pytest.raises(ChoiceError, match="freeze 'half'"):
        set_train_mode(model, "half")


def test_param_groups_give_the_backbone_a_scaled_learning_rate() -> None:
    model = build_model("resnet18", 5)
    groups = param_groups(model, "resnet18", lr=0.01, backbone_lr_factor=0.1)
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == 0.01 and by_name["backbone"]["lr"] == pytest.approx(0.001)
    assert {id(p) for p in by_name["head"]["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    assert sum(p.numel() for g in groups for p in g["params"]) == count_parameters(model)[1]
    optimizer = torch.optim.AdamW(groups)  # torch accepts the groups, extra "name" key included
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(0.001), 0.01]

    frozen = build_model("mobilenet_v2", 5, freeze="backbone")
    only_head = param_groups(frozen, "mobilenet_v2", lr=0.01, backbone_lr_factor=0.1)
    assert [g["name"] for g in only_head] == ["head"]
    assert {id(p) for p in only_head[0]["params"]} == {id(p) for p in head_parameters(frozen, "mobilenet_v2")}
    with pytest.raises(ModelError, match="lr must be > 0"):
        param_groups(model, "resnet18", lr=0.0, backbone_lr_factor=0.1)


# --- ImageNet weights from the torch cache ---------------------------------------------------------------


def _internet_reachable() -> bool:
    try:
        socket.create_connection(("download.pytorch.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


def test_imagenet_weights_offline_name_the_file_url_and_folder(torch_home: Path, monkeypatch) -> None:
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(WeightsUnavailable) as info:
        build_model("resnet18", 3, weights="imagenet")
    message = str(info.value)
    folder = torch_home / "hub" / "checkpoints"
    assert "resnet18-f37072fd.pth" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert str(folder) in message
    assert info.value.weights_file.path == folder / "resnet18-f37072fd.pth"


def test_imagenet_weights_without_network_fail_fast_and_leave_nothing(torch_home: Path) -> None:
    if _internet_reachable():
        pytest.skip("the internet is reachable here: this test is about the offline answer")
    with pytest.raises(WeightsUnavailable, match="mobilenet_v2-7ebf99e0.pth") as info:
        build_model("mobilenet_v2", 3, weights="imagenet")
    assert str(torch_home / "hub" / "checkpoints") in str(info.value)
    folder = torch_home / "hub" / "checkpoints"
    assert not folder.exists() or not any(folder.iterdir())  # no partial download left behind


def _random_resnet18_file(folder: Path, name: str, num_classes: int = 1000) -> tuple[Path, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    state = build_model("resnet18", num_classes).state_dict()
    path = folder / name
    torch.save(state, path)
    return path, state


def test_a_cached_file_whose_content_does_not_match_its_name_is_refused(torch_home: Path) -> None:
    wf = imagenet_weights_file("resnet18")
    _random_resnet18_file(wf.folder, wf.file_name)  # right name, wrong content: a damaged or planted file
    with pytest.raises(ModelError, match="not the official file") as info:
        build_model("resnet18", 3, weights="imagenet")
    assert not isinstance(info.value, WeightsUnavailable)
    assert str(wf.path) in str(info.value) and "f37072fd" in str(info.value)


def test_a_file_named_with_its_own_hash_loads(tmp_path: Path) -> None:
    path, state = _random_resnet18_file(tmp_path, "draft.pth")
    named = path.with_name(f"resnet18-{_sha256(path)[:8]}.pth")  # torchvision's naming, hash computed here
    path.rename(named)
    loaded = load_verified_state_dict(named)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    model = build_model("resnet18", 3, weights=str(named))  # the same file as a local weights file
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert model.fc.weight.shape == (3, 512)


def test_a_planted_pickle_never_runs(tmp_path: Path, torch_home: Path) -> None:
    marker = tmp_path / "code-ran"
    wf = imagenet_weights_file("resnet34")
    wf.folder.mkdir(parents=True)
    torch.save({"conv1.weight": RunsCode(marker)}, wf.path)  # under the official name: hash check refuses it
    with pytest.raises(ModelError, match="not the official file"):
        build_model("resnet34", 3, weights="imagenet")
    own_hash = tmp_path / "payload.pth"
    torch.save({"conv1.weight": RunsCode(marker)}, own_hash)
    named = own_hash.rename(tmp_path / f"resnet34-{_sha256(own_hash)[:8]}.pth")  # hash ok: weights_only refuses
    with pytest.raises(ModelError, match="holds code"):
        load_verified_state_dict(named)
    with pytest.raises(ModelError, match="holds code"):
        build_model("resnet34", 3, weights=str(named))
    assert not marker.exists()


# --- local weights files -----------------------------------------------------------------------------------


def test_local_weights_with_another_head_size_load_everything_but_the_head(tmp_path: Path) -> None:
    path, state = _random_resnet18_file(tmp_path, "ten-classes.pth", num_classes=10)
    three = build_model("resnet18", 3, weights=str(path))
    body = [k for k in state if not k.startswith("fc.")]
    assert all(torch.equal(three.state_dict()[k], state[k]) for k in body)
    assert three.fc.weight.shape == (3, 512)
    ten = build_model("resnet18", 10, weights=path)  # same head size: the head loads too; a Path works
    assert torch.equal(ten.fc.weight, state["fc.weight"])


def test_local_weights_of_another_arch_get_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(build_model("resnet34", 10).state_dict(), path)
    with pytest.raises(ModelError, match=r"does not hold ResNet-18 weights \(it looks like resnet34 weights\)"):
        build_model("resnet18", 10, weights=str(path))
    lenet = tmp_path / "lenet.pth"
    torch.save(build_model("lenet", 10).state_dict(), lenet)
    with pytest.raises(ModelError, match="does not hold MobileNetV2 weights.*lenet"):
        build_model("mobilenet_v2", 10, weights=str(lenet))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([1, 2, 3], "not a state dict"),
        ({"epochs": 3}, "not a state dict"),
        (b"\x00garbage" * 100, "could not be read"),
    ],
)
def test_a_local_file_that_is_not_a_state_dict_is_refused(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ModelError, match=message):
        build_model("lenet", 3, weights=str(path))


def test_a_whole_pickled_model_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(build_model("lenet", 3), path)  # torch.save(model): a pickle of classes, not plain data
    with pytest.raises(ModelError, match=r"save model.state_dict\(\)"):
        build_model("lenet", 3, weights=str(path))


def test_local_weights_from_a_ddp_checkpoint_and_for_grey_inputs(tmp_path: Path) -> None:
    source = build_model("resnet18", 5)
    path = tmp_path / "checkpoint.pt"
    ddp_keys = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"format": 1, "arch": "resnet18", "model": ddp_keys}, path)  # a studio checkpoint of a DDP run
    model = build_model("resnet18", 5, weights=str(path))
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    grey = build_model("resnet18", 5, weights=str(path), in_channels=1)
    # One channel: the RGB filters are summed, so a grey image replicated to RGB gives the same response.
    assert torch.allclose(grey.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True), atol=1e-6)


def test_weights_survive_a_copy_of_the_cache_folder(tmp_path: Path, torch_home: Path) -> None:
    """A verified file moved to another cache still verifies: the check depends on name and content only."""
    path, _ = _random_resnet18_file(tmp_path, "x.pth")
    named = path.rename(tmp_path / f"resnet18-{_sha256(path)[:8]}.pth")
    copy = torch_home / "elsewhere" / named.name
    copy.parent.mkdir(parents=True)
    shutil.copy(named, copy)
    assert load_verified_state_dict(copy).keys() == load_verified_state_dict(named).keys()


# --- LeNet on real digits ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_lenet_learns_the_digits_at_the_chosen_size() -> None:
    """sklearn's 8x8 digits through the studio's own eval transform at 16 px: about 99% test accuracy."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from core.train.tensors import preprocess

    digits = load_digits()
    pixels = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    side = choose_image_size("lenet", 8)
    x = preprocess([Image.fromarray(p, mode="L") for p in pixels], side, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    y = torch.tensor(digits.target)
    train, test = train_test_split(np.arange(len(y)), test_size=0.15, stratify=digits.target, random_state=0)
    model = build_model("lenet", 10)
    epochs, batch = 12, 64
    optimizer = torch.optim.Adam(param_groups(model, "lenet", lr=2e-3))
    steps = epochs * -(-len(train) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    for _ in range(epochs):
        set_train_mode(model)
        order = torch.tensor(train)[torch.randperm(len(train))]
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
            schedule.step()
    with torch.inference_mode():
        accuracy = (model.eval()(x[test]).argmax(1) == y[test]).float().mean().item()
    assert accuracy >= 0.97
