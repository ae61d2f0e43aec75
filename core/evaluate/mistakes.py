"""Where the model fails: the images behind a confusion-matrix cell, the most confidently wrong images (fastai's
"top losses") and their Grad-CAM heat maps, which say what the model looked at when it got them wrong.

The heat maps are the only part of evaluation that runs the model again (one forward and a backward through
the head per image, ``core.explain``); a page asks for the few images it shows, never for the whole split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from core.common.errors import CoreError
from core.common.workspace import Workspace
from core.store.runs import RunStore

if TYPE_CHECKING:
    from core.evaluate.evaluation import Evaluation

WORST_SHOWN = 8


def cell_images(frame: pd.DataFrame, true: str, predicted: str) -> pd.DataFrame:
    """The images of class ``true`` that the model called ``predicted``, most confident first."""
    rows = frame[(frame["label"] == true) & (frame["pred1"] == predicted)]
    return rows.sort_values(["p1", "image"], ascending=[False, True], kind="stable")


def worst_images(frame: pd.DataFrame, limit: int = WORST_SHOWN) -> pd.DataFrame:
    """The wrong answers with the highest loss (lowest probability on the true class) first: fastai's top losses."""
    wrong = frame[frame["pred1"] != frame["label"]]
    return wrong.sort_values(["loss", "image"], ascending=[False, True], kind="stable").head(limit)


@dataclass
class Explained:
    """One image with its heat map for the class the model chose."""

    image: str  # path relative to the dataset
    label: str
    predicted: str
    p_predicted: float
    p_true: float
    picture: Image.Image | None  # the image as opened (upright, RGB), at most ``side`` px
    heatmap: np.ndarray | None  # float32 at the picture's size, [0, 1]; None when it could not be made
    note: str = ""  # why there is no picture or no map, in words
    layer: str = ""
    map_size: tuple[int, int] | None = None
    input_size: int | None = None


def explain_rows(
    ws: Workspace, store: RunStore, ev: Evaluation, rows: pd.DataFrame, side: int = 320
) -> list[Explained]:
    """Grad-CAM of the predicted class for each row (``image, label, pred1, p1, p_true``) of ``ev``'s run, with its
    best checkpoint; an image that is gone or unreadable gets its reason instead, and the others go on."""
    from core.explain.predict import load_run_predictor

    if ev.root is None:  # no image can be opened: say why, without loading the model
        return unexplained(rows, ev.root_problem)
    predictor = load_run_predictor(ws, store, ev.run.run_id)
    return [_explained(ws, predictor, ev.root, row, side) for row in rows.itertuples()]


def _explained(ws: Workspace, predictor, root: Path, row, side: int) -> Explained:
    base = Explained(str(row.image), str(row.label), str(row.pred1), float(row.p1), float(row.p_true), None, None)
    try:
        path = ws.confine(root / str(row.image), "image")
        pred = predictor.run(path, str(row.image), cam="gradcam", target=str(row.pred1))
    except CoreError as exc:
        base.note = getattr(exc, "reason", None) or str(exc)
        return base
    picture, heat = _shrunk(pred.picture, pred.heatmap, side)
    base.picture, base.heatmap, base.note = picture, heat, pred.cam_note
    base.layer, base.map_size, base.input_size = pred.cam_layer, pred.cam_map, pred.input_size
    return base


def _shrunk(
    picture: Image.Image | None, heat: np.ndarray | None, side: int
) -> tuple[Image.Image | None, np.ndarray | None]:
    """Picture and map at most ``side`` px (the report inlines them; the page shows them small)."""
    if picture is None:
        return None, heat
    if heat is not None and heat.shape != (picture.height, picture.width):
        picture = picture.resize((heat.shape[1], heat.shape[0]), Image.Resampling.BILINEAR)
    scale = min(1.0, side / max(picture.size))
    if scale >= 1.0:
        return picture, heat
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    small = picture.resize(size, Image.Resampling.LANCZOS)
    if heat is None:
        return small, None
    resized = Image.fromarray(heat.astype(np.float32)).resize(size, Image.Resampling.BILINEAR)
    return small, np.clip(np.asarray(resized, np.float32), 0.0, 1.0)


def overlay_of(item: Explained, opacity: float = 0.5, colormap: str = "jet") -> Image.Image | None:
    """The heat map blended over the picture, or None without a map."""
    from core.explain.overlay import overlay

    if item.picture is None or item.heatmap is None or item.note:
        return None
    return overlay(item.picture, item.heatmap, opacity, colormap)


def enlarged(picture: Image.Image | None, side: int = 160) -> Image.Image | None:
    """Tiny images enlarged by a whole factor with square pixels (an 8x8 digit reads crisply); others as they are."""
    if picture is None or max(picture.size) * 2 > side:
        return picture
    factor = side // max(picture.size)
    return picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)


def unexplained(rows: pd.DataFrame, note: str) -> list[Explained]:
    """The rows without pictures, each with ``note`` (the model could not be loaded)."""
    return [Explained(str(r.image), str(r.label), str(r.pred1), float(r.p1), float(r.p_true), None, None, note)
            for r in rows.itertuples()]  # fmt: skip
