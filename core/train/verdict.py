"""Whether a finished run learned: "learned", or "did not learn" with the reason in words.

A run that completed has not necessarily learned anything, and a person who sees "finished" and a score takes it for
a result. It did not learn when the divergence guard gave up (``core.train.guard``: its loss kept running away),
when its best validation accuracy is about chance (``core.train.outcome``: the one rule for chance, with the
validation images' biggest class), or, where the validation images cannot tell, when its training loss did not fall
(its last epoch's mean is neither below its first step's loss nor below a blind guess's, ln of the number of
classes). A validation score clearly above chance is the answer: a one-epoch run that reached 100% on images it
never trained on had an epoch's mean loss above its first step's (the mean holds the steps before it learned).

Two limits: a validation set so small that even a perfect score would be "about chance" (4 images of 2 classes: any
score is within two standard errors of a coin) cannot tell, so the chance rule is skipped there (the pages warn
about such a split anyway); and a run that starts near its lowest loss (a child run going on from its parent's
weights, at a loss of 0.5 with label smoothing) may end an epoch a little above its first step's loss by noise, so
the loss rule needs the loss to end above a blind guess's too. The verdict is stored with the run
(``core.train.runner``: the ``outcome`` and ``outcome_why`` params, and ``chance``); its status stays ``completed``.
The Runs page, the result card and ``train --json`` read it there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.common.percent import percent
from core.train.outcome import check_score

if TYPE_CHECKING:
    from core.store.runs import RunStore

LEARNED, DID_NOT_LEARN = "learned", "did not learn"
OUTCOMES: tuple[str, ...] = (LEARNED, DID_NOT_LEARN)
RUNAWAYS = "runaways"  # the run's param: the divergence guard's events (``core.train.guard.Runaway``), with words


@dataclass(frozen=True)
class Verdict:
    """How a completed run ended: ``outcome`` (one of ``OUTCOMES``), ``why`` in words (empty when it learned), and
    the chance level of its validation images (None without them)."""

    outcome: str
    why: str
    chance: float | None

    @property
    def learned(self) -> bool:
        return self.outcome == LEARNED

    def params(self) -> dict[str, object]:
        """What the run store keeps."""
        return {"outcome": self.outcome, "outcome_why": self.why, "chance": self.chance}


def judge(*, gave_up: str | None, epochs: Sequence[Mapping[str, float]], first_loss: float,
          val_counts: Mapping[str, int]) -> Verdict:  # fmt: skip
    """The verdict on a completed run.

    Args:
        gave_up: the guard's last event in words when it gave up, else None.
        epochs: every epoch's metrics (``train_loss``, ``val_acc``), in order.
        first_loss: the training loss of the run's first step.
        val_counts: validation images of every class the run trains (0 for a class without any; no images at all:
            the chance rule is skipped).
    """
    accuracies = [e["val_acc"] for e in epochs if math.isfinite(e.get("val_acc", math.nan))]
    best = max(accuracies) if accuracies else None
    check = check_score(best, val_counts)
    chance = check.chance
    if gave_up is not None:
        return Verdict(DID_NOT_LEARN, f"its loss kept running away ({gave_up})", chance)
    if check.at_chance:
        return Verdict(DID_NOT_LEARN, f"its best validation accuracy, {percent(best, 1)} on {sum(val_counts.values()):,} "
                       f"images, is about chance ({percent(chance, 1)}: always answering its biggest class)", chance)  # fmt: skip
    if check.can_tell and best is not None:  # clearly above chance on images it never trained on: it learned
        return Verdict(LEARNED, "", chance)
    last, blind = (epochs[-1]["train_loss"] if epochs else math.nan), math.log(max(len(val_counts), 2))
    if math.isfinite(first_loss) and not last < max(first_loss, blind):
        return Verdict(DID_NOT_LEARN, f"its training loss did not fall: {last:.3g} over its last epoch, against "
                       f"{first_loss:.3g} at its first step and {blind:.3g} for a blind guess", chance)  # fmt: skip
    return Verdict(LEARNED, "", chance)


def outcome_of(store: RunStore, run_id: int) -> dict[str, Any]:
    """What ``train --json`` and the pages say of how a run went: ``outcome`` ("learned", "did not learn", or None
    until it completes, and for a run completed before verdicts were kept), ``why`` (words, empty when it
    learned), ``chance`` (its validation images' chance level, or None) and ``runaways`` (the divergence guard's
    events in words, oldest first)."""
    params = store.params(run_id)
    events = params.get(RUNAWAYS)
    words = [str(e.get("words", "")) for e in events if isinstance(e, dict)] if isinstance(events, list) else []
    chance = params.get("chance")
    return {"outcome": params.get("outcome"), "why": params.get("outcome_why") or "",
            "chance": float(chance) if isinstance(chance, int | float) else None, "runaways": words}  # fmt: skip
