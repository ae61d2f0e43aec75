"""core.train.checkpoints: round trips through weights-only loading, atomic writes, damaged files, inference.

Every file is really written and read; the failing write is a real one (a file-size limit on this process),
and the planted pickle would really create a folder if it were ever unpickled.
"""

from __future__ import annotations

import math
import os
import random
import resource
import signal
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from core.common.errors import ChoiceError, CoreError
from core.images.opener import open_image
from core.train.archs import ModelError, default_mean_std
from core.train.checkpoints import (
    REQUIRED_KEYS,
    Checkpoint,
    CheckpointError,
    InferenceModel,
    capture_rng,
    device_for,
    load_checkpoint,
    load_for_inference,
    restore_rng,
    save_checkpoint,
    to_plain,
)
from core.train.config import TrainConfig
from core.train.models import build_model
from core.train.runplan import DataFacts, resolve
from core.train.tensors import eval_transform, preprocess, resize_to_tensor
from tests import imagefactory as f

CLASSES = ["cat", "dog", "bird"]
CONTRACT_KEYS = {"format", "model", "arch", "num_classes", "classes", "image_size", "mean", "std", "freeze", "epoch",
                 "step", "optimizer", "scheduler", "scaler", "rng", "metrics", "plan"}  # fmt: skip
PLAN = resolve(TrainConfig(dataset="/data/pets", arch="lenet", image_size=16, seed=3).validate(), DataFacts(16, False))


@pytest.fixture(autouse=True)
def _one_thread_seeded() -> Iterator[None]:
    """One torch thread (tiny batches; a 2-thread team is several times slower on a busy 2-core box)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


class RunsCode:
    """Unpickling this creates a folder: the proof that a loader executed code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _trained_state(steps: int = 2) -> tuple[nn.Module, Checkpoint]:
    """A LeNet after a few real SGD + one-cycle steps, and its checkpoint (numpy values included)."""
    model = build_model("lenet", len(CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    mean, std = default_mean_std()
    state = Checkpoint.of(
        model, PLAN, CLASSES, mean, std, epoch=1, step=steps, optimizer=optimizer, scheduler=scheduler,
        metrics={"val_acc": np.float64(0.75), "n_seen": np.int64(8), "per_class": np.array([0.5, 1.0, 0.75]),
                 "where": Path("/data/pets"), "flip": np.bool_(True), "sizes": (16, 16)},
    )  # fmt: skip
    return model, state


def _partial_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- round trip --------------------------------------------------------------------------------------------


def test_round_trip_keeps_every_contract_key_as_plain_data(tmp_path: Path) -> None:
    model, state = _trained_state()
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, state)
    on_disk = torch.load(path, weights_only=True)  # the file's contract, as any script reads it
    assert CONTRACT_KEYS <= on_disk.keys() and on_disk["format"] == 2
    assert (on_disk["arch"], on_disk["image_size"], on_disk["num_classes"]) == ("lenet", 16, 3)  # from the plan
    ck = load_checkpoint(path)
    assert all(torch.equal(ck.weights[k], v) for k, v in model.state_dict().items())
    assert ck.classes == CLASSES and ck.image_size == 16 and ck.step == 2 and ck.plan == PLAN
    # numpy values come back as Python numbers (np.float64 would otherwise be refused by weights_only)
    assert type(ck.metrics["val_acc"]) is float and type(ck.metrics["n_seen"]) is int
    assert torch.equal(ck.metrics["per_class"], torch.tensor([0.5, 1.0, 0.75], dtype=torch.float64))
    assert (ck.metrics["where"], ck.metrics["flip"], ck.metrics["sizes"]) == ("/data/pets", True, (16, 16))


def test_a_checkpoint_from_before_plans_loads_into_todays_types(tmp_path: Path) -> None:
    """Format 1: the resolved settings as ``config`` beside ``image_size`` (what the old workspaces hold), or no
    settings at all (a checkpoint a script wrote): read into a plan, nothing decided again."""
    _, state = _trained_state(steps=1)
    old = {k: v for k, v in state.to_state().items() if k != "plan"}
    settings = {**PLAN.settings.to_dict(), "schedule": "onecycle", "epochs": 4, "lr": 0.05, "ranks": None}
    del settings["ranks"]  # a key the older version did not have
    torch.save(to_plain({**old, "format": 1, "image_size": 16, "config": {**settings, "removed_option": 1}}),
               tmp_path / "v1.pt")  # fmt: skip
    plan = load_checkpoint(tmp_path / "v1.pt").plan
    assert (plan.arch, plan.image_size, plan.lr, plan.schedule, plan.facts) == ("lenet", 16, 0.05, "onecycle", None)
    assert (plan.epochs.kind, plan.epochs.epochs) == ("fixed", 4)
    torch.save(to_plain({**old, "format": 1, "config": {}}), tmp_path / "script.pt")
    bare = load_checkpoint(tmp_path / "script.pt")
    assert (bare.arch, bare.image_size, bare.classes) == ("lenet", 16, CLASSES)


def test_optimizer_and_scheduler_resume_from_a_checkpoint(tmp_path: Path) -> None:
    model, state = _trained_state()
    save_checkpoint(tmp_path / "ck.pt", state)
    ck = load_checkpoint(tmp_path / "ck.pt")
    resumed = build_model("lenet", 3)
    resumed.load_state_dict(ck.weights)
    optimizer = torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    optimizer.load_state_dict(ck.optimizer)
    scheduler.load_state_dict(ck.scheduler)
    assert scheduler.last_epoch == 2 and optimizer.param_groups[0]["lr"] == pytest.approx(state.optimizer
                                                                                          ["param_groups"][0]["lr"])  # fmt: skip
    first = next(iter(optimizer.state.values()))["momentum_buffer"]
    assert torch.equal(first, next(iter(state.optimizer["state"].values()))["momentum_buffer"])


def test_rng_states_survive_weights_only_and_replay_the_same_numbers(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's legacy state
    model, state = _trained_state(steps=1)
    state.rng = capture_rng()
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3))
    save_checkpoint(tmp_path / "rng.pt", state)
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng(load_checkpoint(tmp_path / "rng.pt").rng)
    again = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3))
    assert again[0] == expected[0] and again[1] == expected[1] and torch.equal(again[2], expected[2])


def test_to_plain_converts_numpy_and_paths_and_names_what_it_refuses() -> None:
    assert to_plain({"a": [np.float32(1.5), (np.int8(2), Path("x"))]}) == {"a": [1.5, (2, "x")]}
    assert math.isnan(to_plain(np.float64("nan")))
    with pytest.raises(CheckpointError, match=r"state\['config'\]\['callback'\]: a function is not plain data"):
        to_plain({"config": {"callback": lambda: None}})
    with pytest.raises(CheckpointError, match="array of Python objects"):
        to_plain(np.array([object()]))


# --- atomic writes -----------------------------------------------------------------------------------------


def test_an_unsaveable_value_writes_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    _, state = _trained_state(steps=1)
    path = tmp_path / "last.pt"
    save_checkpoint(path, state)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="a function is not plain data"):
        save_checkpoint(path, replace(state, metrics={"transform": lambda x: x}))
    assert path.read_bytes() == before and _partial_files(tmp_path) == []
    with pytest.raises(CheckpointError, match="lacks arch, classes"):
        save_checkpoint(tmp_path / "other.pt", {"model": {}, "num_classes": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_write_that_fails_midway_leaves_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    """A real failure in the middle of torch.save: the file-size limit stops the write after 64 KiB."""
    _, state = _trained_state(steps=1)
    path = tmp_path / "last.pt"
    save_checkpoint(path, state)
    before = path.read_bytes()
    big = replace(state, weights={**state.weights, "extra": torch.zeros(1 << 20)})  # 4 MiB of data
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 65536, old_limit[1]))
        with pytest.raises(Exception) as info:  # noqa: B017 - the type is asserted below, with a clear message
            save_checkpoint(path, big)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.read_bytes() == before and _partial_files(tmp_path) == []
    assert isinstance(info.value, CheckpointError), f"a raw {type(info.value).__name__} escaped: {info.value}"
    assert load_checkpoint(path).step == 1


# --- damaged and foreign files ------------------------------------------------------------------------------


def _damaged(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.pt"
    _, state = _trained_state(steps=1)
    save_checkpoint(path, state)
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(os.urandom(4096))
    elif kind == "bitflip":  # one flipped byte inside a tensor: torch.load would not notice, the zip CRC does
        middle = _middle_of_largest_member(path)
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    elif kind == "text":
        path.write_text("model: resnet18\n")
    return path


def _middle_of_largest_member(path: Path) -> int:
    """The file offset of the middle byte of the archive's largest member (a tensor's data), wherever the
    format's alignment padding puts it: its local header is 30 bytes, then its name and its extra field."""
    with zipfile.ZipFile(path) as archive:
        largest = max(archive.infolist(), key=lambda member: member.file_size)
    header = path.read_bytes()[largest.header_offset : largest.header_offset + 30]
    name_length, extra_length = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    return largest.header_offset + 30 + name_length + extra_length + largest.file_size // 2


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage", "bitflip", "text"])
def test_a_damaged_checkpoint_gives_a_checkpoint_error(tmp_path: Path, kind: str) -> None:
    path = _damaged(kind, tmp_path)
    with pytest.raises(CheckpointError, match=f"{kind}.pt") as info:
        load_checkpoint(path)
    assert "Traceback" not in str(info.value) and len(str(info.value)) < 200
    assert issubclass(CheckpointError, CoreError)


def test_missing_foreign_and_newer_files_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save(build_model("lenet", 3).state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not a studio checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")
    _, state = _trained_state(steps=1)
    torch.save(to_plain({**state.to_state(), "format": 3}), tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="format 3"):
        load_checkpoint(tmp_path / "newer.pt")
    torch.save({"format": 1, "arch": "lenet"}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="lacks model"):
        load_checkpoint(tmp_path / "partial.pt")


def test_a_checkpoint_with_code_inside_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    _, state = _trained_state(steps=1)
    torch.save({**state.to_state(), "metrics": RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="holds code or Python objects"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_for_inference(tmp_path / "evil.pt")
    assert not marker.exists()


# --- the evaluation transform and inference ------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path: Path) -> list[Image.Image]:
    """Real image files of several sizes and modes, opened the studio's way (RGB, upright)."""
    f.write_rgb(tmp_path / "wide.jpg", size=(40, 20), seed=1, fmt="JPEG")
    f.write_gray(tmp_path / "grey.png", size=(8, 8))
    f.write_rgba_png(tmp_path / "alpha.png", size=(30, 30))
    f.write_exif_rotated_jpeg(tmp_path / "rotated.jpg", size=(24, 12))
    return [open_image(tmp_path / name) for name in ("wide.jpg", "grey.png", "alpha.png", "rotated.jpg")]


def test_preprocess_resizes_and_normalises_like_eval_transform(photos: list[Image.Image]) -> None:
    mean, std = default_mean_std()
    batch = preprocess(photos, 32, mean, std)
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == torch.float32
    one_by_one = torch.stack([eval_transform(32, mean, std)(im) for im in photos])
    assert torch.equal(batch, one_by_one)  # one function: evaluation and inference cannot drift
    raw = resize_to_tensor(photos[0], 32)
    assert raw.dtype == torch.uint8 and raw.shape == (3, 32, 32)
    assert torch.allclose(
        batch[0], (raw.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    )
    framed = Image.new("RGB", (40, 20), (255, 255, 255))
    framed.paste((0, 0, 0), (0, 0, 8, 20))  # a black band in the left fifth: outside the centre square
    assert torch.equal(resize_to_tensor(framed, 10), torch.full((3, 10, 10), 255, dtype=torch.uint8))
    white = Image.new("RGB", (5, 7), (255, 255, 255))
    assert torch.allclose(preprocess([white], 8, mean, std)[0, :, 0, 0], (1 - torch.tensor(mean)) / torch.tensor(std))
    grey = preprocess([white], 8, [0.5], [0.5])  # one-channel models get a grey image
    assert grey.shape == (1, 1, 8, 8) and torch.allclose(grey, torch.ones_like(grey))
    with pytest.raises(CoreError, match="no images"):
        preprocess([], 8, mean, std)


def test_load_for_inference_predicts_like_the_trained_model(tmp_path: Path, photos: list[Image.Image]) -> None:
    model, state = _trained_state()
    save_checkpoint(tmp_path / "best.pt", state)
    loaded = load_for_inference(tmp_path / "best.pt", device="cpu")
    assert isinstance(loaded, InferenceModel) and not loaded.model.training
    assert loaded.classes == CLASSES and loaded.image_size == 16 and loaded.device == torch.device("cpu")
    assert loaded.info["epoch"] == 1 and loaded.info["metrics"]["val_acc"] == 0.75
    batch = loaded.preprocess(photos)
    probabilities = loaded.predict(batch)
    assert probabilities.shape == (4, 3)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(4), atol=1e-6)
    with torch.inference_mode():
        expected = model.eval()(batch).softmax(dim=1)
    assert torch.allclose(probabilities, expected, atol=1e-6)
    assert torch.equal(loaded.predict_images(photos), probabilities)


def test_load_for_inference_with_the_documented_default_device(tmp_path: Path) -> None:
    """``load_for_inference(path)``: no device given means auto (it raised AttributeError on None once)."""
    save_checkpoint(tmp_path / "best.pt", _trained_state()[1])
    loaded = load_for_inference(tmp_path / "best.pt")
    assert loaded.device == device_for("auto")
    assert load_for_inference(tmp_path / "best.pt", torch.device("cpu")).device == torch.device("cpu")


def test_load_for_inference_refuses_weights_that_do_not_fit(tmp_path: Path) -> None:
    _, state = _trained_state(steps=1)
    save_checkpoint(tmp_path / "wrong-arch.pt", replace(state, plan=replace(state.plan, arch="mobilenet_v3_small")))
    with pytest.raises(CheckpointError, match="do not fit 'mobilenet_v3_small'"):
        load_for_inference(tmp_path / "wrong-arch.pt", device="cpu")
    save_checkpoint(tmp_path / "classes.pt", {**state.to_state(), "classes": ["cat", "dog"]})
    with pytest.raises(CheckpointError, match="3 outputs but 2 class names"):
        load_for_inference(tmp_path / "classes.pt", device="cpu")


def test_a_ddp_wrapped_state_dict_loads_for_inference(tmp_path: Path) -> None:
    model, state = _trained_state(steps=1)
    state.weights = {f"module.{k}": v for k, v in state.weights.items()}
    save_checkpoint(tmp_path / "ddp.pt", state)
    loaded = load_for_inference(tmp_path / "ddp.pt", device="cpu")
    assert torch.equal(loaded.model.classifier[2].weight, model.classifier[2].weight)


def test_required_keys_are_what_inference_reads() -> None:
    assert set(REQUIRED_KEYS) == {"model", "arch", "num_classes", "classes", "image_size", "mean", "std"}


def test_device_for() -> None:
    assert device_for("cpu") == torch.device("cpu")
    assert device_for().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ChoiceError, match="device 'tpu': choose one of auto, cpu, cuda, cuda:N"):
        device_for("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            device_for("cuda")
