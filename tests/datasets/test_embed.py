"""Tests for core.embed: PCA and t-SNE maps of real images from two visibly different classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.common.errors import CoreError
from core.datasets import embed
from tests import imagefactory as f

N_PER_CLASS = 18


@pytest.fixture
def two_colours(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """18 reddish and 18 bluish 16x16 pictures (each with its own random patch) and their manifest."""
    rows = []
    for label, color in (("red", (210, 40, 40)), ("blue", (40, 60, 210))):
        for i in range(N_PER_CLASS):
            path = f"{label}/{i}.png"
            f.write_rgb(tmp_path / path, size=(16, 16), color=color, seed=i)
            rows.append({"path": path, "label": label})
    return tmp_path, pd.DataFrame(rows)


def separation(frame: pd.DataFrame) -> float:
    """Share of points whose nearest other point (in x, y) has the same label: 1.0 for clean clusters."""
    xy = frame[["x", "y"]].to_numpy()
    distances = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=-1)
    np.fill_diagonal(distances, np.inf)
    nearest = distances.argmin(axis=1)
    return float((frame["label"].to_numpy()[nearest] == frame["label"].to_numpy()).mean())


def centroid_gap(frame: pd.DataFrame) -> float:
    """Distance between the class centres over the mean spread within a class."""
    centres = frame.groupby("label")[["x", "y"]].mean()
    spread = frame.groupby("label")[["x", "y"]].std().to_numpy().mean()
    return float(np.linalg.norm(centres.iloc[0] - centres.iloc[1]) / spread)


@pytest.mark.parametrize("method", embed.METHODS)
def test_two_visibly_different_classes_separate(two_colours, method: str) -> None:
    root, manifest = two_colours
    frame = embed.projection_frame(root, manifest, method=method)

    assert len(frame) == 2 * N_PER_CLASS
    assert separation(frame) == 1.0
    assert centroid_gap(frame) > 3.0


def test_the_same_seed_gives_the_same_map(two_colours) -> None:
    root, manifest = two_colours
    first = embed.projection_frame(root, manifest, method="tsne", seed=3)
    again = embed.projection_frame(root, manifest, method="tsne", seed=3)
    np.testing.assert_allclose(first[["x", "y"]], again[["x", "y"]])


def test_pixel_features_are_small_rgb_in_0_1_and_unreadable_images_are_dropped(two_colours) -> None:
    root, manifest = two_colours
    f.write_truncated_png(root / "red" / "broken.png")
    with_bad = pd.concat([manifest, pd.DataFrame([{"path": "red/broken.png", "label": "red"}])], ignore_index=True)

    features, ok = embed.pixel_features(root, list(with_bad["path"]), size=8)
    assert features.shape == (len(with_bad), 8 * 8 * 3)
    assert 0.0 <= features.min() and features.max() <= 1.0
    assert ok == [True] * len(manifest) + [False]

    frame = embed.projection_frame(root, with_bad, method="pca")
    assert "red/broken.png" not in set(frame["path"]) and len(frame) == len(manifest)


def test_odd_modes_are_read_as_rgb(odd_folder) -> None:
    paths = ["odd/cmyk.jpg", "odd/sixteen.png", "odd/rgba.png", "odd/animated.gif", "odd/rotated.jpg"]
    features, ok = embed.pixel_features(odd_folder.root, paths, size=4)
    assert all(ok) and features.shape == (5, 48)
    assert features[0].reshape(4, 4, 3)[..., 0].mean() > 0.9  # the CMYK ink is red


def test_sample_per_class_keeps_every_class_in_proportion() -> None:
    manifest = pd.DataFrame({"path": [f"{i}.png" for i in range(110)], "label": ["big"] * 100 + ["small"] * 10})
    sample = embed.sample_per_class(manifest, max_points=22)

    assert sample["label"].value_counts().to_dict() == {"big": 20, "small": 2}
    assert embed.sample_per_class(manifest, max_points=1000).equals(manifest)
    tiny = embed.sample_per_class(pd.concat([manifest, pd.DataFrame({"path": ["x.png"], "label": ["one"]})]), 11)
    assert "one" in set(tiny["label"])


@pytest.mark.parametrize(
    ("method", "n", "message"), [("umap", 10, "projection 'umap': choose one of pca, tsne"), ("pca", 2, "at least 3")]
)
def test_project_refuses_an_unknown_method_or_too_few_images(method: str, n: int, message: str) -> None:
    with pytest.raises(CoreError, match=message):
        embed.project(np.zeros((n, 12), dtype=np.float32), method)
