"""What the Classify page says of an answer the model is not sure of (``core.train.familiar``)."""

from __future__ import annotations

from core.explain.predict import Prediction
from core.train.familiar import UNLIKE
from ui.text import plain


def not_sure_words(pred: Prediction) -> str:
    """ "**Not sure.** This photo is not like the photos this model learned from: “9” may mean nothing." """
    label = plain(str(pred.top[0]["label"]))
    if pred.why == UNLIKE:
        return (f"**Not sure.** This photo is {UNLIKE}: “{label}” is only the closest of the classes it knows, "
                "and may mean nothing.")  # fmt: skip
    return f"**Not sure.** {plain(pred.why).capitalize()}: “{label}” could well be wrong."
