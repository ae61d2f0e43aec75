"""Learning rates in a search: drawn around each optimizer's usual rate, and ranges far from it said in words.

SGD with momentum trains at about 0.1, Adam, AdamW and RMSprop at about 1e-3, Adadelta at 1.0: the studio's one
table of usual rates is ``core.train.config.DEFAULT_LR``, read through ``core.train.runplan.usual_rate`` by a run's
automatic rate too. One range for every optimizer puts some of them where they cannot learn: the issue's search drew Adam at
0.078 and 0.265 from 0.01-0.3, and every trial scored at chance. So a search's rate is by default a multiple of each
trial's own optimizer's usual rate: the search option ``lr_factor`` (what ``"lr": "usual"`` in a space stands for),
drawn on a log scale from a tenth to 3 times it (SGD 0.01-0.3, Adam 1e-4-3e-3, Adadelta 0.1-3).

Why a multiplier and not a conditional parameter (an ``lr_adam`` drawn only in Adam's trials): Optuna's grid sampler
takes one fixed space, where a conditional rate would be a dimension of every trial (each SGD trial repeated for
every Adam rate it never uses); the driver asks Optuna for every parameter at once (``study.ask`` with fixed
distributions) and starts a stopped trial again from its stored parameters; successive halving compares the trials
at a rung whatever their parameters. A multiplier is the same one parameter in every trial, so grids, resumes and
rungs work unchanged, and a grid's steps fall at the same places in each optimizer's own range.

A rate the user gave (a range or values of ``lr``, or the base settings' ``lr``) is their choice and is kept; it is
said to lie far outside an optimizer's usual range when it reaches ``FAR`` times beyond it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from core.common.words import choice_word
from core.train.config import TrainConfig
from core.train.runplan import starts_trained, usual_rate

RATE_FACTOR = "lr_factor"  # the search option: the rate as a multiple of the trial's optimizer's usual rate
USUAL = "usual"  # ``"lr": "usual"`` in a space: RATE_FACTOR over USUAL_SPAN
USUAL_SPAN = (0.1, 3.0)  # a tenth to 3x the usual rate: SGD 0.01-0.3 (the studio's first range), Adam 1e-4-3e-3
FACTOR_LIMITS = (1e-3, 100.0)  # a thousandth to 100x: past that, no optimizer learns (and lr's own bound says so)
FAR = 10.0  # a rate 10x or more beyond an optimizer's usual range lies far outside it


def usual_range(optimizer: str, pretrained: bool = False) -> tuple[float, float]:
    """The range a search draws the optimizer's rate from by default (``USUAL_SPAN`` times its usual rate)."""
    rate = usual_rate(optimizer, pretrained)
    return rate * USUAL_SPAN[0], rate * USUAL_SPAN[1]


def trial_settings(base: TrainConfig, params: dict[str, Any]) -> dict[str, Any]:
    """The training options of a trial whose drawn parameters are ``params``: a rate factor becomes the rate of the
    trial's own optimizer (its usual rate times the factor, a tenth of it from trained weights)."""
    settings = {k: v for k, v in params.items() if k != RATE_FACTOR}
    if RATE_FACTOR in params:
        config = replace(base, **settings)
        settings["lr"] = _round(float(params[RATE_FACTOR]) * usual_rate(config.optimizer, starts_trained(config)))
    return settings


def factor_words(factors: Sequence[float], optimizers: Sequence[str], pretrained: bool, *, span: bool) -> str:
    """The rates a factor gives each optimizer, in words: "0.01 to 0.3 for SGD (momentum), 1e-4 to 3e-3 for Adam"
    (``span``: ``factors`` are a range's two ends, else the values tried)."""
    parts = []
    for optimizer in optimizers:
        rates = [rate_text(_round(f * usual_rate(optimizer, pretrained))) for f in factors]
        parts.append(f"{' to '.join(rates) if span else ', '.join(rates)} for {choice_word('optimizer', optimizer)}")
    return ", ".join(parts) if span else "; ".join(parts)


def far_outside(low: float, high: float, optimizers: Sequence[str], pretrained: bool) -> list[str]:
    """A warning for each optimizer whose usual range the rates ``low`` to ``high`` reach ``FAR`` times beyond."""
    shown = rate_text(low) if low == high else f"{rate_text(low)} to {rate_text(high)}"
    warnings = []
    for optimizer in optimizers:
        bottom, top = usual_range(optimizer, pretrained)
        above, below = high / top, bottom / low if low > 0 else 0.0
        reach = [f"up to {above:.0f}x above it" if above >= FAR else "",
                 f"down to {below:.0f}x below it" if below >= FAR else ""]  # fmt: skip
        if any(reach):
            name = choice_word("optimizer", optimizer)
            verb = "Learning rate {} lies" if low == high else "Learning rates {} lie"
            warnings.append(f"{verb.format(shown)} far outside {name}'s usual range "
                            f"({rate_text(bottom)} to {rate_text(top)}): {' and '.join(r for r in reach if r)}; "
                            f"{name} trials there often do not learn. Search around each optimizer's usual rate "
                            "instead, or a range nearer it.")  # fmt: skip
    return warnings


def rate_text(rate: float) -> str:
    """A rate as people write it: 0.01, 0.3, 1.5 as they are; small ones as powers of ten (1e-4, 5.5e-4)."""
    if rate == 0 or rate >= 0.01:
        return f"{rate:.3g}"
    mantissa, exponent = f"{rate:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def _round(rate: float) -> float:
    return float(f"{rate:.6g}")  # 0.1 x 0.1 is 0.010000000000000002: stored and shown as 0.01
