"""Quality checks (core.quality) on real generated images: ordinary photos pass, injected bad ones are flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from core.common.errors import CoreError
from core.datasets.scan import scan_dataset
from core.datasets.sources import DatasetRef
from core.dedup.features import quality_features
from core.dedup.fingerprints import hash_dataset
from core.dedup.quality import ISSUES, QualityThresholds, check_quality, issue_counts, quality_issues
from tests import imagefactory as f

NORMAL_SIZES = [(128, 96), (120, 90), (140, 105), (128, 128), (96, 128), (160, 90)]
# file -> the issue it was made to have
INJECTED = {
    "bad/dark.png": "dark",
    "bad/bright.png": "bright",
    "bad/blurry.png": "blurry",
    "bad/flat.png": "low_information",
    "bad/strip.jpg": "odd_aspect",
    "bad/tiny.png": "odd_size",
    "bad/gray.jpg": "grayscale",
}


def _write_injected(root: Path) -> None:
    base = f.photo(1, (128, 96))
    pixels = np.asarray(base, np.float32)
    (root / "bad").mkdir(parents=True)
    Image.fromarray((pixels * 0.1).astype(np.uint8)).save(root / "bad/dark.png")
    Image.fromarray((255 - (255 - pixels) * 0.08).astype(np.uint8)).save(root / "bad/bright.png")
    base.filter(ImageFilter.GaussianBlur(0.06 * 128)).save(root / "bad/blurry.png")
    Image.new("RGB", (128, 96), (90, 120, 200)).save(root / "bad/flat.png")
    f.photo(2, (400, 100)).save(root / "bad/strip.jpg", quality=90)
    f.photo(3, (16, 12)).save(root / "bad/tiny.png")
    f.photo(4, (128, 96)).convert("L").convert("RGB").save(root / "bad/gray.jpg", quality=90)


@pytest.fixture(scope="module")
def quality_set(tmp_path_factory: pytest.TempPathFactory) -> DatasetRef:
    """60 ordinary photo-like pictures in two classes, plus one injected bad picture per issue."""
    root = tmp_path_factory.mktemp("quality") / "set"
    for k in range(60):
        f.write_photo(root / f"ok{k % 2}" / f"{k}.jpg", 400 + k, NORMAL_SIZES[k % len(NORMAL_SIZES)])
    _write_injected(root)
    return DatasetRef("folder", root)


@pytest.fixture(scope="module")
def quality_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quality-cache")


@pytest.fixture(scope="module")
def report(quality_set: DatasetRef, quality_cache: Path):
    return check_quality(quality_set, quality_cache)


def test_ordinary_photos_are_not_flagged(report) -> None:
    flagged = report.issues[~report.issues["path"].str.startswith("bad/")]
    assert flagged.empty, flagged.to_dict("records")


@pytest.mark.parametrize(("path", "issue"), INJECTED.items())
def test_each_injected_image_is_flagged_with_its_issue(report, path: str, issue: str) -> None:
    assert issue in set(report.issues.loc[report.issues["path"] == path, "issue"])


def test_counts_list_every_issue(report) -> None:
    assert list(report.counts) == list(ISSUES)
    assert all(report.counts[issue] >= 1 for issue in INJECTED.values())
    assert sum(report.counts.values()) == len(report.issues)
    assert set(report.summary()) == {"counts", "issues", "thresholds"}


def test_scores_have_one_row_per_image_and_the_thresholds_move(
    report, quality_set: DatasetRef, quality_cache: Path
) -> None:
    scores = report.scores.set_index("path")
    assert len(scores) == 60 + len(INJECTED)
    assert scores.at["bad/strip.jpg", "odd_aspect"] == pytest.approx(4.0)
    assert np.isnan(scores.at["bad/flat.png", "blurry"])  # nothing to be sharp about: low information instead
    # Moving a threshold re-checks the cached features (the scan and the fingerprints come from the cache).
    scan = scan_dataset(quality_set, quality_cache)
    assert hash_dataset(scan, quality_cache).n_opened == 0
    strict = QualityThresholds(dark=float(scores["dark"].median()) + 1)
    again = check_quality(quality_set, quality_cache, strict, scan=scan)
    assert (again.issues["issue"] == "dark").sum() >= 30


def test_grayscale_is_only_an_issue_in_a_mostly_colour_set(tmp_path: Path) -> None:
    root = tmp_path / "grays" / "c"
    root.mkdir(parents=True)
    for k in range(6):
        f.photo(k, (96, 72)).convert("L").save(root / f"{k}.png")
    f.write_photo(root / "colour.jpg", 99)
    report = check_quality(DatasetRef("folder", root.parent), None)
    assert report.counts["grayscale"] == 0
    assert report.scores.set_index("path").at["c/0.png", "grayscale"] == 0


def test_quality_features_of_a_flat_and_a_noisy_picture() -> None:
    flat = quality_features(np.full((64, 64, 3), 30, np.uint8))
    assert flat["entropy"] == 0 and np.isnan(flat["sharpness"]) and flat["colourfulness"] == 0
    assert flat["content_share"] == 0
    assert flat["lum_p01"] == flat["lum_p99"] == 30
    noise = quality_features(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert noise["entropy"] > 7 and noise["sharpness"] > 1 and noise["colourfulness"] > 50


def test_empty_features_give_no_issues() -> None:
    empty = pd.DataFrame(columns=["path", "width", "height", "lum_p01", "lum_p99", "lum_mean", "sharpness",
                                  "entropy", "content_share", "colourfulness"])  # fmt: skip
    issues = quality_issues(empty)
    assert issues.empty and list(issues.columns) == ["path", "issue", "score"]
    assert issue_counts(issues) == dict.fromkeys(ISSUES, 0)


@pytest.mark.parametrize("bad", [{"dark": -1.0}, {"blurry": float("nan")}, {"mostly_colour": 1.5}])
def test_bad_thresholds_are_refused(bad: dict) -> None:
    with pytest.raises(CoreError, match=next(iter(bad))):
        QualityThresholds(**bad)


def test_ordinary_handwritten_ones_are_not_low_information_but_blank_pictures_are(digits_ws, tmp_path: Path) -> None:
    """A "1" of the digits sample has under 2 bits of gray-level entropy (two levels), yet shows a digit."""
    from core.datasets.sources import resolve_dataset

    digits = check_quality(resolve_dataset("sample:digits", digits_ws), tmp_path / "cache")
    ones = digits.scores[digits.scores["path"].str.contains("/1/")]
    assert len(ones) >= 170 and ones["low_information"].min() >= 0.2
    assert digits.counts["low_information"] == 0
    blank = tmp_path / "blank" / "c"
    blank.mkdir(parents=True)
    Image.new("L", (8, 8), 0).save(blank / "black.png")
    Image.new("RGB", (64, 48), (90, 120, 200)).save(blank / "blue.jpg", quality=75)
    speck = np.zeros((64, 64), np.uint8)
    speck[30:32, 30:32] = 255  # 4 pixels of 4,096: nothing to see
    Image.fromarray(speck).save(blank / "speck.png")
    f.write_photo(blank / "photo.jpg", 5)
    flagged = set(
        check_quality(DatasetRef("folder", blank.parent), None).issues.query("issue == 'low_information'")["path"]
    )
    assert flagged == {"c/black.png", "c/blue.jpg", "c/speck.png"}
