"""The scale bench's data: N photo-like 128 px JPEGs in 4 class folders, made once per size and reused.

Image ``i`` is a function of ``i`` alone (seeded by it), and its name too, so the first N images of every size
are the same files: a size hard-links what another complete size already has and makes only the rest. Each class
has its own look (a colour family and a shape family over textured noise: a LeNet learns them in one epoch), and
a few percent of the images are copies of an earlier image (:data:`COPY_SHARE` byte copies, :data:`REENCODE_SHARE`
decoded and saved again at a lower quality) in that image's class, so dedup has something to find.

A folder ``n<N>`` is complete when its marker (:data:`MARKER`, hidden, so scans skip it) says so; the marker is
written last, so a killed generation is taken up again: files are written under a hidden temporary name and
renamed, so every file with its final name is whole and is kept.
"""

from __future__ import annotations

import colorsys
import io
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bench.bench_scan import noise_tile

CLASSES = ("discs", "boxes", "stripes", "rings")
SIDE = 128  # source pixels; the decode's side is the stage's --image-size
QUALITY = 85
REENCODE_QUALITY = 70
COPY_SHARE = 0.03
REENCODE_SHARE = 0.02
GENERATOR_VERSION = 1  # bump when the images change: folders made by another version are made again
MARKER = ".bench-scale.json"
TEMP_PREFIX = ".tmp-"
POOL_PROCESSES = 2  # the shared VM's two cores
NOISE_SIDE = 384


@dataclass(frozen=True)
class Origin:
    """Where image ``i`` comes from: its own picture, or a copy (bytes, or re-encoded) of an earlier image."""

    kind: str  # "own", "copy", "reencode"
    source: int


def origin(i: int) -> Origin:
    rng = np.random.default_rng([GENERATOR_VERSION, i, 7])
    r = rng.random()
    if i < 10 or r >= COPY_SHARE + REENCODE_SHARE:
        return Origin("own", i)
    source = int(rng.integers(0, i))  # always earlier: the first N images never name one past N
    return Origin("copy" if r < COPY_SHARE else "reencode", source)


def class_of(i: int) -> int:
    """A copy is in its source's class (a copy with another label would be a label conflict, not a copy)."""
    while (o := origin(i)).kind != "own":
        i = o.source
    return i % len(CLASSES)


def image_name(i: int) -> str:
    return f"{CLASSES[class_of(i)]}/img_{i:07d}.jpg"


def n_copies(n: int) -> int:
    """Images among the first ``n`` that are a copy of another: each is one redundant image for dedup."""
    return sum(1 for i in range(n) if origin(i).kind != "own")


def _colour(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


def make_image(i: int) -> Image.Image:
    """Class ``class_of(i)``'s look: its hue family as the background's, with low-frequency texture, and its shape
    family (discs, boxes, stripes, rings) in contrasting colours; then a slight blur and fine noise."""
    rng = np.random.default_rng([GENERATOR_VERSION, i])
    k = class_of(i)
    hue = k / len(CLASSES) + rng.uniform(-0.08, 0.08)
    base = np.array(_colour(hue, rng.uniform(0.4, 0.9), rng.uniform(0.5, 0.95)), np.float32)
    coarse = rng.normal(0, 30, (SIDE // 16 + 2, SIDE // 16 + 2, 3)).astype(np.float32)
    texture = np.stack([np.asarray(Image.fromarray(coarse[..., c]).resize((SIDE, SIDE), Image.Resampling.BICUBIC))
                        for c in range(3)], axis=-1)  # fmt: skip
    im = Image.fromarray((base + texture).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 7))):
        fill = _colour(hue + 0.5 + rng.uniform(-0.1, 0.1), rng.uniform(0.5, 1), rng.uniform(0.3, 1))
        x0, y0 = (int(v) for v in rng.integers(0, SIDE - 24, 2))
        x1, y1 = x0 + int(rng.integers(16, 56)), y0 + int(rng.integers(16, 56))
        if k == 0:
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        elif k == 1:
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        elif k == 2:
            dx = int(rng.integers(-SIDE // 2, SIDE // 2))
            draw.line([(x0, 0), (x0 + dx, SIDE)], fill=fill, width=int(rng.integers(4, 10)))
        else:
            draw.ellipse([x0, y0, x1, y1], outline=fill, width=int(rng.integers(3, 7)))
    im = im.filter(ImageFilter.BoxBlur(1))
    oy, ox = (int(v) for v in rng.integers(0, NOISE_SIDE - SIDE + 1, 2))
    pixels = np.asarray(im, np.int16) + noise_tile(NOISE_SIDE, 6, GENERATOR_VERSION)[oy : oy + SIDE, ox : ox + SIDE]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _encode(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def jpeg_bytes(i: int) -> bytes:
    """The file of image ``i``: its own picture at :data:`QUALITY`, or its source's bytes (copy), or its source
    decoded and saved again at :data:`REENCODE_QUALITY` (the encoder is deterministic, so copies are exact)."""
    o = origin(i)
    if o.kind == "own":
        return _encode(make_image(i), QUALITY)
    source = jpeg_bytes(o.source)
    if o.kind == "copy":
        return source
    return _encode(Image.open(io.BytesIO(source)).convert("RGB"), REENCODE_QUALITY)


def _write(job: tuple[str, int]) -> None:
    root, i = job
    target = Path(root) / image_name(i)
    temp = target.with_name(TEMP_PREFIX + target.name)
    temp.write_bytes(jpeg_bytes(i))
    os.replace(temp, target)  # a file under its final name is always whole


# --------------------------------------------------------------------------------------------------------------
# The folders


def folder(cache: Path, n: int) -> Path:
    return cache / f"n{n}"


def _wanted(n: int) -> dict:
    return {"n": n, "version": GENERATOR_VERSION, "classes": list(CLASSES), "complete": True}


def is_complete(root: Path, n: int) -> bool:
    marker = root / MARKER
    try:
        return json.loads(marker.read_text()) == _wanted(n)
    except (OSError, ValueError):
        return False


def ensure(cache: Path, n: int) -> Path:
    """The folder of the first ``n`` images, made (or finished) unless complete; what another complete size
    already has is hard-linked."""
    root = folder(cache, n)
    if is_complete(root, n):
        return root
    marker = root / MARKER
    if root.exists() and any(root.iterdir()):
        if not marker.is_file():
            raise SystemExit(f"{root} is not empty and was not made by this bench; choose another --cache")
        started = json.loads(marker.read_text())
        if started.get("version") != GENERATOR_VERSION or started.get("n") != n:
            for name in CLASSES:  # another generator's images: the marker proves the folders are ours
                shutil.rmtree(root / name, ignore_errors=True)
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for stray in (root / name).glob(TEMP_PREFIX + "*"):  # a write the kill cut short
            stray.unlink()
    marker.write_text(json.dumps({**_wanted(n), "complete": False}))
    have = {f"{d.name}/{p.name}" for d in (root / c for c in CLASSES) for p in os.scandir(d)}
    todo = _link_smaller(cache, n, root, have)
    started_at = time.perf_counter()
    if todo:
        print(f"  making {len(todo):,} images in {root} ({POOL_PROCESSES} processes)", flush=True)
        with multiprocessing.get_context("spawn").Pool(POOL_PROCESSES) as pool:
            jobs = [(str(root), i) for i in todo]
            for done, _ in enumerate(pool.imap_unordered(_write, jobs, chunksize=256), 1):
                if done % 20000 == 0 or done == len(todo):
                    print(f"  made {done:,}/{len(todo):,} in {time.perf_counter() - started_at:.0f} s", flush=True)
    count = sum(1 for c in CLASSES for p in os.scandir(root / c) if not p.name.startswith("."))
    if count != n:
        raise SystemExit(f"BROKEN RUN: {root} holds {count} images after generation, not {n}")
    marker.write_text(json.dumps(_wanted(n)))  # last: only now is the folder complete
    return root


def _link_smaller(cache: Path, n: int, root: Path, have: set[str]) -> list[int]:
    """Hard-link the first images from the complete size that has most of them (a smaller one, or a larger one:
    its first ``n`` are these); the indices still to make."""
    other = max((m for m in _complete_sizes(cache) if m != n), key=lambda m: min(m, n), default=0)
    linked = min(other, n)
    names = [image_name(i) for i in range(n)]
    for i in range(linked):
        if names[i] not in have:
            os.link(folder(cache, other) / names[i], root / names[i])
    if linked:
        print(f"  linked the first {linked:,} images from {folder(cache, other)}", flush=True)
    return [i for i in range(linked, n) if names[i] not in have]


def _complete_sizes(cache: Path) -> list[int]:
    sizes = []
    for d in cache.glob("n*") if cache.is_dir() else []:
        if d.name[1:].isdigit() and is_complete(d, int(d.name[1:])):
            sizes.append(int(d.name[1:]))
    return sizes


def folder_bytes(root: Path) -> int:
    """Bytes of the files under ``root`` (each hard-linked file once)."""
    seen: set[int] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total
