"""What the Classify page classifies (dropped files or one webcam photo) and the results it keeps.

Results are kept per browser tab in ``st.session_state[RESULTS]``, keyed by (upload id, model, method, class):
moving the opacity slider or changing the colour map redraws the overlay from the stored heat map and never
recomputes the CAM. Stored pictures and maps are cut to display size, so a tab holding many photos stays small.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import numpy as np
import streamlit as st
from PIL import Image, ImageOps

from core.common.errors import CoreError, ImageError
from core.explain.methods import ALL_METHODS
from core.explain.predict import Prediction, Predictor
from core.images.opener import open_image
from ui.classify.models import ModelChoice
from ui.text import plain

MAX_UPLOAD_MB = 50  # per file; the server-wide limit in .streamlit/config.toml is larger, for dataset ZIPs
RESULTS = "classify_results"  # session key: {(upload id, model key, method, class): Prediction | error text}
STORED_SIDE = 640  # pictures and heat maps are kept at most this large (display size)
HASHES = "classify_hashes"  # session key: {uploader's file id: content hash}
SHOWN_SIDE = 360  # tiny images (8x8 digits) are enlarged pixel by pixel to about this
FILES, WEBCAM = "Files from this computer", "The webcam"

Result = Prediction | str  # a prediction, or why the file could not be used (in words)


@dataclass(frozen=True)
class Upload:
    """One picture to classify: a dropped file or a webcam photo. ``file_id`` is its content's hash, so the same
    photo added twice is one upload with one result."""

    name: str
    file_id: str
    data: bytes

    def getvalue(self) -> bytes:
        return self.data

    @classmethod
    def of(cls, file, name: str | None = None) -> Upload:
        data = file.getvalue()
        hashes = st.session_state.setdefault(HASHES, {})  # hashed once per upload, not on every rerun
        if file.file_id not in hashes:
            hashes[file.file_id] = hashlib.sha1(data, usedforsecurity=False).hexdigest()
        return cls(name or file.name, hashes[file.file_id], data)


def source_picker() -> list[Upload]:
    """The dropped files (each picture once) or the webcam photo, as the user chose; empty until there is one."""
    source = st.radio("Pictures from", [FILES, WEBCAM], horizontal=True, key="classify_source",
                      label_visibility="collapsed")  # fmt: skip
    if source == WEBCAM:
        photo = st.camera_input("Take a photo: it is classified and explained like a dropped file",
                                key="classify_camera")  # fmt: skip
        return [Upload.of(photo, "Webcam photo")] if photo is not None else []
    files = st.file_uploader("Drop one image or many", accept_multiple_files=True, key="classify_files",
                             max_upload_size=MAX_UPLOAD_MB,
                             help="JPEG, PNG, WebP, BMP, GIF or TIFF. Each file's content is checked, whatever "
                             "its name says.")  # fmt: skip
    return unique(files or [])


def unique(files: list) -> list[Upload]:
    """Each picture once, in the order first added; a note names the files added again (same content)."""
    seen: dict[str, Upload] = {}
    again = []
    for file in files:
        upload = Upload.of(file)
        if upload.file_id in seen:
            again.append(file.name)
        else:
            seen[upload.file_id] = upload
    if again:
        names = ", ".join(sorted(set(again))[:5]) + (" and more" if len(set(again)) > 5 else "")
        st.caption(f"Added more than once, classified once: {plain(names)}. Remove the extra copies above with ✕.")
    return list(seen.values())


def _results() -> dict[tuple, Result]:
    return st.session_state.setdefault(RESULTS, {})


def is_stored(key: tuple) -> bool:
    return key in _results()


def forget_others(uploads: list[Upload]) -> None:
    """Drop the results of pictures that are no longer uploaded."""
    keep = {u.file_id for u in uploads}
    results = _results()
    for key in [k for k in results if k[0] not in keep]:
        del results[key]


def classified(predictor: Predictor, model: ModelChoice, file: Upload) -> Result:
    key = (file.file_id, model.key, None, None)
    results = _results()
    if key not in results:
        try:
            pred = predictor.run(file.getvalue(), file.name)  # what the command line and the endpoint call too
            # The model's copy of a big JPEG is decoded at reduced scale (draft); show the full-quality one.
            results[key] = replace(pred, picture=_fit(open_image(file.getvalue()), STORED_SIDE))
        except ImageError as exc:
            results[key] = exc.reason
    return results[key]


def explained(predictor: Predictor, model: ModelChoice, file: Upload, method: str, target: str) -> Result:
    key = (file.file_id, model.key, method, target)
    results = _results()
    if key not in results:
        try:
            with st.spinner(f"{ALL_METHODS[method].label} on {plain(file.name)}..."):
                pred = predictor.run(file.getvalue(), file.name, cam=method, target=target or None)
            # The map comes at the image's own size; kept at the size it is shown at (a 12 MP map is 48 MB).
            scale = min(1.0, STORED_SIDE / max(pred.size))
            size = (max(1, round(pred.size[0] * scale)), max(1, round(pred.size[1] * scale)))
            heat = np.asarray(Image.fromarray(pred.heatmap).resize(size, Image.Resampling.BILINEAR), np.float32)
            results[key] = replace(pred, picture=None, heatmap=heat)
        except CoreError as exc:
            results[key] = str(exc)
    return results[key]


def _fit(picture: Image.Image, side: int) -> Image.Image:
    """Shrunk to fit ``side`` (smooth) when larger; small images are left alone."""
    if max(picture.size) <= side:
        return picture
    return ImageOps.contain(picture, (side, side), Image.Resampling.LANCZOS)


def enlarged(picture: Image.Image, side: int = SHOWN_SIDE) -> Image.Image:
    """Enlarged by a whole factor with square pixels (NEAREST) when tiny, so 8x8 digits read crisply. The heat
    map goes through here too, after blending at the picture's own size: both show the same pixels."""
    factor = max(1, math.ceil(side / max(picture.size)))
    if factor == 1:
        return picture
    return picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)
