"""How long a run trains: the automatic-epochs rule and its words, in one place.

``epochs=0`` (automatic) with ``schedule="auto"`` trains as many epochs as the data needs: one-cycle runs of 12,
then 24, then 48 epochs, each only while the network still underfits its training images and the last cycle
raised validation accuracy (``core.train.schedules.Cycles``), at most ``AUTO_MAX_EPOCHS``. A fixed ``epochs`` gives
one one-cycle run of that length; ``epochs=0`` with a fixed-length schedule (onecycle, cosine, step, none) trains
``FIXED_EPOCHS``. The plan of a run (``core.train.runplan``), the schedules, the trainer, the Train page, the
Runs page and the command line read the rule and its words from :class:`EpochPlan`; nothing restates it.

No torch, no pandas: the configuration's help lines read the constants here.
"""

from __future__ import annotations

from dataclasses import dataclass

AUTO_MAX_EPOCHS = 100  # epochs=0 with an open-ended schedule (cycles, plateau): the cap
FIXED_EPOCHS = 12  # epochs=0 with a fixed-length schedule (onecycle, cosine, step, none)
FIRST_CYCLE = 12  # cycles: epochs of the first one-cycle run; each next one is twice as long
OPEN_ENDED = ("cycles", "plateau")  # schedules that end a run when it has converged (epochs is only a cap)
KINDS = ("fixed", "cycles", "plateau")


def effective_schedule(schedule: str, epochs: int) -> str:
    """The schedule a run uses: ``auto`` means cycles when epochs is 0 (automatic), else one-cycle."""
    if schedule != "auto":
        return schedule
    return "cycles" if epochs == 0 else "onecycle"


@dataclass(frozen=True)
class EpochPlan:
    """How long a run trains. ``kind``: ``fixed`` (exactly ``epochs``), ``cycles`` (cycles of ``first_cycle``,
    twice that, ... while it still learns, at most ``epochs``) or ``plateau`` (until validation stops improving,
    at most ``epochs``)."""

    kind: str
    epochs: int  # fixed: the epochs; cycles and plateau: the cap
    first_cycle: int = FIRST_CYCLE

    @property
    def until_converged(self) -> bool:
        """Whether the run ends when it has converged (``epochs`` is then only a cap)."""
        return self.kind != "fixed"

    @property
    def first(self) -> int:
        """The epochs the run is sure to train (cycles: the first cycle; otherwise every one, at most)."""
        return min(self.first_cycle, self.epochs) if self.kind == "cycles" else self.epochs

    @property
    def count(self) -> str:
        """The epochs (fixed) or the cap, counted in words: "1 epoch", "12 epochs"."""
        return _epochs(self.epochs)

    def words(self) -> str:
        """The plan in a sentence: the Train page's caption, the Runs page's settings, the dry run's ``why``."""
        if self.kind == "cycles":
            return (f"As many as the data needs: {self.first}, then longer cycles while it still learns "
                    f"(at most {self.epochs}).")  # fmt: skip
        if self.kind == "plateau":
            return f"Until validation stops improving (at most {self.epochs})."
        return f"{_epochs(self.epochs)}."

    def time_words(self, seconds: float) -> str:
        """What ``seconds`` per epoch make of this plan: the Train page's answer to "Estimate the time"."""
        per_epoch = f"About **{seconds:,.1f} s per epoch** (while nothing else trains)"
        total = f"{seconds * self.epochs / 60:,.1f} min"
        if self.kind == "fixed":
            return f"{per_epoch}, so about {total} for {_epochs(self.epochs)}."
        if self.kind == "cycles":
            return (f"{per_epoch}. The run trains {self.first} epochs (about {seconds * self.first / 60:,.1f} min), "
                    f"then cycles twice as long only while the network is still learning: at most {self.epochs} "
                    f"epochs ({total}).")  # fmt: skip
        return (f"{per_epoch}. The run stops when validation stops improving, at most after {self.epochs} epochs "
                f"({total}).")  # fmt: skip

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "epochs": self.epochs, "first_cycle": self.first_cycle}

    @classmethod
    def from_dict(cls, values: dict) -> EpochPlan:
        return cls(str(values["kind"]), int(values["epochs"]), int(values.get("first_cycle", FIRST_CYCLE)))


def epoch_plan(schedule: str, epochs: int) -> EpochPlan:
    """The rule: how long a run of ``schedule`` (as given, ``auto`` included) and ``epochs`` (0 = automatic) trains."""
    effective = effective_schedule(schedule, epochs)
    if effective in OPEN_ENDED:
        return EpochPlan(effective, epochs or AUTO_MAX_EPOCHS)
    return EpochPlan("fixed", epochs or FIXED_EPOCHS)


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")
