#!/usr/bin/env python3
"""Classify images with the model in this folder, without the studio: numpy, Pillow and onnxruntime only.

    pip install numpy pillow onnxruntime
    python predict.py IMAGE... [--json]

Each image is prepared exactly as the studio prepares it (``preprocess.json`` says how): opened upright (EXIF), a
JPEG decoded at reduced scale when it is much larger than the model's input, transparency laid on white, 16-bit
pictures stretched, the shorter side resized to the input side (bilinear, antialiased) and the centre square kept,
then scaled to 0..1 and normalised per channel. ``--json`` prints what the studio's ``predict --json`` prints: a
list of ``{"image", "top": [{"label", "p"}, ...], "ms", "not_sure", "why"}`` (or ``{"image", "error"}``).

This file is copied into every export by the studio; it imports nothing of the studio.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
TOP_K = 5
FULL_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}
ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}


def load(name: str, default: object = None) -> object:
    path = HERE / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def open_picture(path: str, side: int) -> Image.Image:
    """The upright RGB picture, decoded as the studio decodes it."""
    with Image.open(path) as im:
        im.draft(None, (side, side))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale, never below ``side``
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in FULL_SCALE:
            return stretched(im)
        if im.mode in ALPHA_MODES or "transparency" in im.info:
            if im.mode == "La":
                im = im.convert("LA")
            rgba = im.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        return im.convert("RGB")


def stretched(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float pictures: their 0.5th..99.5th percentiles mapped to 0..255."""
    values = np.asarray(im).astype(np.float32)
    sample = values[:: max(1, values.shape[0] // 512), :: max(1, values.shape[1] // 512)]
    finite = sample[np.isfinite(sample)]
    lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 0.0)
    if finite.size and hi <= lo:
        lo, hi = finite.min(), finite.max()
    if hi > lo:
        scaled = (values - lo) * np.float32(255.0 / (hi - lo))
    else:
        scaled = np.full(values.shape, lo * 255.0 / FULL_SCALE[im.mode], dtype=np.float32)
    grey = np.nan_to_num(np.clip(scaled, 0.0, 255.0), nan=0.0)
    return Image.fromarray(np.rint(grey).astype(np.uint8)).convert("RGB")


def to_input(picture: Image.Image, prep: dict) -> np.ndarray:
    """(C, S, S) float32, normalised as ``preprocess.json`` says."""
    side, channels = int(prep["side"]), int(prep["channels"])
    picture = picture.convert("RGB" if channels == 3 else "L")
    if picture.size != (side, side):
        picture = ImageOps.fit(picture, (side, side), method=Image.Resampling.BILINEAR)
    array = np.asarray(picture, dtype=np.uint8).reshape(side, side, channels).astype(np.float32) / 255.0
    mean, std = np.asarray(prep["mean"], np.float32), np.asarray(prep["std"], np.float32)
    return ((array - mean) / std).transpose(2, 0, 1)


def percent(value: float) -> str:
    """A share as a percentage, never "100%" nor "0%" unless exact (as the studio writes them)."""
    scaled = 100.0 * value
    for digits in range(0, 3):
        text = f"{scaled:.{digits}f}"
        if not ((float(text) >= 100.0 and scaled < 100.0) or (float(text) <= 0.0 and scaled > 0.0)):
            return f"{text}%"
    cut = math.floor(scaled * 100) / 100 if scaled > 50 else math.ceil(scaled * 100) / 100
    return f"{cut:.2f}%"


def judge(top_p: float, unlike: float | None, rules: dict) -> tuple[bool, str]:
    """Not sure, and why: unlike the training photos first, then a weak best guess."""
    if unlike is not None and unlike > 1.0:
        return True, rules.get("unlike_words", "not like the photos this model learned from")
    if top_p < float(rules.get("unsure_p", 0.5)):
        return True, f"its best guess has only {percent(top_p)}"
    return False, ""


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description="Classify images with the exported model.")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--json", action="store_true", help="print JSON, as the studio's predict --json")
    args = parser.parse_args(argv)
    prep, labels, rules = load("preprocess.json"), load("labels.json"), load("not_sure.json", {})
    session = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    rows = []
    for image in args.images:
        began = time.perf_counter()
        try:
            batch = to_input(open_picture(image, int(prep["side"])), prep)[None]
        except (OSError, ValueError, SyntaxError) as exc:
            rows.append({"image": image, "error": f"cannot be read as an image ({exc})"})
            continue
        out = dict(zip(names, session.run(None, {"image": batch}), strict=True))
        probs = out["probabilities"][0]
        ms = (time.perf_counter() - began) * 1000
        order = np.argsort(-probs, kind="stable")[: min(TOP_K, len(labels))]
        top = [{"label": labels[i], "p": round(float(probs[i]), 6)} for i in order]
        unlike = float(out["unlike"][0]) if "unlike" in out else None
        not_sure, why = judge(float(probs[order[0]]), unlike, rules)
        rows.append({"image": image, "top": top, "ms": round(ms, 2), "not_sure": not_sure, "why": why})
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    else:
        for row in rows:
            if "error" in row:
                sys.stdout.write(f"{row['image']}: error: {row['error']}\n")
                continue
            top = ", ".join(f"{t['label']} {percent(t['p'])}" for t in row["top"])
            sys.stdout.write(
                f"{row['image']}: {top}" + (f"  (not sure: {row['why']})" if row["not_sure"] else "") + "\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
