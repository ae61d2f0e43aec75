"""Many pictures on the Classify page: classified with a progress bar, a CSV of the predictions (the command
line's table), a gallery where an unreadable file says why in its own cell, and a picker to look closer."""

from __future__ import annotations

import streamlit as st
from PIL import Image, ImageOps

from core.common.percent import percent
from core.common.untrusted import spreadsheet_csv
from core.explain import predict
from core.explain.predict import Predictor
from ui.classify.models import ModelChoice
from ui.classify.results import Result, Upload, classified, is_stored
from ui.classify.words import not_sure_words
from ui.text import plain

THUMB_SIDE = 150
GALLERY_COLUMNS = 6
GALLERY_MAX = 60


def batch(predictor: Predictor, model: ModelChoice, files: list[Upload]) -> list[Result]:
    """Classify every file (new ones only), then the summary, the CSV download and the gallery."""
    todo = [f for f in files if not is_stored((f.file_id, model.key, None, None))]
    bar = st.progress(0.0, text=f"Classifying {len(todo)} images...") if len(todo) > 1 else None
    for i, file in enumerate(todo):
        classified(predictor, model, file)
        if bar is not None:
            bar.progress((i + 1) / len(todo), text=f"Classifying: {i + 1} / {len(todo)}")
    if bar is not None:
        bar.empty()
    preds = [classified(predictor, model, f) for f in files]
    bad = sum(isinstance(p, str) for p in preds)
    head, button = st.columns([4, 1], vertical_alignment="center")
    head.markdown(f"**{len(files)} images** · {len(files) - bad} classified"
                  + (f" · **{bad} could not be read** (see below)" if bad else ""))  # fmt: skip
    button.download_button("Predictions (CSV)", predictions_csv(files, preds), file_name="predictions.csv",
                           mime="text/csv", icon=":material/download:", key="classify_csv")  # fmt: skip
    gallery(files, preds)
    return preds


def predictions_csv(files: list[Upload], preds: list[Result]) -> bytes:
    """The batch as the same table ``predict --csv`` writes (safe to open in a spreadsheet)."""
    rows = [{"image": f.name, "error": p} if isinstance(p, str) else p.to_json() | {"image": f.name}
            for f, p in zip(files, preds, strict=True)]  # fmt: skip
    return spreadsheet_csv(predict.predictions_table(rows)).encode()


def gallery(files: list[Upload], preds: list[Result]) -> None:
    """A grid of thumbnails with the top label and its probability; an unreadable file says why in its cell."""
    shown = list(zip(files, preds, strict=True))[:GALLERY_MAX]
    if len(files) > GALLERY_MAX:
        st.caption(f"Showing the first {GALLERY_MAX} of {len(files)} images; the CSV has them all.")
    for start in range(0, len(shown), GALLERY_COLUMNS):
        for cell, (file, pred) in zip(
            st.columns(GALLERY_COLUMNS), shown[start : start + GALLERY_COLUMNS], strict=False
        ):
            with cell.container(border=True):
                if isinstance(pred, str):  # the reason in words, in the cell of the file that caused it
                    st.markdown(":red[:material/broken_image: **Cannot use this file**]")
                    st.markdown(f":red[{plain(pred)}]")
                else:
                    st.image(_thumb(pred.picture), width="stretch")
                    st.markdown(f"**{plain(str(pred.top[0]['label']))}** · {percent(float(pred.top[0]['p']))}")
                    if pred.not_sure:
                        st.markdown(":orange[:material/help: **Not sure**]", help=not_sure_words(pred))
                st.caption(plain(file.name))


def _thumb(picture: Image.Image) -> Image.Image:
    """A THUMB_SIDE square: tiny images enlarged with square pixels, others shrunk, padded on white."""
    resample = Image.Resampling.NEAREST if max(picture.size) < THUMB_SIDE else Image.Resampling.LANCZOS
    return ImageOps.pad(picture, (THUMB_SIDE, THUMB_SIDE), resample, color=(255, 255, 255))


def pick_one(files: list[Upload], preds: list[Result]) -> Upload | None:
    """The batch file to look at closely (readable ones only)."""
    good = [f for f, p in zip(files, preds, strict=True) if not isinstance(p, str)]
    if not good:
        return None
    names = {f.file_id: f.name for f in good}
    chosen = st.selectbox("Look closer at one image", list(names), format_func=names.get, key="classify_closer")
    return next(f for f in good if f.file_id == chosen)
