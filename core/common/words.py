"""The studio's words for what it stores: run statuses, splits, the choice values of training options, metric
names and durations. The pages, the command line's text output and the HTML report all read them here, so one
thing has one name wherever a person meets it. (Option names are ``core.train.config.LABELS``; network names
``core.train.archs.arch_label``, from the architecture registry.)

Only words: nothing here decides anything, and the stored values (``completed``, ``val``, ``crop-flip``) stay what
the command line takes and the run store holds.
"""

from __future__ import annotations

from collections.abc import Mapping

# -- runs -------------------------------------------------------------------------------------------------------

STATUS_WORDS: Mapping[str, str] = {
    "queued": "waiting", "running": "training", "completed": "finished", "cancelled": "stopped", "failed": "failed",
    "crashed": "interrupted", "pruned": "cut short (hopeless)",
}  # fmt: skip


def status_word(status: str) -> str:
    """A run's status as a person says it ("finished" for ``completed``); an unknown one as it is."""
    return STATUS_WORDS.get(status, status)


# -- splits -----------------------------------------------------------------------------------------------------

SPLITS: tuple[str, ...] = ("train", "val", "test")  # the split names every stored split uses, in this order
SCORED_SPLITS: tuple[str, ...] = ("test", "val")  # what a finished run can be scored on (it trained on the other)
SPLIT_WORDS: Mapping[str, str] = {"train": "training", "val": "validation", "test": "test"}


def split_word(split: str) -> str:
    """``val`` -> "validation", as in "the 40 validation images"."""
    return SPLIT_WORDS.get(split, split)


# -- choices ----------------------------------------------------------------------------------------------------

AUTOMATIC = "Automatic"  # ``auto`` and 0-means-automatic values before the run resolves them
CHOICE_WORDS: Mapping[str, Mapping[str, str]] = {
    "weights": {"none": "Random (from scratch)", "imagenet": "ImageNet (pretrained)"},
    "freeze": {"none": "Nothing frozen", "backbone": "Backbone (train the head only)",
               "all-but-last": "All but the last stage"},
    "schedule": {"cycles": "Cycles (as long as it learns)", "plateau": "Drop on plateau", "onecycle": "One cycle",
                 "cosine": "Cosine", "step": "Steps at given epochs", "none": "Constant"},
    "augment": {"none": "None", "flip": "Flips", "crop": "Shifts", "crop-flip": "Shifts and flips",
                "strong": "Strong (shifts, flips, rotation, colour)"},
    "normalize": {"dataset": "The dataset's own statistics", "imagenet": "ImageNet statistics"},
    "best_metric": {"val_acc": "Validation accuracy", "val_loss": "Validation loss"},
    "optimizer": {"sgd": "SGD (momentum)", "adam": "Adam", "adamw": "AdamW", "adadelta": "Adadelta",
                  "rmsprop": "RMSprop"},
    "device": {"cpu": "CPU", "cuda": "GPU (CUDA)"},
    "amp": {"off": "Off (32-bit)", "fp16": "16-bit (fp16)", "bf16": "bfloat16"},
}  # fmt: skip


def choice_word(option: str, value: object) -> str:
    """A training option's value in words: "Shifts and flips" for augment ``crop-flip``, "Automatic" for ``auto``;
    a value without words (a number, a file name) as it is written."""
    if value == "auto":
        return AUTOMATIC
    words = CHOICE_WORDS.get(option, {})
    return words.get(value, str(value)) if isinstance(value, str) else str(value)


# -- metrics ----------------------------------------------------------------------------------------------------

METRIC_WORDS: Mapping[str, str] = {
    "accuracy": "Right answers",
    "top_k_accuracy": "Right within {k} guesses",
    "map5": "Score of the 5 best guesses",
    "macro_f1": "Balance across classes",
    "log_loss": "Surprise",
    "ece": "Confidence error",
    "val_acc": "Validation accuracy",
    "val_loss": "Validation loss",
    "best_val_acc": "Best validation accuracy",
    "test_accuracy": "Test accuracy",
    "test_accuracy_clean": "Test accuracy without leaking images",
}


# The class-by-class table's columns, as the Evaluate page and the HTML report title them ("{split}": test, ...).
CLASS_COLUMN_WORDS: Mapping[str, str] = {
    "label": "Class",
    "support": "{Split} images",
    "correct": "Right",
    "accuracy": "Share right",
    "recall": "Found",
    "precision": "Right when named",
    "f1": "Balance",
    "confused_with": "Most often called",
}


def class_column(column: str, split: str = "test") -> str:
    return CLASS_COLUMN_WORDS[column].format(Split=split_word(split).capitalize())


# The technical name of each, for a help line or a small print beside the plain one (never in its place).
METRIC_TECHNICAL: Mapping[str, str] = {
    "accuracy": "accuracy",
    "top_k_accuracy": "top-{k} accuracy",
    "map5": "MAP@5, mean average precision at 5",
    "macro_f1": "macro F1",
    "log_loss": "log loss, mean cross-entropy",
    "ece": "expected calibration error, ECE",
}


def metric_word(metric: str, *, k: int = 5) -> str:
    """A metric's name as the Evaluate page, the report, Compare and the command line show it."""
    return METRIC_WORDS.get(metric, metric).format(k=k)


def metric_technical(metric: str, *, k: int = 5) -> str:
    """The name a data scientist would use ("MAP@5, mean average precision at 5"), for the help line."""
    return METRIC_TECHNICAL.get(metric, metric).format(k=k)


# -- time -------------------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """A span of time as a person reads it: "4.2 s", "45 s", "3 min 05 s", "2 h 05 min"."""
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, whole = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {whole:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
