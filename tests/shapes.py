"""A generated dataset with known object boxes: coloured shapes on textured backgrounds.

Used to check that Grad-CAM points at the object: each image holds one shape (the class) of a random colour,
size, rotation and position on a random texture (noise, stripes, gradient or checks), so neither colour nor
position nor background tells the class; only the shape does, and its box is known exactly.

Layout written under ``root``: ``<split>/<class>/<class>_<nnnn>.png`` for the splits train/val/test, plus
``boxes.json`` mapping each file's path (relative to ``root``, with ``/``) to its object box ``[x0, y0, x1, y1]``:
the tight box of the pixels at least half covered by the shape, x1/y1 exclusive (as ``PIL.Image.getbbox``).
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SPLIT_FRACTIONS: dict[str, float] = {"train": 0.7, "val": 0.15, "test": 0.15}
_SUPERSAMPLE = 4  # shapes are drawn 4x larger then reduced: smooth edges, like a photo
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Recipe:
    """An image set of shapes and how long the studio's default recipe trains on it (the rest is its own choice)."""

    seed: int  # of the images: a seed used nowhere else, so neither the recipe nor the CAM code saw them
    n_per_class: int
    size: int  # px, square
    epochs: int  # 0: the default recipe's automatic epochs
    batch_size: int = 64  # the default recipe's


# The 96 px localisation acceptance (tests/explain/test_cam_acceptance.py, bench/bench_cam_localisation.py): the
# default recipe's full run (6-17 min of training on 2 cores, with the machine's load).
FULL_96 = Recipe(seed=20261207, n_per_class=400, size=96, epochs=0)


def make_shapes_dataset(root: Path, *, n_per_class: int, size: int = 64, seed: int) -> dict[str, Box]:
    """Write ``n_per_class`` images per class (70% train, 15% val, 15% test, each split at least one) under
    ``root`` and return every file's object box keyed by its relative path; also written to ``boxes.json``.

    The same ``seed`` gives the same files.
    """
    if n_per_class < 3 or size < 16:
        raise ValueError(f"need n_per_class >= 3 (one image per split) and size >= 16, got {n_per_class}, {size}")
    return _write_shapes(root, split_counts(n_per_class), size, seed)


def make_shapes_test_set(root: Path, *, n_per_class: int, size: int, seed: int) -> dict[str, Box]:
    """Only a ``test/`` split of ``n_per_class`` images per class (same layout and ``boxes.json``): more images
    to measure a model on than a dataset's own 15%, drawn with another ``seed`` than the training set's."""
    return _write_shapes(root, {"test": n_per_class}, size, seed)


def _write_shapes(root: Path, counts: dict[str, int], size: int, seed: int) -> dict[str, Box]:
    rng = np.random.default_rng(seed)
    boxes: dict[str, Box] = {}
    for split, count in counts.items():
        for label in CLASSES:
            for i in range(count):
                image, box = shape_image(rng, label, size)
                relative = f"{split}/{label}/{label}_{i:04d}.png"
                (root / split / label).mkdir(parents=True, exist_ok=True)
                image.save(root / relative)
                boxes[relative] = box
    (root / "boxes.json").write_text(json.dumps({k: list(v) for k, v in boxes.items()}, indent=1))
    return boxes


def split_counts(n_per_class: int) -> dict[str, int]:
    """Images per class in each split: 15% val and test (at least one each), the rest train."""
    val = max(1, round(n_per_class * SPLIT_FRACTIONS["val"]))
    test = max(1, round(n_per_class * SPLIT_FRACTIONS["test"]))
    return {"train": n_per_class - val - test, "val": val, "test": test}


def box_contains(box: Box, y: int, x: int) -> bool:
    """Whether pixel (y, x) lies inside ``box`` (x0, y0, x1, y1), x1/y1 exclusive."""
    x0, y0, x1, y1 = box
    return x0 <= x < x1 and y0 <= y < y1


def shape_image(rng: np.random.Generator, label: str, size: int) -> tuple[Image.Image, Box]:
    """One RGB image of ``size`` x ``size`` px with one ``label`` shape, and the shape's box."""
    big = size * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    _draw_shape(ImageDraw.Draw(mask), rng, label, big)
    alpha = np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
    colour = np.array(_vivid_colour(rng), dtype=np.float32)
    # The shape gets a little texture too: a flat fill would be an unrealistically easy cue.
    fill = colour + rng.normal(0.0, 10.0, (size, size, 3))
    pixels = _background(rng, size) * (1.0 - alpha[..., None]) + fill * alpha[..., None]
    ys, xs = np.nonzero(alpha >= 0.5)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)), box


def _draw_shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, label: str, big: int) -> None:
    """Draw ``label`` in white: radius 15-30% of the side, random rotation, wholly inside the image."""
    radius = rng.uniform(0.15, 0.30) * big
    margin = radius + 2 * _SUPERSAMPLE
    cx, cy = rng.uniform(margin, big - margin, size=2)
    turn = rng.uniform(0.0, 2 * math.pi)
    if label == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        return
    if label == "star":  # 5 points, inner radius 45% of the outer
        radii = [radius if k % 2 == 0 else 0.45 * radius for k in range(10)]
        angles = [turn + k * math.pi / 5 for k in range(10)]
    else:
        corners = {"square": 4, "triangle": 3}[label]
        radii = [radius] * corners
        angles = [turn + k * 2 * math.pi / corners for k in range(corners)]
    draw.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, angles, strict=True)], fill=255)


def _vivid_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """A saturated, bright colour of any hue (0-255 per channel)."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
    return r * 255, g * 255, b * 255


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A greyish colour of any hue and brightness: backgrounds stay distinct from the vivid shapes."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.35), rng.uniform(0.2, 0.9))
    return np.array([r, g, b], dtype=np.float32) * 255


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float texture: noise blobs, stripes, a gradient or checks, plus fine grain."""
    kind = rng.choice(["noise", "stripes", "gradient", "checks"])
    first, second = _muted_colour(rng), _muted_colour(rng)
    if kind == "noise":  # coarse random blobs: a low-resolution random field upsampled smoothly
        coarse = rng.uniform(0, 255, (max(2, size // 8),) * 2).astype(np.uint8)
        mix = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)) / 255.0
    else:
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        angle = rng.uniform(0, math.pi)
        along = xs * math.cos(angle) + ys * math.sin(angle)
        if kind == "stripes":
            mix = 0.5 + 0.5 * np.sin(2 * math.pi * along / rng.uniform(4, 14))
        elif kind == "gradient":
            mix = (along - along.min()) / max(float(np.ptp(along)), 1.0)
        else:
            cell = int(rng.integers(4, 12))
            mix = ((xs // cell + ys // cell) % 2).astype(np.float32)
    mix = np.asarray(mix, dtype=np.float32)[..., None]
    return first * (1 - mix) + second * mix + rng.normal(0.0, 8.0, (size, size, 3))
