"""Real photographs that ship with installed packages, and the copies a real photo folder collects.

No one here made these pictures, so the duplicate search and the scan are tried on data they were not tuned on:

* ``skimage.data`` (astronaut, coffee, chelsea, rocket, camera, ... as files in the scikit-image package) when
  scikit-image is installed; its files are read directly, so the package need not import cleanly;
* otherwise the photos scikit-learn ships (``china.jpg``, ``flower.jpg``, always here: scikit-learn is a
  requirement) and matplotlib's ``grace_hopper.jpg`` (installed with grad-cam).

``write_photo_folder`` makes a flat folder of them plus the copies a real folder collects (resized, grayscale,
with an alpha channel, re-encoded, PNM) and their mirror images (which are *not* copies); ``write_crops`` cuts
many small distinct JPEG crops for the benchmarks.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Photographs (not drawings, text or synthetic patterns) in scikit-image's data folder, in a fixed order.
SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png", "motorcycle_left.png",
                  "coins.png", "moon.png", "retina.jpg", "hubble_deep_field.jpg", "grass.png", "gravel.png",
                  "brick.png", "ihc.png", "clock_motion.png")  # fmt: skip


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def photo_files() -> list[Path]:
    """Paths of the real photos available here: scikit-image's when installed, else scikit-learn's + matplotlib's."""
    skimage = _package_dir("skimage")
    if skimage is not None and (skimage / "data").is_dir():
        found = [skimage / "data" / name for name in SKIMAGE_PHOTOS if (skimage / "data" / name).is_file()]
        if len(found) >= 3:
            return found
    files = []
    sklearn = _package_dir("sklearn")
    if sklearn is not None:
        files += [sklearn / "datasets" / "images" / n for n in ("china.jpg", "flower.jpg")]
    mpl = _package_dir("matplotlib")
    if mpl is not None:
        files.append(mpl / "mpl-data" / "sample_data" / "grace_hopper.jpg")
    return [f for f in files if f.is_file()]


def load_photos() -> dict[str, Image.Image]:
    """The available real photos as RGB images, by file stem."""
    return {p.stem: Image.open(p).convert("RGB") for p in photo_files()}


@dataclass
class PhotoFolder:
    """A flat folder of real photos and their copies: ``truth`` maps each file to the photo it shows."""

    root: Path
    truth: dict[str, str] = field(default_factory=dict)  # file name -> photo stem (copies share it)
    flips: set[str] = field(default_factory=set)  # mirror images: the same photo's stem, but NOT copies

    def copy_groups(self) -> set[frozenset[str]]:
        """The groups a duplicate search must find: each photo with its copies, mirror images left out."""
        by_photo: dict[str, set[str]] = {}
        for name, stem in self.truth.items():
            by_photo.setdefault(stem, set()).add(name)
        return {frozenset(g) for g in by_photo.values() if len(g) > 1}


def write_photo_folder(root: Path, *, max_side: int = 512) -> PhotoFolder:
    """A flat folder (no class folders): every real photo (its long side at most ``max_side``) as PNG, plus
    a half-size JPEG, a grayscale PNG, an RGBA PNG, a PPM, a PGM and a q60 re-encode of each; and a mirror image."""
    root.mkdir(parents=True, exist_ok=True)
    folder = PhotoFolder(root)
    for stem, im in load_photos().items():
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        half = im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)
        writes = {f"{stem}.png": (im, {}), f"{stem}_half.jpg": (half, {"quality": 85}),
                  f"{stem}_gray.png": (im.convert("L"), {}), f"{stem}_alpha.png": (im.convert("RGBA"), {}),
                  f"{stem}.ppm": (im, {}), f"{stem}_gray.pgm": (im.convert("L"), {}),
                  f"{stem}_q60.jpg": (im, {"quality": 60})}  # fmt: skip
        for name, (picture, params) in writes.items():
            picture.save(root / name, **params)
            folder.truth[name] = stem
        ImageOps.mirror(im).save(root / f"{stem}_mirror.png")
        folder.flips.add(f"{stem}_mirror.png")
    return folder


def crop_jobs(n: int, size: int = 160, seed: int = 0) -> list[tuple[int, int, float, int, int, int]]:
    """(photo index, 90-degree turns, scale, x, y, JPEG quality) for ``n`` crops, deterministic for ``seed``.

    Quality 85-92: about 7 KB per 160x160 crop, as the crops of the issue that asked for this benchmark."""
    sizes = [Image.open(p).size for p in photo_files()]
    rng = np.random.default_rng(seed)
    jobs = []
    for _ in range(n):
        k = int(rng.integers(len(sizes)))
        w, h = sizes[k]
        scale = float(rng.uniform(size / min(w, h), 1.0)) if min(w, h) > size else 1.0
        sw, sh = max(size, int(w * scale)), max(size, int(h * scale))
        jobs.append((k, int(rng.integers(4)), scale, int(rng.integers(0, sw - size + 1)),
                     int(rng.integers(0, sh - size + 1)), int(rng.integers(85, 93))))  # fmt: skip
    return jobs


def write_crop(path: Path, photo: Image.Image, job: tuple[int, int, float, int, int, int], size: int = 160) -> None:
    """One crop: the photo scaled, turned by quarter turns, cut to ``size`` x ``size`` and saved as a JPEG."""
    _, turns, scale, x, y, quality = job
    w, h = max(size, int(photo.width * scale)), max(size, int(photo.height * scale))
    im = photo.resize((w, h), Image.Resampling.BILINEAR) if (w, h) != photo.size else photo
    im.crop((x, y, x + size, y + size)).rotate(90 * turns).save(path, "JPEG", quality=quality)


# --- real photos cut into classes (the training recipe's tests and its zoo, bench.bench_recipe) -------------------


def photo_regions(n_classes: int) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(photo stem, region as fractions x0, y0, x1, y1) for ``n_classes`` classes: one whole photo per class while
    there are photos enough, else each photo cut into 2, then 4, ... side-by-side strips (the strips of one photo
    share its colours and textures: a harder task than telling photos apart)."""
    stems = [p.stem for p in photo_files()]
    if not stems:
        raise RuntimeError("no real photos installed (scikit-image, scikit-learn or matplotlib)")
    parts = 1
    while len(stems) * parts < n_classes:
        parts *= 2
    regions = [(stem, (i / parts, 0.0, (i + 1) / parts, 1.0)) for stem in stems for i in range(parts)]
    return regions[:n_classes]


def write_photo_classes(
    root: Path,
    counts: list[int] | int,
    side: int,
    *,
    n_classes: int | None = None,
    gray: bool = False,
    seed: int = 0,
    zoom: tuple[float, float] = (0.25, 0.6),
) -> Path:
    """``root/<class>/<i>.jpg``: a folder-per-class dataset cut from the real photos (:func:`photo_regions`).

    Each image is a random square crop of its class's region (a ``zoom`` share of the region's shorter side, at a
    random place), mirrored half the time, with its brightness, contrast and saturation jittered by up to 25%, made
    ``side`` x ``side`` px (and grey when ``gray``), saved as a JPEG of quality 85-95. ``counts``: images per class
    (one number for every class, or one per class: an imbalanced set). Deterministic for ``seed``.
    """
    from PIL import ImageEnhance

    per_class = [counts] * (n_classes or 0) if isinstance(counts, int) else list(counts)
    if not per_class:
        raise ValueError("give n_classes with a single count")
    photos = load_photos()
    for k, (stem, (fx0, fy0, fx1, fy1)) in enumerate(photo_regions(len(per_class))):
        photo = photos[stem]
        w, h = photo.size
        x0, y0, rw, rh = fx0 * w, fy0 * h, (fx1 - fx0) * w, (fy1 - fy0) * h
        folder = root / f"{stem}_{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class[k]):
            rng = np.random.default_rng([seed, k, i])
            cut = float(rng.uniform(*zoom)) * min(rw, rh)
            x, y = x0 + float(rng.uniform(0, rw - cut)), y0 + float(rng.uniform(0, rh - cut))
            im = photo.resize((side, side), Image.Resampling.BILINEAR, box=(x, y, x + cut, y + cut))
            if rng.random() < 0.5:
                im = ImageOps.mirror(im)
            for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                im = enhance(im).enhance(float(rng.uniform(0.75, 1.25)))
            (im.convert("L") if gray else im).save(folder / f"{i}.jpg", quality=int(rng.integers(85, 96)))
    return root
