"""What a search explores and ranks by: the space of training options, and the metric.

A space maps ``train`` options (the fields of ``TrainConfig``, as on the command line but with underscores or
dashes) to a list of values or to a range::

    {"optimizer": ["sgd", "adam"], "batch_size": [32, 64],
     "lr": {"low": 0.001, "high": 0.3, "log": true}, "epochs": {"low": 2, "high": 6}}

The learning rate is best searched around each trial's own optimizer's usual rate: ``"lr": "usual"`` stands for
``"lr_factor": {"low": 0.1, "high": 3, "log": true}``, the rate as a multiple of that usual rate (SGD 0.01-0.3, Adam
1e-4-3e-3; ``core.experiments.rates`` says why a multiplier). A typed ``lr`` range is kept as given, for every
optimizer alike; :func:`rate_warnings` says when it lies far outside an optimizer's usual range.

Options not named keep the search's base settings. A range of a whole-number option draws whole numbers. A random
search draws from ranges as they are (log-uniform with ``"log": true``); a grid search tries every combination, a
range contributing ``"steps"`` evenly spaced values (default 3; spaced on the log scale with ``"log": true``).
Every value is checked as the training command would check it, so a bad one is refused before anything trains.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, Any

from core.common.errors import ChoiceError, CoreError, check_choice
from core.common.jsonfile import JsonFileError, parse_json
from core.common.words import AUTOMATIC, choice_word
from core.experiments.rates import FACTOR_LIMITS, RATE_FACTOR, USUAL, USUAL_SPAN, factor_words, far_outside
from core.train.config import FIELD_META, ConfigError, TrainConfig, is_automatic, label_of
from core.train.runplan import starts_trained as _trained

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

METHODS = ("random", "grid")
GRID_STEPS = 3  # values a range contributes to a grid when it does not say
# Bounds on the space itself (each value is bounded by core.train.config.BOUNDS), checked by arithmetic before any
# list is built: a range of 10**7 steps took 8 s and 1.1 GB just to be checked.
MAX_STEPS = 100  # values one range gives a grid: a finer grid of one option is a random search's job
MAX_VALUES = 100  # values in one list (each one is checked as the training command would)
MAX_GRID = 10_000  # combinations of a grid: Optuna's grid sampler lists them all up front; 10x the most trials
NOT_SEARCHED = ("dataset", "ranks", "from_run")  # one dataset per search; one process per trial; one parent
RANGE_KEYS = {"low", "high", "log", "steps"}
SPACE_MAX_BYTES = 2**20  # a space names a few options: a megabyte is thousands of values
FIELD_TYPES = {f.name: list if f.default is MISSING else type(f.default) for f in fields(TrainConfig)}
FIELD_TYPES[RATE_FACTOR] = float  # not a training option: each trial's rate, as a multiple of its optimizer's usual


class SpaceError(CoreError):
    """A search space or metric that cannot be used; the message names the option and what is allowed."""


@dataclass(frozen=True)
class Metric:
    """What a search ranks its trials by."""

    name: str
    words: str
    direction: str  # "maximize" or "minimize"
    per_epoch: str  # the run-store key reported after each epoch (successive halving compares these)


METRICS = {
    "val_acc": Metric("val_acc", "Best validation accuracy", "maximize", "val_acc"),
    "val_loss": Metric("val_loss", "Lowest validation loss", "minimize", "val_loss"),
    # Ranked on the test images: the winner's test score is then itself optimistic (the test chose it), so the
    # pages say so; trials are still cut short on validation accuracy, never on the test.
    "test_accuracy": Metric("test_accuracy", "Test accuracy", "maximize", "val_acc"),
}


def metric(name: str) -> Metric:
    check_choice("metric", name, tuple(METRICS))
    return METRICS[name]


@dataclass(frozen=True)
class Choice:
    """An option tried at each of a few values."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class Range:
    """An option drawn between two numbers."""

    low: float
    high: float
    log: bool
    integer: bool
    steps: int

    def grid(self) -> list[float | int]:
        """``steps`` values from low to high, evenly spaced (on the log scale when ``log``)."""
        if self.steps == 1:
            return [self._cast(self.low)]
        if self.log:
            ratio = (self.high / self.low) ** (1 / (self.steps - 1))
            points = [self.low * ratio**i for i in range(self.steps)]
        else:
            points = [self.low + (self.high - self.low) * i / (self.steps - 1) for i in range(self.steps)]
        return list(dict.fromkeys(self._cast(p) for p in points))  # whole numbers may coincide

    def most_values(self) -> int:
        """An upper bound of ``len(self.grid())``, by arithmetic (whole numbers: no more than lie in the range)."""
        return min(self.steps, int(self.high) - int(self.low) + 1) if self.integer else self.steps

    def _cast(self, value: float) -> float | int:
        return int(round(value)) if self.integer else float(f"{value:.6g}")


@dataclass(frozen=True)
class Space:
    """The options a search varies (name -> Choice or Range), in the order given."""

    options: dict[str, Choice | Range]

    def distributions(self, method: str) -> dict[str, BaseDistribution]:
        """Optuna's distributions: ranges as ranges for a random search, every option as its list for a grid."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, BaseDistribution] = {}
        for name, option in self.options.items():
            if isinstance(option, Choice):
                out[name] = CategoricalDistribution(option.values)
            elif method == "grid":
                out[name] = CategoricalDistribution(option.grid())
            elif option.integer:
                out[name] = IntDistribution(int(option.low), int(option.high), log=option.log)
            else:
                out[name] = FloatDistribution(option.low, option.high, log=option.log)
        return out

    def grid(self) -> dict[str, list[Any]]:
        """Every option's values for a grid search; raises SpaceError when there would be too many combinations."""
        self._check_grid()
        return {n: list(o.values) if isinstance(o, Choice) else o.grid() for n, o in self.options.items()}

    def grid_size(self) -> int:
        """Combinations of a grid search (raises SpaceError above ``MAX_GRID``, before any list is built)."""
        return math.prod(len(values) for values in self.grid().values())

    def _check_grid(self) -> None:
        most = math.prod(len(o.values) if isinstance(o, Choice) else o.most_values() for o in self.options.values())
        if most > MAX_GRID:
            raise SpaceError(f"a grid of up to {most:,} combinations: a grid search takes at most {MAX_GRID:,} "
                             "combinations; give fewer values or steps, or use random draws")  # fmt: skip

    def optimizers(self, base: TrainConfig | None = None) -> tuple[str, ...]:
        """The optimizers the trials train with: the space's, else the base settings' one."""
        option = self.options.get("optimizer")
        return option.values if isinstance(option, Choice) else ((base or TrainConfig()).optimizer,)

    def describe(self, base: TrainConfig | None = None) -> list[str]:
        """One line per option, in words, for pages and the command line (``base``: the search's base settings,
        which say the optimizer when the space does not vary it)."""
        lines = []
        for name, option in self.options.items():
            if name == RATE_FACTOR:
                lines.append(_factor_line(option, self.optimizers(base), base is not None and _trained(base)))
            elif isinstance(option, Choice):
                lines.append(f"{label_of(name)}: {', '.join(_words(name, v) for v in option.values)}")
            else:
                scale = "log scale" if option.log else "evenly"
                lines.append(f"{label_of(name)}: from {option.low:g} to {option.high:g} ({scale})")
        return lines


def parse_space(raw: dict[str, Any] | str) -> Space:
    """The space a JSON object (or its text) describes; every value checked as ``train`` would check it.

    Raises:
        SpaceError: not an object, an unknown or unsearchable option, an empty list, a bad range or value.
    """
    if isinstance(raw, str):  # a file's or a form's text: size and nesting bounded, never a RecursionError
        try:
            raw = parse_json(raw, expect=object, max_bytes=SPACE_MAX_BYTES)
        except JsonFileError as exc:
            raise SpaceError(f"the search space is {exc.reason}") from None
    if not isinstance(raw, dict) or not raw:
        raise SpaceError('the search space must be a JSON object naming at least one option, e.g. {"lr": [0.01, 0.1]}')
    options: dict[str, Choice | Range] = {}
    for key, spec in raw.items():
        name = str(key).replace("-", "_")
        if name == "lr" and isinstance(spec, str):  # "usual": around each optimizer's usual rate
            if spec != USUAL:
                raise SpaceError(f'lr: give "{USUAL}" (around each optimizer\'s usual rate), a list of values or a '
                                 f'range {{"low": ..., "high": ...}}, got {spec!r}')  # fmt: skip
            name, spec = RATE_FACTOR, {"low": USUAL_SPAN[0], "high": USUAL_SPAN[1], "log": True}
        _searchable(name)
        options[name] = _range(name, spec) if isinstance(spec, dict) else _choice(name, spec)
    if {"lr", RATE_FACTOR} <= set(options):
        raise SpaceError(f"give the learning rate as values or a range (lr) or around each optimizer's usual rate "
                         f"({RATE_FACTOR} or \"lr\": \"{USUAL}\"), not both")  # fmt: skip
    return Space(options)


def rate_warnings(space: Space, base: TrainConfig) -> list[str]:
    """Warnings in words when the rates the trials use as given (the space's ``lr``, else the base settings' own
    rate) lie far outside the usual range of an optimizer they train with (``core.experiments.rates.FAR``)."""
    option = space.options.get("lr")
    if isinstance(option, Range):
        rates: tuple[float, ...] = (option.low, option.high)
    elif isinstance(option, Choice):
        rates = option.values
    elif RATE_FACTOR not in space.options:
        rates = (base.lr,)
    else:  # around each optimizer's usual rate
        return []
    given = [r for r in rates if r > 0] if not isinstance(option, Range) else list(rates)  # 0: the usual rate
    return far_outside(min(given), max(given), space.optimizers(base), _trained(base)) if any(given) else []


def space_json(space: Space) -> dict[str, Any]:
    """The JSON form of ``space`` (what :func:`parse_space` reads back)."""
    out: dict[str, Any] = {}
    for name, option in space.options.items():
        if isinstance(option, Choice):
            out[name] = list(option.values)
        else:
            out[name] = {"low": option.low, "high": option.high, "log": option.log, "steps": option.steps}
    return out


def _searchable(name: str) -> None:
    if name not in FIELD_TYPES:
        raise SpaceError(f"{name!r} is not a training option; searchable: "
                         f"{', '.join(n for n, k in FIELD_TYPES.items() if n not in NOT_SEARCHED and k is not list)}")  # fmt: skip
    if name in NOT_SEARCHED:
        raise SpaceError(f"{name} cannot be searched: a search trains one dataset, each trial in one process, "
                         "from one starting point (set it in the base settings)")  # fmt: skip
    if FIELD_TYPES[name] is list:
        raise SpaceError(f"{name} is a list option and cannot be searched")


def _choice(name: str, spec: Any) -> Choice:
    if not isinstance(spec, list) or not spec:
        raise SpaceError(f"{name}: give a non-empty list of values or a range {{\"low\": ..., \"high\": ...}}, "
                         f"got {spec!r}")  # fmt: skip
    if len(spec) > MAX_VALUES:
        raise SpaceError(f"{name}: at most {MAX_VALUES} values in a list, got {len(spec):,}; a range draws from an "
                         "interval")  # fmt: skip
    values = tuple(dict.fromkeys(_value(name, v) for v in spec))
    for value in values:
        _check(name, value)
    return Choice(values)


def _value(name: str, value: Any) -> Any:
    """``value`` as the option's type (a JSON 64.0 for a whole-number option is 64)."""
    kind = FIELD_TYPES[name]
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise SpaceError(f"{name}: {value!r} is not a {_kind_words(kind)}")
    return value


def _range(name: str, spec: dict[str, Any]) -> Range:
    kind = FIELD_TYPES[name]
    if kind not in (int, float):
        raise SpaceError(f"{name} takes values from a list, not a range")
    unknown = set(spec) - RANGE_KEYS
    if unknown or not {"low", "high"} <= set(spec):
        raise SpaceError(f"{name}: a range is {{\"low\": L, \"high\": H}} with optional \"log\" and \"steps\"; "
                         f"got keys {sorted(spec)}")  # fmt: skip
    low, high = (_value(name, spec[k]) if kind is int else _number(name, spec[k]) for k in ("low", "high"))
    log, steps = spec.get("log", False), spec.get("steps", GRID_STEPS)
    if not isinstance(log, bool) or isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SpaceError(f'{name}: "log" is true or false and "steps" a whole number >= 1')
    if steps > MAX_STEPS:
        raise SpaceError(f'{name}: "steps" is at most {MAX_STEPS} (got {steps:,}): a grid that fine is a random '
                         "search's job")  # fmt: skip
    if not low < high or (log and low <= 0):
        raise SpaceError(f"{name}: a range needs low < high" + (" and low > 0 on a log scale" if log else ""))
    for value in (low, high):
        _check(name, value)
    return Range(float(low), float(high), log, kind is int, steps)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpaceError(f"{name}: {value!r} is not a number")
    return float(value)


def _check(name: str, value: Any) -> None:
    if name == RATE_FACTOR:  # the rates it gives each optimizer are checked with the base settings (SearchSpec)
        if not FACTOR_LIMITS[0] <= value <= FACTOR_LIMITS[1]:
            raise SpaceError(f"{RATE_FACTOR} {value:g}: expected a multiple of the usual rate from "
                             f"{FACTOR_LIMITS[0]:g} to {FACTOR_LIMITS[1]:g}")  # fmt: skip
        return
    try:
        TrainConfig(**{name: value}).validate()
    except (ConfigError, ChoiceError) as exc:
        raise SpaceError(str(exc)) from None


def _factor_line(option: Choice | Range, optimizers: tuple[str, ...], pretrained: bool) -> str:
    if isinstance(option, Choice):
        times = ", ".join(f"{v:g}x" for v in option.values)
        each = factor_words(option.values, optimizers, pretrained, span=False)
        return f"Learning rate: {times} each optimizer's usual rate ({each})"
    scale = "log scale" if option.log else "evenly"
    ends = factor_words((option.low, option.high), optimizers, pretrained, span=True)
    return f"Learning rate: {ends} ({scale}, around each optimizer's usual rate)"


def _kind_words(kind: type) -> str:
    return {int: "whole number", float: "number", bool: "true or false", str: "text value"}.get(kind, kind.__name__)


def _words(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name in FIELD_META and is_automatic(name, value):  # an automatic batch, input size, epochs
        return AUTOMATIC
    return f"{value:g}" if isinstance(value, float) else choice_word(name, value)  # "SGD (momentum)" for sgd
