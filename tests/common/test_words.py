"""core.common.words: one name per status, split, choice value, metric and duration, for pages, CLI and report."""

from __future__ import annotations

import pytest

from core.common.words import (
    AUTOMATIC,
    CHOICE_WORDS,
    SPLITS,
    STATUS_WORDS,
    choice_word,
    duration,
    metric_word,
    split_word,
    status_word,
)
from core.store.records import STATUSES
from core.train.archs import WEIGHTS_CHOICES
from core.train.config import choices


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0, "0.0 s"), (4.24, "4.2 s"), (9.96, "10 s"), (45.4, "45 s"), (59.6, "1 min 00 s"), (185, "3 min 05 s"),
     (3599.4, "59 min 59 s"), (7500, "2 h 05 min"), (-1, "0.0 s")],
)  # fmt: skip
def test_durations_read_as_a_person_says_them(seconds: float, words: str) -> None:
    assert duration(seconds) == words


def test_every_choice_of_every_training_option_has_words() -> None:
    offered = {**choices(), "weights": WEIGHTS_CHOICES}
    for option, values in offered.items():
        if option == "arch":  # networks are named by the architecture registry (core.train.archs.arch_label)
            continue
        missing = [v for v in values if v != "auto" and v not in CHOICE_WORDS[option]]
        assert missing == [], option
        assert choice_word(option, "auto") == AUTOMATIC


def test_choice_words_leave_values_without_words_as_written() -> None:
    assert choice_word("augment", "crop-flip") == "Shifts and flips"
    assert choice_word("optimizer", "sgd") == "SGD (momentum)"
    assert choice_word("lr", 0.01) == "0.01" and choice_word("weights", "/data/w.pt") == "/data/w.pt"


def test_every_status_and_split_has_words() -> None:
    assert set(STATUSES) <= set(STATUS_WORDS) and status_word("completed") == "finished"
    assert [split_word(s) for s in SPLITS] == ["training", "validation", "test"]


def test_metric_names() -> None:
    assert metric_word("top_k_accuracy", k=3) == "Right within 3 guesses"
    assert metric_word("map5") == "Score of the 5 best guesses" and metric_word("unknown") == "unknown"


def _lines_matching(pattern: str, *, besides: tuple[str, ...] = ("core/common/words.py",)) -> list[str]:
    import re

    from tests.support import ROOT

    found = []
    for folder in ("core", "ui", "app_pages"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if str(path.relative_to(ROOT)) in besides:
                continue
            text = path.read_text().splitlines()
            found += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(text, 1) if re.search(pattern, line)]
    return found


def test_each_word_list_is_written_once() -> None:
    assert _lines_matching(r"def _?duration\(") == []  # time in words
    assert _lines_matching(r"""["']completed["']: ["']finished""") == []  # run statuses in words
    assert _lines_matching(r"""["']crop-flip["']: ["']""") == []  # choice values in words
    assert len(_lines_matching(r"\.label for \w+, \w+ in ARCHS", besides=())) <= 1  # networks: arch_label


def test_the_split_names_are_listed_once() -> None:
    assert _lines_matching(r"""\(["']train["'], ["']val["'], ["']test["']""") == []
    assert _lines_matching(r"""\(["']test["'], ["']val["']\)""") == []
