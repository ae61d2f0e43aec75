"""Duplicate search end to end on real generated images: fingerprints, near_pairs, verification, groups, leaks,
cleaning policies and the cleaned dataset. Module map: core.hashing, core.hamming, core.dedup, core.cleaning."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.common.errors import CoreError, DedupError
from core.common.workspace import Workspace
from core.datasets.scan import scan_dataset
from core.datasets.sources import DatasetRef, csv_ref, resolve_dataset
from core.dedup.cleaning import (
    POLICIES,
    clean_dataset,
    cleaned_folders,
    cleaning_record,
    open_cleaned,
    parse_policies,
    plan_cleaning,  # fmt: skip
    write_cleaned,
)
from core.dedup.fingerprints import HASH_METHODS, hash_dataset, image_fingerprint, phash_batch
from core.dedup.groups import (
    DEFAULT_THRESHOLDS,
    DedupConfig,
    find_duplicates,
    group_duplicates,
    leakage_report,
    verify_pairs,
)
from core.dedup.hamming import brute_force_pairs, choose_plan, near_pairs
from tests import imagefactory as f
from tests.dedup.zoo import Zoo, make_zoo

# --------------------------------------------------------------------------------------------------------------
# A dataset holding every kind of duplicate (tests.dedup.zoo)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return make_zoo(tmp_path_factory.mktemp("zoo") / "zoo")


@pytest.fixture(scope="module")
def zoo_result(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory):
    return find_duplicates(zoo.ref, tmp_path_factory.mktemp("zoo-cache"))


def _group_sets(result) -> list[set[str]]:
    return [set(m["path"]) for _, m in result.members.groupby("group")]


def _group_of(result, path: str) -> dict:
    summary = result.summary()
    return next(g for g in summary["groups"] if path in g["files"])


# --------------------------------------------------------------------------------------------------------------
# Fingerprints


def test_exact_key_is_pixels_for_lossless_formats_and_bytes_for_jpeg(zoo: Zoo) -> None:
    root = zoo.ref.root
    fp = {p: image_fingerprint(root / p) for p in ["train/dog/p.png", "train/dog/p.bmp", "train/cat/a.jpg",
                                                    "train/cat/a_copy.jpg", "train/cat/r.jpg", "val/cat/r_q60.jpg"]}  # fmt: skip
    assert fp["train/dog/p.png"]["content"] == fp["train/dog/p.bmp"]["content"]
    assert fp["train/cat/a.jpg"]["content"] == fp["train/cat/a_copy.jpg"]["content"]
    assert fp["train/cat/r.jpg"]["content"] != fp["val/cat/r_q60.jpg"]["content"]  # a re-encode is not exact
    assert fp["train/cat/r.jpg"]["content"] != fp["train/cat/a.jpg"]["content"]
    thumb = np.frombuffer(fp["train/cat/a.jpg"]["thumb"], np.uint8)
    assert thumb.size == 256 and thumb.std() > 10


@pytest.mark.parametrize("method", list(HASH_METHODS))
def test_every_hash_method_gives_64_bits_and_finds_the_copies(zoo: Zoo, tmp_path: Path, method: str) -> None:
    result = find_duplicates(zoo.ref, tmp_path, DedupConfig(method=method))
    assert result.config.threshold == DEFAULT_THRESHOLDS[method]
    assert result.hashes.hashes.dtype == np.uint64
    assert (tmp_path / "hashes" / f"{zoo.ref.key}-{method}.parquet").is_file()
    found = _group_sets(result)
    assert zoo.groups["exact_bytes"] in found and zoo.groups["exact_formats"] in found


def test_flat_images_share_a_hash_but_are_not_grouped(zoo: Zoo, zoo_result) -> None:
    table = zoo_result.hashes.table.set_index("path")
    flat_hashes = {int(table.at[p, "hash"]) for p in zoo.flats}
    assert len(flat_hashes) == 1  # phash of any one-colour picture is the same degenerate value
    assert zoo_result.n_candidates >= len(zoo.flats) * (len(zoo.flats) - 1) // 2  # so they are candidates...
    grouped = set(zoo_result.members["path"])
    assert not grouped & zoo.flats  # ...that pixel verification rejects


def test_verify_pairs_on_thumbnails() -> None:
    rng = np.random.default_rng(0)
    texture = rng.integers(40, 200, (1, 256)).astype(np.uint8)
    brighter = np.clip(texture.astype(int) * 1.15, 0, 255).astype(np.uint8)
    other = rng.integers(40, 200, (1, 256)).astype(np.uint8)
    faint_a = (128 + rng.normal(0, 3, (1, 256))).astype(np.uint8)  # low texture, different faint noise
    faint_b = (128 + rng.normal(0, 3, (1, 256))).astype(np.uint8)
    flat = np.full((3, 256), [[200], [200], [60]], np.uint8)
    thumbs = np.concatenate([texture, brighter, other, faint_a, faint_b, flat])
    colours = np.array([[120, 110, 100], [138, 126, 115], [120, 110, 100], [128] * 3, [128] * 3,
                        [200, 30, 30], [201, 31, 30], [30, 30, 200]], np.float32)  # fmt: skip
    i, j = np.array([0, 0, 3, 5, 5]), np.array([1, 2, 4, 6, 7])
    check = verify_pairs(i, j, thumbs, colours, 0.9)
    assert check.verified.tolist() == [True, False, False, True, False]
    assert check.correlation[0] > 0.99 and abs(check.correlation[2]) < 0.5
    assert check.residual[0] < 2 and np.isnan(check.residual[3])  # flat thumbnails have no fit
    assert not check.look_alike.any()


def test_a_grayscale_copy_of_a_colour_picture_is_verified_and_another_colour_is_not() -> None:
    texture = np.random.default_rng(1).integers(40, 200, 256).astype(np.uint8)  # the gray thumbnail they share
    thumbs = np.stack([texture] * 3)
    warm = np.array([180.0, 90.0, 40.0])
    luma = float(warm @ np.array([0.299, 0.587, 0.114]))
    colours = np.array([warm, [luma] * 3, warm[::-1]], np.float32)  # colour, its grayscale copy, a blue version
    check = verify_pairs(np.array([0, 0]), np.array([1, 2]), thumbs, colours, gray=np.array([False, True, False]))
    assert check.verified.tolist() == [True, False]


def test_tiny_images_need_a_near_lossless_match_and_look_alikes_are_named() -> None:
    rng = np.random.default_rng(2)
    digit = (rng.random((8, 8)) < 0.3) * 255.0
    reencoded = np.clip(digit + rng.normal(0, 2, (8, 8)), 0, 255)  # a few levels of noise: the same picture
    other = digit.copy()
    other[rng.random((8, 8)) < 0.12] = 128  # some pixels differ a lot: another picture, still alike
    thumbs = np.stack([np.kron(x, np.ones((2, 2))).reshape(-1) for x in (digit, reencoded, other)]).astype(np.uint8)
    colours = np.full((3, 3), 60.0, np.float32)
    i, j = np.array([0, 0]), np.array([1, 2])
    tiny = verify_pairs(i, j, thumbs, colours, sides=np.array([8, 8, 8]))
    assert tiny.verified.tolist() == [True, False] and tiny.look_alike.tolist() == [False, True]
    assert tiny.residual[1] > 4.5


# --------------------------------------------------------------------------------------------------------------
# Groups and flags


def test_every_duplicate_kind_forms_its_group_and_nothing_else_is_grouped(zoo: Zoo, zoo_result) -> None:
    assert sorted(map(sorted, _group_sets(zoo_result))) == sorted(map(sorted, zoo.groups.values()))
    kinds = {name: _group_of(zoo_result, sorted(files)[0])["kind"] for name, files in zoo.groups.items()}
    assert kinds == {"exact_bytes": "exact", "exact_formats": "exact", "reencode_leak": "near",
                     "resize_leak": "near", "bright_conflict": "near", "bigger": "near"}  # fmt: skip
    assert zoo_result.n_redundant == len(zoo.groups)


def test_conflict_and_leak_flags(zoo_result) -> None:
    conflict = _group_of(zoo_result, "train/cat/b.jpg")
    assert conflict["conflict"] and conflict["labels"] == ["cat", "dog"] and not conflict["leak"]
    leak = _group_of(zoo_result, "train/cat/r.jpg")
    assert leak["leak"] and leak["splits"] == ["train", "val"] and not leak["conflict"]
    assert _group_of(zoo_result, "train/bird/s.jpg")["splits"] == ["train", "test"]
    exact = _group_of(zoo_result, "train/cat/a.jpg")
    assert exact["distance"] == 0 and exact["min_distance"] == 0 and not exact["leak"] and not exact["conflict"]


def test_unsplit_images_are_marked_unsplit_and_never_leak(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    f.write_photo(root / "cat/a.jpg", 1)
    shutil.copy(root / "cat/a.jpg", root / "cat/b.jpg")
    group = find_duplicates(DatasetRef("folder", root), tmp_path / "cache").summary()["groups"][0]
    assert group["splits"] == ["unsplit"] and not group["leak"]


def test_summary_has_the_command_line_shape(zoo: Zoo, zoo_result) -> None:
    summary = json.loads(json.dumps(zoo_result.summary()))  # plain JSON types only
    assert {"groups", "n_groups", "n_redundant", "leakage", "settings"} <= set(summary)
    assert summary["n_groups"] == len(summary["groups"]) == len(zoo.groups)
    for group in summary["groups"]:
        assert {"files", "kind", "labels", "splits", "conflict", "leak", "distance"} <= set(group)
        assert group["kind"] in ("exact", "near") and len(group["files"]) >= 2
    assert summary["settings"]["threshold"] == DEFAULT_THRESHOLDS["phash"]
    assert [u["path"] for u in summary["unreadable"]] == [zoo.broken]  # listed by the scan; the run went on


def test_leakage_report_per_split_pair(zoo: Zoo, tmp_path: Path) -> None:
    report = leakage_report(zoo.ref, tmp_path)
    assert report.counts == {"train-val": 1, "train-test": 1, "val-test": 0}
    as_dict = report.to_dict()
    assert as_dict["train-val"]["pairs"] == [["train/cat/r.jpg", "val/cat/r_q60.jpg"]]
    assert as_dict["train-test"]["pairs"] == [["train/bird/s.jpg", "test/bird/s_half.png"]]
    assert report.table.set_index(["split_a", "split_b"])["n_images"].to_dict() == {
        ("train", "val"): 1, ("train", "test"): 1, ("val", "test"): 0}  # fmt: skip
    assert (report.pairs["distance"] <= DEFAULT_THRESHOLDS["phash"]).all()


def test_borderline_pairs_show_what_one_bit_more_or_less_changes(zoo_result) -> None:
    near = zoo_result.summary()["groups"]
    largest = max(g["distance"] for g in near)
    assert largest > 0
    # With the threshold just under the farthest near pair, that pair drops out of the groups but is listed
    # as borderline: verified on pixels, not counted.
    config = DedupConfig(threshold=largest - 1, borderline=2)
    tighter = group_duplicates(zoo_result.hashes, zoo_result.scan, config)
    row = tighter.borderline[tighter.borderline["distance"] == largest].iloc[0]
    assert bool(row["verified"]) and not bool(row["counted"])
    assert len(tighter.groups) == len(zoo_result.groups) - (tighter.borderline["distance"] == largest).sum()
    assert (tighter.borderline["distance"] - config.threshold).abs().max() <= 2


# --------------------------------------------------------------------------------------------------------------
# Cache and broken files


def test_second_run_opens_nothing_and_a_changed_file_is_opened_again(tmp_path: Path) -> None:
    root = tmp_path / "small"
    for k in range(5):
        f.write_photo(root / "c" / f"{k}.jpg", 200 + k)
    ref = DatasetRef("folder", root)
    cache = tmp_path / "cache"
    first = find_duplicates(ref, cache)
    assert first.hashes.n_opened == 5
    assert find_duplicates(ref, cache).hashes.n_opened == 0
    f.write_photo(root / "c" / "3.jpg", 999, (100, 80))  # new size and mtime
    third = find_duplicates(ref, cache)
    assert third.hashes.n_opened == 1
    assert third.hashes.table.set_index("path").at["c/3.jpg", "width"] == 100
    # The rewritten cache kept the unchanged images' thumbnails: a warm search reads the same as no cache at all.
    np.testing.assert_array_equal(find_duplicates(ref, cache).hashes.thumbs, find_duplicates(ref).hashes.thumbs)
    assert not list((cache / "hashes").glob("*.tmp"))  # written through a temp file and renamed


def test_a_warm_search_reads_only_the_pairs_thumbnails_and_finds_the_same_groups(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for k in range(6):
        f.write_photo(root / "c" / f"{k}.jpg", 300 + k)
    # A re-encode: a near copy, verified on pixels (its thumbnails are compared).
    Image.open(root / "c/0.jpg").save(root / "c/0-again.jpg", quality=60)
    ref, cache = DatasetRef("folder", root), tmp_path / "cache"
    cold = find_duplicates(ref, cache)
    warm = find_duplicates(ref, cache)
    assert warm.hashes.n_opened == 0 and "thumb" not in warm.hashes.table.columns  # not read with the table
    assert warm.hashes.thumb_file is not None
    np.testing.assert_array_equal(warm.hashes.thumbs, cold.hashes.thumbs)  # read back from the cache, by path
    assert sorted(warm.members["path"]) == sorted(cold.members["path"]) == ["c/0-again.jpg", "c/0.jpg"]
    pd.testing.assert_frame_equal(warm.groups, cold.groups)
    warm.hashes.thumb_file.unlink()  # gone meanwhile (another search, a cleaned cache): said, not guessed
    with pytest.raises(DedupError, match="search again"):
        warm.hashes.thumbs_at(np.array([0]))


def test_a_file_broken_after_the_scan_is_listed_and_the_run_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    f.write_photo(root / "c/a.jpg", 1)
    shutil.copy(root / "c/a.jpg", root / "c/b.jpg")
    f.write_photo(root / "c/z.jpg", 2)
    ref = DatasetRef("folder", root)
    scan = scan_dataset(ref)
    f.write_truncated_jpeg(root / "c/z.jpg")  # breaks between the scan and the hashing pass
    result = find_duplicates(ref, tmp_path / "cache", scan=scan)
    assert result.hashes.failed["path"].tolist() == ["c/z.jpg"]
    assert "truncated" in result.hashes.failed["reason"].iloc[0]
    assert _group_sets(result) == [{"c/a.jpg", "c/b.jpg"}]
    assert [u["path"] for u in result.summary()["unreadable"]] == ["c/z.jpg"]


# --------------------------------------------------------------------------------------------------------------
# near_pairs


def _planted_hashes(n: int, seed: int, max_flips: int = 10) -> np.ndarray:
    """Random hashes, a fifth of them copies of another with 0..max_flips bits flipped, a few all equal."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    k = n // 5
    src, dst = rng.integers(0, n, k), rng.integers(0, n, k)
    for s, d in zip(src, dst, strict=True):
        flips = rng.choice(64, int(rng.integers(0, max_flips + 1)), replace=False)
        h[d] = h[s] ^ np.uint64(sum(1 << int(b) for b in flips))
    h[:3] = h[3] if n > 3 else h[:3]
    return h


@pytest.mark.parametrize("n", [0, 1, 2, 7, 300, 2000])
@pytest.mark.parametrize("threshold", [0, 1, 3, 8, 11, 64])
def test_near_pairs_matches_brute_force(n: int, threshold: int) -> None:
    h = _planted_hashes(n, seed=n * 100 + threshold)
    expected = brute_force_pairs(h, threshold)
    for method in ("auto", "brute", "mih"):
        got = near_pairs(h, threshold, method=method)
        for want, have in zip(expected, got, strict=True):
            assert np.array_equal(want, have), (method, n, threshold)
    assert got[0].dtype == np.int64 and got[2].dtype == np.uint8


def test_near_pairs_accepts_int64_and_one_worker() -> None:
    h = _planted_hashes(500, seed=5)
    want = brute_force_pairs(h, 8)
    got = near_pairs(h.view(np.int64), 8, workers=1)
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


def test_multi_index_search_on_30k_hashes_equals_tiled_brute_force() -> None:
    h = _planted_hashes(30_000, seed=11)
    assert choose_plan(len(h), 8) != "brute"  # the cost model picks multi-index hashing here
    mih, brute = near_pairs(h, 8, method="mih"), near_pairs(h, 8, method="brute")
    assert len(mih[0]) > 1000
    assert all(np.array_equal(a, b) for a, b in zip(mih, brute, strict=True))


@pytest.mark.parametrize("bad", [-1, 65, 2.5, True, "8"])
def test_near_pairs_rejects_a_bad_threshold(bad) -> None:
    with pytest.raises(DedupError, match="0 to 64"):
        near_pairs(np.zeros(3, np.uint64), bad)


@pytest.mark.slow
def test_one_million_random_hashes_at_the_default_threshold() -> None:
    threshold = DEFAULT_THRESHOLDS["phash"]
    rng = np.random.default_rng(1)
    n = 1_000_000
    h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    src = rng.choice(n, 20_000, replace=False)  # distinct sources and targets: every planted pair survives
    dst = rng.permutation(np.setdiff1d(np.arange(n), src))[:20_000]
    flips = [sum(1 << int(b) for b in rng.choice(64, int(rng.integers(0, threshold + 1)), replace=False)) for _ in src]
    h[dst] = h[src] ^ np.array(flips, np.uint64)
    i, j, d = near_pairs(h, threshold)
    assert (d <= threshold).all() and (np.bitwise_count(h[i] ^ h[j]) == d).all() and (i < j).all()
    found = set((i * n + j).tolist())
    planted = np.minimum(src, dst) * n + np.maximum(src, dst)
    assert all(int(p) in found for p in planted)


# --------------------------------------------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"method": "md5"}, "phash, dhash, whash, average_hash"), ({"threshold": 64}, "0 to 63"),
     ({"threshold": -1}, "0 to 63"), ({"threshold": "8"}, "0 to 63"), ({"min_correlation": 2.0}, "between -1 and 1"),
     ({"workers": 0}, "at least 1"), ({"borderline": 9}, "0 to 8")],
)  # fmt: skip
def test_bad_settings_name_the_value_and_the_allowed_ones(kwargs: dict, message: str) -> None:
    with pytest.raises(CoreError, match=message):
        DedupConfig(**kwargs)


def test_parse_policies_orders_and_rejects() -> None:
    assert parse_policies("keep-one, move-leaks,prefer-known") == ("prefer-known", "move-leaks", "keep-one")
    assert parse_policies(list(reversed(POLICIES))) == POLICIES
    with pytest.raises(DedupError, match="keep-all.*choose from prefer-known"):
        parse_policies("keep-one,keep-all")
    with pytest.raises(DedupError):
        parse_policies("")


# --------------------------------------------------------------------------------------------------------------
# Cleaning policies


def _plan(result, policies: str, **kwargs):
    plan = plan_cleaning(result, policies, **kwargs)
    removed = dict(zip(plan.removed["path"], plan.removed["reason"], strict=True))
    return plan, removed


def test_keep_one_prefers_train_then_resolution_then_path(zoo_result) -> None:
    plan, removed = _plan(zoo_result, "keep-one")
    assert removed == {
        "train/cat/a_copy.jpg": "duplicate of train/cat/a.jpg",  # same pixels and size: path order
        "train/dog/p.png": "duplicate of train/dog/p.bmp",
        "val/cat/r_q60.jpg": "duplicate of train/cat/r.jpg",  # train first
        "test/bird/s_half.png": "duplicate of train/bird/s.jpg",
        "train/dog/b_bright.jpg": "duplicate of train/cat/b.jpg",
        "train/cat/d.jpg": "duplicate of train/cat/e_big.png",  # the larger copy, though later in path order
    }
    assert len(plan.kept) == len(zoo_result.hashes.table) - len(removed)


def test_drop_conflicts_removes_the_whole_group(zoo_result) -> None:
    _, removed = _plan(zoo_result, "drop-conflicts")
    assert set(removed) == {"train/cat/b.jpg", "train/dog/b_bright.jpg"}
    assert all(r.startswith("label conflict") and "cat, dog" in r for r in removed.values())


def test_move_leaks_moves_val_and_test_copies_into_train(zoo_result) -> None:
    plan, removed = _plan(zoo_result, "move-leaks")
    assert not removed
    moved = plan.moved.set_index("path")
    assert moved.to_dict("index") == {"val/cat/r_q60.jpg": {"old": "val", "new": "train"},
                                      "test/bird/s_half.png": {"old": "test", "new": "train"}}  # fmt: skip
    assert plan.kept.set_index("path").at["val/cat/r_q60.jpg", "split"] == "train"


def test_prefer_known_without_an_unknown_label_is_refused(zoo_result) -> None:
    with pytest.raises(DedupError, match="--unknown-label"):
        plan_cleaning(zoo_result, "prefer-known")


def test_relabel_takes_the_label_checks_suggestion_before_conflicts_are_judged(zoo_result) -> None:
    fixes = {"train/dog/b_bright.jpg": "cat", "train/dog/p.png": None, "no/such/file.png": "cat"}
    plan, removed = _plan(zoo_result, "relabel,drop-conflicts", label_fixes=fixes)
    assert plan.relabelled.to_dict("records") == [{"path": "train/dog/b_bright.jpg", "old": "dog", "new": "cat"}]
    assert removed == {}  # the conflict it caused is gone; the drop decision is drop-suspects' business
    plan, removed = _plan(zoo_result, "drop-suspects", label_fixes=fixes)
    assert plan.relabelled.empty
    assert removed == {"train/dog/p.png": "label probably wrong: labelled dog, and the model disagrees"}


def test_label_policies_without_a_label_check_are_refused(zoo_result) -> None:
    with pytest.raises(DedupError, match="check the labels first"):
        plan_cleaning(zoo_result, "relabel")


def test_all_policies_together_and_the_cleaned_dataset(zoo: Zoo, zoo_result, ws: Workspace) -> None:
    plan = plan_cleaning(zoo_result, "keep-one,drop-conflicts,move-leaks")
    assert plan.policies == ("drop-conflicts", "move-leaks", "keep-one")
    removed = set(plan.removed["path"])
    assert {"train/cat/b.jpg", "train/dog/b_bright.jpg", "val/cat/r_q60.jpg", "test/bird/s_half.png"} <= removed
    ws = ws.with_roots(zoo.ref.root)  # the zoo lives outside this test's folder
    ref = write_cleaned(plan, ws)
    assert ref.root == zoo.ref.root and ref.labels.parent.parent == ws.datasets
    assert ref.labels.parent.name.startswith("zoo-cleaned-")
    rescanned = scan_dataset(resolve_dataset(ref.spec, ws))
    got = rescanned.manifest[["path", "label", "split"]].sort_values("path").reset_index(drop=True)
    assert got.equals(plan.kept[["path", "label", "split"]].sort_values("path").reset_index(drop=True))
    assert rescanned.unreadable.empty
    record = json.loads((ref.labels.parent / "cleaning.json").read_text())
    assert record["source"] == zoo.ref.spec and record["counts"]["removed"] == len(removed)
    assert write_cleaned(plan, ws) == ref  # the same plan again: the same folder
    assert (zoo.ref.root / "val/cat/r_q60.jpg").is_file()  # sources untouched


# --------------------------------------------------------------------------------------------------------------
# The whale layout: train.csv with Image,Id and new_whale


@pytest.fixture
def whales(tmp_path: Path) -> Path:
    """train.csv + train/: a re-encoded pair of w_1, a w_2 whale copied as new_whale, a resized pair filed as
    w_3 and w_4, two new_whale copies of one picture, and five distinct whales."""
    img = tmp_path / "whales" / "train"
    rows = []
    f.write_photo(img / "a1.jpg", 11)
    f.write_copy(img / "a1.jpg", img / "a2.jpg", quality=70)
    f.write_photo(img / "b1.jpg", 12)
    shutil.copy(img / "b1.jpg", img / "n1.jpg")
    f.write_photo(img / "c1.jpg", 13)
    f.write_copy(img / "c1.jpg", img / "c2.jpg", scale=1.5)
    f.write_photo(img / "n2.jpg", 14)
    f.write_copy(img / "n2.jpg", img / "n3.jpg", brightness=0.85)
    rows += [("a1.jpg", "w_1"), ("a2.jpg", "w_1"), ("b1.jpg", "w_2"), ("n1.jpg", "new_whale"), ("c1.jpg", "w_3"),
             ("c2.jpg", "w_4"), ("n2.jpg", "new_whale"), ("n3.jpg", "new_whale")]  # fmt: skip
    for k in range(5):
        f.write_photo(img / f"d{k}.jpg", 30 + k)
        rows.append((f"d{k}.jpg", f"w_{5 + k}"))
    csv = tmp_path / "whales" / "train.csv"
    csv.write_text("Image,Id\n" + "".join(f"{image},{label}\n" for image, label in rows))
    return csv


def test_whales_end_to_end(whales: Path, ws: Workspace) -> None:
    ref = resolve_dataset(str(whales), ws)
    result = find_duplicates(ref, ws.cache)
    groups = {tuple(g["files"]): g for g in result.summary()["groups"]}
    assert set(groups) == {("a1.jpg", "a2.jpg"), ("b1.jpg", "n1.jpg"), ("c1.jpg", "c2.jpg"), ("n2.jpg", "n3.jpg")}
    assert groups[("b1.jpg", "n1.jpg")]["conflict"] and groups[("b1.jpg", "n1.jpg")]["kind"] == "exact"
    assert groups[("c1.jpg", "c2.jpg")]["labels"] == ["w_3", "w_4"]
    assert not groups[("a1.jpg", "a2.jpg")]["conflict"] and not groups[("n2.jpg", "n3.jpg")]["conflict"]

    plan = plan_cleaning(result, "prefer-known,drop-conflicts,keep-one")  # new_whale found by itself
    assert plan.unknown_label == "new_whale"
    assert plan.relabelled.to_dict("records") == [{"path": "n1.jpg", "old": "new_whale", "new": "w_2"}]
    assert set(plan.removed["path"]) == {"a2.jpg", "n1.jpg", "c1.jpg", "c2.jpg", "n3.jpg"}
    cleaned = write_cleaned(plan, ws)
    again = resolve_dataset(cleaned.spec, ws)
    assert (again.kind, again.root, again.labels) == ("csv", ref.root, cleaned.labels)
    manifest = scan_dataset(again).manifest.set_index("path")
    assert sorted(manifest.index) == sorted(plan.kept["path"])
    assert manifest.at["b1.jpg", "label"] == "w_2" and "new_whale" in set(manifest["label"])  # n2 stays new_whale
    summary = result.summary(cleaned=plan.summary(cleaned))
    assert summary["cleaned"]["dataset"] == cleaned.spec and summary["cleaned"]["n_images"] == len(plan.kept)
    assert {r["path"] for r in summary["cleaned"]["removed"]} == set(plan.removed["path"])
    folder = cleaned.labels.parent
    assert cleaned_folders(ws) == [folder]  # the browser lists it among the datasets
    reopened = open_cleaned(folder, ws)
    assert (reopened.kind, reopened.root, reopened.labels) == ("csv", ref.root, cleaned.labels)
    assert cleaning_record(folder)["source"] == ref.spec


def test_prefer_known_alone_relabels_and_keeps_every_image(whales: Path, ws: Workspace) -> None:
    result = find_duplicates(csv_ref(whales, ws), ws.cache)
    plan = plan_cleaning(result, "prefer-known", unknown_label="new_whale")
    assert plan.removed.empty and len(plan.kept) == len(result.hashes.table)
    assert plan.kept.set_index("path").at["n1.jpg", "label"] == "w_2"


# --------------------------------------------------------------------------------------------------------------
# Acceptance: recall and precision of pairs on data the threshold was not tuned on


SIZES = [(96, 72), (120, 90), (128, 128), (160, 120), (72, 96), (140, 100)]


def _write_acceptance_set(root: Path, n_base: int, seed: int) -> dict[str, int]:
    """``n_base`` distinct photos over 4 classes; about 60% get one or two copies (byte copy, PNG<->BMP,
    JPEG re-encode at q50-95, 0.5x-2x resize, +-15% brightness, or resize + brightness + re-encode), a quarter
    of them filed under another class. Returns path -> base id."""
    rng = np.random.default_rng(seed)
    truth: dict[str, int] = {}
    for b in range(n_base):
        label = f"class{b % 4}"
        ext = ".png" if rng.random() < 0.25 else ".jpg"
        base = f.write_photo(root / label / f"img{b}{ext}", 5000 + seed * 1000 + b, SIZES[b % len(SIZES)])
        truth[str(base.relative_to(root))] = b
        for c in range(int(rng.choice([0, 0, 1, 1, 1, 2]))):
            target = root / (f"class{rng.integers(4)}" if rng.random() < 0.25 else label)
            copy = _copy(base, target, f"img{b}_copy{c}", rng)
            truth[str(copy.relative_to(root))] = b
    return truth


def _copy(base: Path, folder: Path, stem: str, rng: np.random.Generator) -> Path:
    kind = rng.choice(["bytes", "lossless", "reencode", "resize", "bright", "combo"])
    if kind == "bytes":
        folder.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(base, folder / f"{stem}{base.suffix}"))
    if kind == "lossless":
        return f.write_copy(base, folder / f"{stem}{'.bmp' if base.suffix == '.png' else '.png'}")
    if kind == "reencode":
        return f.write_copy(base, folder / f"{stem}.jpg", quality=int(rng.integers(50, 96)))
    if kind == "resize":
        return f.write_copy(base, folder / f"{stem}.png", scale=float(rng.uniform(0.5, 2.0)))
    if kind == "bright":
        return f.write_copy(base, folder / f"{stem}.jpg", brightness=float(rng.uniform(0.85, 1.15)), quality=90)
    return f.write_copy(base, folder / f"{stem}.jpg", scale=float(rng.uniform(0.5, 2.0)),
                        brightness=float(rng.uniform(0.85, 1.15)), quality=int(rng.integers(60, 95)))  # fmt: skip


def _pairs(groups: list[list[str]]) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for g in groups for p in itertools.combinations(g, 2)}


def test_acceptance_default_settings_find_95_percent_of_pairs_at_95_percent_precision(tmp_path: Path) -> None:
    root = tmp_path / "accept"
    truth = _write_acceptance_set(root, n_base=240, seed=2024)
    by_base = pd.Series(list(truth)).groupby(pd.Series(list(truth.values()))).apply(list)
    true_pairs = _pairs(list(by_base))
    assert len(true_pairs) >= 150
    result = find_duplicates(DatasetRef("folder", root), tmp_path / "cache")
    found = _pairs([list(m["path"]) for _, m in result.members.groupby("group")])
    recall = len(found & true_pairs) / len(true_pairs)
    precision = len(found & true_pairs) / max(1, len(found))
    assert recall >= 0.95 and precision >= 0.95, (recall, precision, sorted(true_pairs - found)[:5])
    conflicts = {tuple(g["files"]) for g in result.summary()["groups"] if g["conflict"]}
    assert conflicts  # copies filed under another class are flagged


def test_cache_file_is_keyed_per_dataset_and_method(zoo: Zoo, tmp_path: Path) -> None:
    scan = scan_dataset(zoo.ref)
    hash_dataset(scan, tmp_path, method="dhash")
    assert [p.name for p in (tmp_path / "hashes").iterdir()] == [f"{zoo.ref.key}-dhash.parquet"]
    assert Image.open(zoo.ref.root / "train/dog/p.bmp").format == "BMP"


def test_an_empty_dataset_gives_an_empty_result(tmp_path: Path, ws: Workspace) -> None:
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    result = find_duplicates(DatasetRef("folder", tmp_path / "empty"), ws.cache)
    summary = json.loads(json.dumps(result.summary()))
    assert summary["groups"] == [] and summary["n_redundant"] == 0 and summary["n_images"] == 0
    plan, ref = clean_dataset(result, "keep-one", ws)
    assert plan.kept.empty and scan_dataset(ref).manifest.empty


def test_batched_phash_is_imagehash_phash_bit_for_bit() -> None:
    import imagehash

    grays = [f.photo(seed, (64, 64)).convert("L") for seed in range(40)]
    grays += [Image.new("L", (64, 64), 90), Image.fromarray(np.arange(4096, dtype=np.uint16).reshape(64, 64) // 16)]
    grays = [g.convert("L") for g in grays]
    ours = phash_batch(grays).view(np.uint64)
    theirs = [int(str(imagehash.phash(g)), 16) for g in grays]
    assert [int(h) for h in ours] == theirs


def test_text_lines_name_groups_flags_and_leaks(zoo_result) -> None:
    text = "\n".join(zoo_result.text_lines(max_groups=3))
    assert text.startswith("6 duplicate groups, 6 redundant images")
    assert "... and 3 more groups" in text and "leakage train-val: 1 images" in text
    assert "unreadable: train/cat/broken.jpg" in text
    assert "CONFLICT" in "\n".join(zoo_result.text_lines())
