"""Small drawing helpers used by several pages."""

from __future__ import annotations

import streamlit as st

from core.common.errors import ChoiceError
from core.common.percent import percent
from core.common.words import choice_word
from core.datasets.sources import dataset_title
from core.store.ranking import best_run
from core.store.records import RunRecord
from core.store.runs import RunStore
from core.train.archs import arch_label
from core.train.config import label_of
from ui.state import current_ref, workspace
from ui.text import plain


def show_error(exc: BaseException, what: str = "") -> None:
    """A bad-input error in words, never a traceback, and never the workspace's place on the server's disk; shown
    as text (it may quote a file name or a label)."""
    prefix = f"{what}: " if what else ""
    st.error(plain(workspace().redact(f"{prefix}{error_words(exc)}")), icon=":material/error:")


def error_words(exc: BaseException) -> str:
    """An error as a page says it: a choice outside the allowed ones by the option's name and the choices in words,
    from the error's fields (the message is the command line's); any other error as its message."""
    if isinstance(exc, ChoiceError):
        allowed = ", ".join(value_word(exc.field, v) for v in exc.allowed)
        return f"{label_of(exc.field)}: “{value_word(exc.field, exc.value)}” is not one of the choices ({allowed})"
    return str(exc)


def titled_metric(container, label: str, value: str, *, help: str | None = None, **kwargs) -> None:
    """A metric whose title wraps onto a second line instead of being cut: ``st.metric`` keeps its label on one
    line, and at 800 px three cards a row read "Right within ...", "Balance acro...". The label stays the metric's
    own (hidden) label for screen readers and tests."""
    container.markdown(f"**{plain(label)}**", help=help)
    container.metric(label, value, label_visibility="collapsed", **kwargs)


def count_of(n: int, noun: str) -> str:
    """ "1 image", "2 images": a count with its noun, never "image(s)"."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def cache_words(opened: int, total: int) -> str:
    """ "every image read (none were cached yet)", "all from the cache", or "12 read, 2,050 from the cache"."""
    if opened >= total:
        return f"{count_of(total, 'image')} read (none were cached yet)"
    if opened == 0:
        return f"all {total:,} from the cache" if total > 1 else "from the cache"
    return f"{opened:,} read, {total - opened:,} from the cache"


def run_label(store: RunStore, run: RunRecord, *, best: bool = False) -> str:
    """A run in words for pickers: "Run 3 · ResNet-18 · flowers · best validation accuracy 91.4%" (plain text, as
    select boxes show it: pass it through ``plain`` before Markdown); ``best`` adds "the best on this data"."""
    acc = store.best_metric(run.run_id, "val_acc")
    first = f"Run {run.run_id}" + (" (the best on this data)" if best else "")  # first: a long label is cut
    parts = [first, arch_label(run.arch), dataset_title(run.dataset)]
    return " · ".join(parts + ([f"best validation accuracy {percent(acc, 1)}"] if acc is not None else []))


def default_run(store: RunStore, runs: list[RunRecord]) -> RunRecord | None:
    """The run a page opens on: the best completed one on the chosen dataset (``core.store.ranking``), else the
    best of ``runs``; never merely the newest, which after a search is often a poor trial."""
    ref = current_ref()
    mine = [r for r in runs if ref is not None and r.dataset == ref.spec]
    return best_run(store, among=mine or runs)


def value_word(option: str, value: object) -> str:
    """A training option's value in words: a network by the architecture registry's name, any other choice by
    ``core.common.words`` ("Automatic" for ``auto``)."""
    if option == "arch" and value != "auto":
        return arch_label(str(value))
    return choice_word(option, value)
