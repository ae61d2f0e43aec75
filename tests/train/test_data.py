"""core.data: splits, the decode-once tensor cache, oversampling, tensor augmentation and batches.

Real image files (tests/imagefactory.py), real decoding; the cache is checked by its decode counter.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.common.errors import ChoiceError, DatasetError
from core.images.opener import open_image
from core.train.batches import Batches, augment_batch, weighted_sampler
from core.train.config import AUGMENTS
from core.train.splits import class_names, make_splits
from core.train.tensors import channel_stats, eval_transform, load_tensors
from tests import imagefactory as f

# --- splits ----------------------------------------------------------------------------------------------------


def manifest(counts: dict[str, int], split: str = "") -> pd.DataFrame:
    rows = [{"path": f"{label}/{i:03d}.png", "label": label, "split": split}
            for label, n in counts.items() for i in range(n)]  # fmt: skip
    return pd.DataFrame(rows, columns=["path", "label", "split"])


def test_make_splits_is_stratified_per_class() -> None:
    splits = make_splits(manifest({"a": 20, "b": 40, "c": 100}), 0.15, 0.15, seed=0)
    table = splits.groupby(["label", "split"]).size().unstack()
    assert table.loc["a"].to_dict() == {"test": 3, "train": 14, "val": 3}
    assert table.loc["b"].to_dict() == {"test": 6, "train": 28, "val": 6}
    assert table.loc["c"].to_dict() == {"test": 15, "train": 70, "val": 15}
    assert list(splits.columns) == ["path", "label", "split"]


def test_make_splits_is_seeded_and_independent_of_row_order() -> None:
    m = manifest({"a": 30, "b": 30})
    first = make_splits(m, seed=1)
    shuffled = make_splits(m.sample(frac=1, random_state=3), seed=1)
    pd.testing.assert_frame_equal(first, shuffled)
    assert not first["split"].equals(make_splits(m, seed=2)["split"])


def test_make_splits_is_stable_when_images_are_added() -> None:
    before = make_splits(manifest({"a": 40}), seed=0).set_index("path")["split"]
    after = make_splits(manifest({"a": 41}), seed=0).set_index("path")["split"]
    moved = (after[before.index] != before).sum()
    assert moved <= 2  # a rounding step may move one image, never a reshuffle


def test_make_splits_respects_split_folders() -> None:
    m = pd.concat([manifest({"a": 5}, "train"), manifest({"a": 2}, "val").assign(path=lambda d: "v" + d["path"]),
                   manifest({"a": 2}, "test").assign(path=lambda d: "t" + d["path"])])  # fmt: skip
    splits = make_splits(m, 0.3, 0.3, seed=0)
    assert splits.set_index("path")["split"].to_dict() == m.set_index("path")["split"].to_dict()


def test_make_splits_carves_a_missing_val_split_from_train_only() -> None:
    m = pd.concat([manifest({"a": 20}, "train"), manifest({"a": 4}, "test").assign(path=lambda d: "t" + d["path"])])
    splits = make_splits(m, 0.25, 0.25, seed=0)
    counts = splits["split"].value_counts().to_dict()
    assert counts == {"train": 15, "val": 5, "test": 4}
    assert set(splits[splits["split"] == "test"]["path"]) == {f"ta/{i:03d}.png" for i in range(4)}


def test_make_splits_keeps_a_training_image_in_every_tiny_class() -> None:
    splits = make_splits(manifest({"one": 1, "two": 2, "three": 3}), 0.34, 0.34, seed=0)
    per_class = splits.groupby("label")["split"].apply(list).to_dict()
    assert per_class["one"] == ["train"]
    assert per_class["two"].count("train") == 1
    assert per_class["three"].count("train") == 1 and len(per_class["three"]) == 3


def test_make_splits_rejects_fractions_that_leave_no_training_data() -> None:
    with pytest.raises(DatasetError, match="val_fraction 0.5 \\+ test_fraction 0.5"):
        make_splits(manifest({"a": 10}), 0.5, 0.5)


def test_class_names_in_reading_order() -> None:
    assert class_names(manifest({"10": 1, "2": 1, "b": 1, "A": 1})) == ["2", "10", "A", "b"]


# --- the tensor cache ------------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for i in range(6):
        f.write_rgb(root / "red" / f"{i}.png", size=(20, 12), color=(220, 30, 30), seed=i)
        f.write_rgb(root / "blue" / f"{i}.jpg", size=(16, 16), color=(30, 30, 220), seed=i)
    return root


def paths_in(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.*"))


def test_load_tensors_decodes_to_square_uint8_like_the_eval_transform(folder: Path) -> None:
    paths = paths_in(folder)
    ts = load_tensors(folder, paths, 8)
    assert ts.images.shape == (12, 3, 8, 8) and ts.images.dtype == torch.uint8
    assert ts.paths == paths and ts.n_decoded == 12 and ts.dropped.empty
    to_pixels = eval_transform(8, [0, 0, 0], [1 / 255] * 3)
    for i in (3, 9):  # a JPEG (decoded at reduced scale when that is still >= 8 px) and a PNG
        expected = to_pixels(open_image(folder / paths[i], draft_size=(8, 8)))
        assert torch.allclose(ts.images[i].float(), expected, atol=1e-3), paths[i]


def test_load_tensors_second_call_decodes_nothing(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_tensors(folder, paths_in(folder), 8, cache_dir=cache)
    second = load_tensors(folder, paths_in(folder), 8, cache_dir=cache)
    assert (first.n_decoded, second.n_decoded) == (12, 0)
    assert torch.equal(first.images, second.images)
    assert load_tensors(folder, paths_in(folder), 12, cache_dir=cache).n_decoded == 12  # another size


def test_load_tensors_redecodes_only_changed_files(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_tensors(folder, paths_in(folder), 8, cache_dir=cache)
    changed = folder / "red" / "2.png"
    f.write_rgb(changed, size=(20, 12), color=(0, 255, 0), seed=9)
    os.utime(changed, ns=(1, 1))  # a new mtime even on a coarse-grained clock
    again = load_tensors(folder, paths_in(folder), 8, cache_dir=cache)
    assert again.n_decoded == 1
    assert again.images[again.paths.index("red/2.png"), 1].float().mean() > 100  # now green


def test_load_tensors_reorders_and_subsets_from_the_cache(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    full = load_tensors(folder, paths_in(folder), 8, cache_dir=cache)
    some = list(reversed(paths_in(folder)))[:5]
    part = load_tensors(folder, some, 8, cache_dir=cache)
    assert part.n_decoded == 0 and part.paths == some
    assert torch.equal(part.images, full.images[[full.paths.index(p) for p in some]])
    assert load_tensors(folder, paths_in(folder), 8, cache_dir=cache).n_decoded == 0  # the rest is still cached


def test_load_tensors_drops_broken_files_with_their_reason(folder: Path, tmp_path: Path) -> None:
    f.write_truncated_png(folder / "red" / "cut.png", size=(32, 32))
    f.write_text_as_image(folder / "blue" / "text.jpg")
    paths = [*paths_in(folder), "red/gone.png"]
    ts = load_tensors(folder, paths, 8, cache_dir=tmp_path / "cache")
    reasons = ts.dropped.set_index("path")["reason"].to_dict()
    assert set(reasons) == {"red/cut.png", "blue/text.jpg", "red/gone.png"}
    assert "truncated" in reasons["red/cut.png"] and reasons["red/gone.png"] == "file not found"
    assert len(ts.paths) == len(ts.images) == 12
    again = load_tensors(folder, paths, 8, cache_dir=tmp_path / "cache")
    assert again.n_decoded == 1 and len(again.dropped) == 3  # only the missing file is tried again


def test_damaged_cache_is_rebuilt_not_an_error(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_tensors(folder, paths_in(folder), 8, cache_dir=cache)
    for npy in (cache / "tensors").glob("*.npy"):
        npy.write_bytes(b"garbage")
    assert load_tensors(folder, paths_in(folder), 8, cache_dir=cache).n_decoded == 12


def test_channel_stats_of_known_pixels() -> None:
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    images[0] = 255
    mean, std = channel_stats(images, np.array([0, 1]))
    assert mean == pytest.approx([0.5] * 3) and std == pytest.approx([0.5] * 3)
    mean, std = channel_stats(images, np.array([1]))
    assert mean == pytest.approx([0.0] * 3) and std == pytest.approx([1e-3] * 3)  # no division by zero later


# --- oversampling ----------------------------------------------------------------------------------------------


def test_rare_classes_are_drawn_up_to_the_threshold_every_epoch() -> None:
    labels = torch.tensor([0] * 30 + [1] * 3 + [2] * 9)
    sampler = weighted_sampler(labels, rare_threshold=10)
    assert sampler is not None and len(sampler) == 30 + 10 + 10
    for epoch in range(3):
        order = sampler.epoch_order(torch.Generator().manual_seed(epoch))
        draws = torch.bincount(labels[order], minlength=3).tolist()
        assert draws == [30, 10, 10]
        assert set(order.tolist()) == set(range(42))  # every image still seen every epoch


def test_no_sampler_when_no_class_is_rare() -> None:
    assert weighted_sampler(torch.tensor([0] * 10 + [1] * 12), rare_threshold=10) is None


def test_batches_oversample_rare_classes() -> None:
    labels = torch.tensor([0] * 40 + [1] * 2)
    images = torch.zeros(42, 3, 4, 4, dtype=torch.uint8)
    sampler = weighted_sampler(labels, 10)
    batches = Batches(images, labels, np.arange(42), batch_size=8, mean=[0] * 3, std=[1] * 3, shuffle=True,
                        sampler=sampler)  # fmt: skip
    seen = torch.cat([y for _, y in batches.epoch(0)])
    assert torch.bincount(seen).tolist() == [40, 10]


# --- augmentation ----------------------------------------------------------------------------------------------


def ramp_batch(n: int = 16, side: int = 16) -> torch.Tensor:
    """Each image a left-to-right ramp: a flip reverses it, a shift moves it."""
    row = torch.linspace(0, 1, side)
    return row.expand(n, 3, side, side).clone()


def test_flip_mirrors_some_samples_and_leaves_the_others() -> None:
    x = ramp_batch()
    out = augment_batch(x, "flip", torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x, strict=True)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(a or b for a, b in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


def test_crop_shifts_each_sample_on_its_own_and_never_mirrors() -> None:
    x = ramp_batch(n=32)
    out = augment_batch(x, "crop", torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    middle = out[:, 0, 8, 4:12]  # away from the reflected border
    steps = middle[:, 1:] - middle[:, :-1]
    assert (steps > 0).all()  # still rising left to right: shifted, not flipped
    assert len({round(float(v), 4) for v in middle[:, 0]}) > 3  # different shifts for different samples


def test_augmentation_is_reproducible_from_its_seed() -> None:
    x = torch.rand(8, 3, 16, 16)
    for mode in AUGMENTS:
        a = augment_batch(x, mode, torch.Generator().manual_seed(5))
        b = augment_batch(x, mode, torch.Generator().manual_seed(5))
        assert torch.equal(a, b), mode


def test_strong_augmentation_keeps_shape_and_range() -> None:
    x = torch.rand(8, 3, 16, 16)
    out = augment_batch(x, "strong", torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)


def test_unknown_augment_is_refused() -> None:
    with pytest.raises(ChoiceError, match="augment 'mirror': choose one of none, flip, crop, crop-flip, strong"):
        augment_batch(torch.rand(2, 3, 8, 8), "mirror", torch.Generator())


# --- batches ---------------------------------------------------------------------------------------------------


def test_batches_normalise_with_mean_and_std() -> None:
    images = torch.full((4, 3, 2, 2), 255, dtype=torch.uint8)
    batches = Batches(images, torch.arange(4), np.arange(4), batch_size=4, mean=[0.5] * 3, std=[0.25] * 3)
    x, y = next(iter(batches))
    assert torch.allclose(x, torch.full_like(x, 2.0)) and y.tolist() == [0, 1, 2, 3]


def test_training_batches_drop_a_last_batch_of_one() -> None:
    images = torch.zeros(9, 3, 4, 4, dtype=torch.uint8)
    train = Batches(images, torch.zeros(9, dtype=torch.long), np.arange(9), batch_size=4, mean=[0] * 3,
                      std=[1] * 3, shuffle=True)  # fmt: skip
    assert len(train) == 2 and [len(y) for _, y in train.epoch(0)] == [4, 4]
    evaluation = Batches(images, torch.zeros(9, dtype=torch.long), np.arange(9), batch_size=4, mean=[0] * 3,
                           std=[1] * 3)  # fmt: skip
    assert [len(y) for _, y in evaluation] == [4, 4, 1]


def test_an_epoch_can_be_rebuilt_from_any_batch() -> None:
    images = torch.randint(0, 255, (40, 3, 8, 8), dtype=torch.uint8)
    batches = Batches(images, torch.arange(40), np.arange(40), batch_size=8, mean=[0.5] * 3, std=[0.2] * 3,
                        shuffle=True, augment="crop-flip", seed=3)  # fmt: skip
    whole = list(batches.epoch(2))
    tail = list(batches.epoch(2, start_batch=3))
    assert len(tail) == 2
    for (xa, ya), (xb, yb) in zip(whole[3:], tail, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(torch.cat([y for _, y in batches.epoch(3)]), torch.cat([y for _, y in whole]))


def test_batches_take_only_their_split() -> None:
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    batches = Batches(images, torch.arange(10), np.array([7, 2, 5]), batch_size=2, mean=[0] * 3, std=[1 / 255] * 3)
    got = torch.cat([y for _, y in batches]).tolist()
    assert got == [7, 2, 5]
    assert torch.cat([x[:, 0, 0, 0] for x, _ in batches]).tolist() == [7.0, 2.0, 5.0]
