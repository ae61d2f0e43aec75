"""Tests for core.explore: the facts the Datasets page shows, computed from manifests of real scans."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.common.workspace import Workspace
from core.datasets import explore
from core.datasets.scan import scan_dataset
from core.datasets.sources import resolve_dataset
from tests import imagefactory as f


def manifest_of(ws: Workspace, root: Path) -> pd.DataFrame:
    return scan_dataset(resolve_dataset(str(root), ws)).manifest


def write_classes(root: Path, counts: dict[str, int], split: str = "") -> Path:
    for label, n in counts.items():
        for i in range(n):
            f.write_rgb(root / split / label / f"{i}.png", size=(8 + i % 3, 8), seed=i)
    return root


def test_class_counts_per_label_and_split_in_natural_order(tmp_path: Path, ws: Workspace) -> None:
    root = write_classes(tmp_path / "d", {"10": 2, "9": 1}, "train")
    write_classes(root, {"10": 1, "9": 1}, "test")
    table = explore.class_counts(manifest_of(ws, root))

    assert list(table.columns) == ["label", "split", "images"]
    assert table.values.tolist() == [["9", "test", 1], ["9", "train", 1], ["10", "test", 1], ["10", "train", 2]]


def test_class_counts_call_unsplit_images_unsplit(class_folder: Path, ws: Workspace) -> None:
    table = explore.class_counts(manifest_of(ws, class_folder))
    assert set(table["split"]) == {"unsplit"} and table["images"].sum() == 12


def test_balanced_classes_give_no_warning(tmp_path: Path, ws: Workspace) -> None:
    result = explore.balance(manifest_of(ws, write_classes(tmp_path / "d", {"a": 10, "b": 10})))
    assert (result.n_classes, result.ratio, result.rare, result.warnings) == (2, 1.0, (), ())


def test_imbalance_and_rare_classes_are_warned_about_in_plain_words(tmp_path: Path, ws: Workspace) -> None:
    result = explore.balance(manifest_of(ws, write_classes(tmp_path / "d", {"common": 12, "rare": 3})))

    assert result.largest == ("common", 12) and result.smallest == ("rare", 3)
    assert result.ratio == pytest.approx(4.0)
    assert result.rare == ("rare",)
    assert any("Imbalanced" in w and "4.0x" in w for w in result.warnings)
    assert any("fewer than 10 images: rare" in w for w in result.warnings)


def test_a_single_class_or_no_image_is_warned_about(tmp_path: Path, ws: Workspace) -> None:
    one = explore.balance(manifest_of(ws, write_classes(tmp_path / "one", {"only": 10})))
    (tmp_path / "none").mkdir()
    empty = explore.balance(manifest_of(ws, tmp_path / "none"))

    assert any("Only one class" in w for w in one.warnings)
    assert empty.n_classes == 0 and "no usable images" in empty.warnings[0]


def test_value_table_counts_modes_most_common_first(odd_folder, ws: Workspace) -> None:
    table = explore.value_table(manifest_of(ws, odd_folder.root), "mode")
    assert table.iloc[0].tolist() == ["RGB", 9]
    assert table["images"].sum() == odd_folder.n_good and "CMYK" in set(table["mode"])


def test_size_summary_gives_smallest_median_largest(tmp_path: Path, ws: Workspace) -> None:
    root = tmp_path / "d"
    for i, size in enumerate([(8, 8), (10, 6), (30, 20)]):
        f.write_rgb(root / "a" / f"{i}.png", size=size)
    summary = explore.size_summary(manifest_of(ws, root))
    assert summary["distinct_sizes"] == 3
    assert (summary["min"], summary["median"], summary["max"]) == ("8x6", "10x8", "30x20")
    assert explore.size_summary(manifest_of(ws, root).iloc[0:0]) == {"distinct_sizes": 0}


def test_size_summary_names_the_most_common_sizes_with_their_counts(tmp_path: Path, ws: Workspace) -> None:
    root = tmp_path / "d"
    for i, size in enumerate([(8, 8)] * 3 + [(10, 6)] * 2 + [(30, 20), (5, 5)]):
        f.write_rgb(root / "a" / f"{i}.png", size=size)
    summary = explore.size_summary(manifest_of(ws, root))
    assert summary["distinct_sizes"] == 4 and summary["common"][:2] == [("8x8", 3), ("10x6", 2)]
    assert len(summary["common"]) == 3


@pytest.mark.parametrize(("page", "first_path_index"), [(0, 0), (1, 5), (2, 10), (99, 10), (-3, 0)])
def test_page_of_clamps_to_existing_pages(class_folder: Path, ws: Workspace, page: int, first_path_index: int) -> None:
    manifest = manifest_of(ws, class_folder)
    rows = explore.page_of(manifest, page, per_page=5)
    assert rows.iloc[0]["path"] == manifest.iloc[first_path_index]["path"]
    assert len(rows) == (2 if first_path_index == 10 else 5)
