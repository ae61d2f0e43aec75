"""The divergence guard: a run whose training loss runs away is stopped mid-epoch, put back to its last good state
(weights, optimizer, schedule, its place in the data, the loop's counters) and goes on at a quarter of the rate; at
most ``MAX_RESTARTS`` times, then it gives up: the run ends at its last good state, and did not learn
(``core.train.verdict``).

The rule, on the training loss smoothed as fastai's (an exponential moving average, debiased): the loss ran away
when a step's loss is not a number (NaN, infinite), or when the smoothed loss is over ``RUNAWAY_RATIO`` times its
lowest so far *and* over the loss of a blind guess (ln of the number of classes). Both, because a ratio alone trips
on healthy runs: the cycles schedule's warm restart lifts a loss of 0.02 to 0.3 and it falls again, while a network
scoring worse than a uniform guess has lost what it learned. ``RUNAWAY_RATIO`` was measured
(``bench/bench_guard.py``): see its value.

The last good state is a copy in memory (on the CPU) taken when the run starts or resumes and at the end of each
epoch, after the checkpoints: the state ``last.pt`` holds then; the copy before it is kept too, for a runaway caught
just after an epoch's end (``SUSPECT_STEPS``). So the guard holds two copies of the weights and the optimizer's
state in memory (ResNet-18 with SGD: 90 MB each). A resumed run goes back no further than where it resumed.

The losses wait on the device and are read every step on the CPU, every ``CHECK_EVERY`` steps on a GPU or under
torch.distributed, where the ranks add their verdicts first, so all of them stop, restore and go on together; and at
the end of every epoch. What the guard did is kept in the checkpoint (a resumed run goes on with the lowered rate,
and the same events) and reported in words.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from core.train.learner import Callback, Learner
from core.train.plain import capture_rng, restore_rng
from core.train.schedules import scale_rates

RUNAWAY_RATIO = 2.0  # smoothed loss over this many times its lowest (and over a blind guess's): ran away
SMOOTHING = 0.9  # the moving average's weight of the past (about the last 10 steps)
RATE_CUT = 4  # each restart divides the rates by this
MAX_RESTARTS = 3  # the next runaway gives up
CHECK_EVERY = 8  # steps between reads of the flag on a GPU or under torch.distributed (a read waits for the device)
# A step's loss shows the harm of the update before it, and the smoothed loss a few steps later still: a runaway caught
# within this many steps of the last kept state may have begun before it, so the guard goes back to the one before.
# Measured: coloured textures at 96 px, one step per epoch, ran away at step 3 from an update at step 2; back to the
# end of epoch 2 it ran away again at every rate down to 1/64, back to epoch 1 it learned.
SUSPECT_STEPS = 10


@dataclass
class Runaway:
    """One time the loss ran away, and what the guard did."""

    epoch: int  # the epoch it ran away in, from 1
    step: int  # the global step it was caught at
    loss: float  # the smoothed training loss then (NaN or infinite when a step's loss was)
    lowest: float  # the smoothed loss's lowest before
    back_to_epoch: int  # epochs completed in the state it went back to
    back_to_step: int  # that state's global step
    rate: float  # the peak rate it goes on with (the one it had when it gave up)
    scale: float  # that rate's share of the run's own
    gave_up: bool

    def words(self) -> str:
        """What happened, in a sentence: "the loss ran away at epoch 3; restarted from epoch 2 at a quarter of the
        rate (0.025)"."""
        what = "the loss became not a number" if not math.isfinite(self.loss) else "the loss ran away"
        place = ("the start" if self.back_to_step == 0 else f"epoch {self.back_to_epoch}" if self.back_to_epoch
                 else f"step {self.back_to_step:,}")  # fmt: skip
        if self.gave_up:
            return (f"{what} at epoch {self.epoch} again, at {share_words(self.scale)} of the rate; gave up: the run "
                    f"ends as it was at {place}")  # fmt: skip
        return f"{what} at epoch {self.epoch}; restarted from {place} at {share_words(self.scale)} of the rate " \
            f"({self.rate:.3g})"  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """As stored (JSON: a loss that was not a number is null) with its words."""
        finite = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in asdict(self).items()}
        return {**finite, "words": self.words()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Runaway:
        return cls(**{k: math.nan if values[k] is None else values[k] for k in cls.__dataclass_fields__})


def share_words(scale: float) -> str:
    """1/4 -> "a quarter", 1/16 -> "1/16"."""
    if scale == 1:
        return "the whole"
    if abs(scale - 0.25) < 1e-12:
        return "a quarter"
    return f"1/{round(1 / scale):,}"


class Guard(Callback):
    """The guard of one run's loop (``core.train.learner.Learner`` calls it): :meth:`watch` every step,
    :meth:`ran_away` after every epoch's steps, :meth:`restart` when it did, :meth:`keep` when the run starts and
    (as the last callback) at the end of each good epoch. ``reduce`` adds a tensor over the ranks (None: one
    process)."""

    def __init__(self, n_classes: int, peak_rate: float, device: torch.device,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:  # fmt: skip
        self.blind = math.log(max(n_classes, 2))  # the loss of a uniform guess over the classes
        self.peak_rate, self.device, self.reduce = peak_rate, device, reduce
        self.every = 1 if device.type == "cpu" and reduce is None else CHECK_EVERY
        self.pending: list[torch.Tensor] = []  # losses not read yet (still on the device)
        self.average, self.lowest, self.first, self.seen, self.tripped = 0.0, math.inf, math.nan, 0, False
        self.scale = 1.0
        self.events: list[Runaway] = []
        self.kept: dict[str, Any] | None = None  # the newest state to go back to
        self.before: dict[str, Any] | None = None  # the one kept before it (an epoch earlier)

    # -- every step --------------------------------------------------------------------------------------------

    def watch(self, step: int, loss: torch.Tensor) -> bool:
        """Take a step's loss; True when the run must stop this epoch (decided every ``every`` steps)."""
        self.pending.append(loss.detach())
        return step % self.every == 0 and self.ran_away()

    def ran_away(self) -> bool:
        """Did the loss run away (in the steps so far)? Under torch.distributed every rank asks at the same steps,
        and all get the same answer."""
        self._absorb()
        if self.reduce is None:
            return self.tripped
        return bool(self.reduce(torch.tensor([float(self.tripped)], device=self.device)).item() > 0)

    def _absorb(self) -> None:
        """The pending losses into the smoothed loss, read from the device at once (one wait)."""
        if not self.pending:
            return
        losses = torch.stack(self.pending).double().tolist() if len(self.pending) > 1 else [self.pending[0].item()]
        self.pending = []
        for loss in losses:
            self.seen += 1
            if self.seen == 1:
                self.first = loss
            self.average = SMOOTHING * self.average + (1 - SMOOTHING) * loss
            smooth = self.average / (1 - SMOOTHING**self.seen)
            if not math.isfinite(loss) or (smooth > RUNAWAY_RATIO * self.lowest and smooth > self.blind):
                self.tripped = True
            if smooth < self.lowest:  # NaN compares False
                self.lowest = smooth

    def smoothed(self) -> float:
        """The smoothed loss now (NaN before the first step)."""
        self._absorb()
        return self.average / (1 - SMOOTHING**self.seen) if self.seen else math.nan

    @property
    def gave_up(self) -> bool:
        return bool(self.events) and self.events[-1].gave_up

    # -- the last good state ------------------------------------------------------------------------------------

    def after_decisions(self, learner: Learner, metrics: dict[str, float]) -> None:
        self.keep(learner)

    def keep(self, learner: Learner) -> None:
        """Copy ``learner``'s state now (the run's start, a resume, the end of a good epoch) to go back to."""
        lr = learner
        self.before, self.kept = self.kept, {
            "weights": _on_cpu(lr.net.state_dict()), "optimizer": _on_cpu(lr.optimizer.state_dict()),
            "scheduler": copy.deepcopy(lr.scheduler.state_dict()),
            "scaler": copy.deepcopy(lr.precision.scaler.state_dict()), "rng": capture_rng(),
            "learner": copy.deepcopy(lr.state()), "epoch": lr.epoch, "step": lr.step,
        }  # fmt: skip

    def restart(self, learner: Learner) -> Runaway:
        """The loss ran away: back to the kept state; then on at a quarter of the rate, or (``MAX_RESTARTS`` done)
        give up: ``learner.stop`` is set. Returns the event, also added to :attr:`events`."""
        assert self.kept is not None, "Guard.keep is called when the run starts"
        lr, kept = learner, self.kept
        if self.before is not None and lr.step - kept["step"] <= SUSPECT_STEPS:
            self.kept, self.before, kept = self.before, None, self.before
        loss, lowest = self.smoothed(), self.lowest
        caught = (lr.epoch + 1, lr.step)
        events, scale = list(self.events), self.scale
        lr.net.load_state_dict(kept["weights"])
        lr.optimizer.load_state_dict(kept["optimizer"])  # tensors go back to the parameters' device
        lr.scheduler.load_state_dict(kept["scheduler"])
        lr.precision.scaler.load_state_dict(kept["scaler"])
        restore_rng(kept["rng"])
        lr.load(copy.deepcopy(kept["learner"]), kept["epoch"], kept["step"])  # this guard's kept sums too
        self.events, self.scale, self.tripped = events, scale, False
        gave_up = len(events) >= MAX_RESTARTS
        if not gave_up:
            self.scale = scale / RATE_CUT
        scale_rates(lr.optimizer, lr.scheduler, self.scale)  # the kept schedule has the rates before any cut
        event = Runaway(*caught, loss, lowest, kept["epoch"], kept["step"], self.peak_rate * self.scale, self.scale,
                        gave_up)  # fmt: skip
        self.events.append(event)
        lr.stop = lr.stop or gave_up
        return event

    # -- in the checkpoint ----------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        self._absorb()
        sums = {"average": self.average, "lowest": self.lowest, "first": self.first, "seen": self.seen,
                "tripped": self.tripped}  # fmt: skip
        return {"guard": {**sums, "scale": self.scale, "events": [e.to_dict() for e in self.events]}}

    def load(self, state: dict[str, Any]) -> None:
        """A checkpoint's guard state (a checkpoint written before the guard has none: the guard starts afresh)."""
        saved = state.get("guard")
        if saved is None:
            return
        self.pending = []
        self.average, self.lowest, self.first = (float(saved[k]) for k in ("average", "lowest", "first"))
        self.seen, self.tripped = int(saved["seen"]), bool(saved["tripped"])
        self.scale = float(saved["scale"])
        self.events = [Runaway.from_dict(e) for e in saved["events"]]


def _on_cpu(state: Any) -> Any:
    """A copy of a state dict with every tensor cloned onto the CPU (the device keeps its memory for training)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        out = type(state)((k, _on_cpu(v)) for k, v in state.items())
        if hasattr(state, "_metadata"):  # a module's state dict: the per-module versions load_state_dict consults
            out._metadata = copy.deepcopy(state._metadata)
        return out
    if isinstance(state, list | tuple):
        return type(state)(_on_cpu(v) for v in state)
    return copy.deepcopy(state)
