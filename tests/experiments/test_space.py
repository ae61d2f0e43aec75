"""core.experiments.space: the search space and the metric, parsed and checked before anything trains."""

from __future__ import annotations

import math

import pytest

from core.common.errors import ChoiceError
from core.experiments.space import METRICS, Choice, Range, SpaceError, metric, parse_space, space_json


def test_lists_and_ranges_become_choices_and_ranges_with_option_types() -> None:
    space = parse_space('{"optimizer": ["sgd", "adam"], "batch-size": [32, 64.0], '
                        '"lr": {"low": 0.001, "high": 0.1, "log": true}, "epochs": {"low": 1, "high": 4}}')  # fmt: skip
    assert list(space.options) == ["optimizer", "batch_size", "lr", "epochs"]  # dashes as on the command line
    assert space.options["batch_size"] == Choice((32, 64))  # 64.0 is the whole number 64
    assert space.options["lr"] == Range(0.001, 0.1, log=True, integer=False, steps=3)
    assert space.options["epochs"].integer
    assert parse_space(space_json(space)) == space  # the stored form reads back the same


def test_a_grid_spaces_ranges_evenly_on_their_scale() -> None:
    space = parse_space({"lr": {"low": 0.001, "high": 0.1, "log": True}, "epochs": {"low": 1, "high": 5, "steps": 3},
                         "augment": ["none", "crop"]})  # fmt: skip
    grid = space.grid()
    assert grid["lr"] == pytest.approx([0.001, 0.01, 0.1])
    assert grid["epochs"] == [1, 3, 5]
    assert space.grid_size() == 3 * 3 * 2
    assert parse_space({"epochs": {"low": 1, "high": 2, "steps": 5}}).grid()["epochs"] == [1, 2]  # no repeats


def test_random_draws_use_log_uniform_and_whole_number_distributions() -> None:
    dists = parse_space({"lr": {"low": 0.001, "high": 0.1, "log": True}, "batch_size": {"low": 8, "high": 64},
                         "optimizer": ["sgd", "adam"]}).distributions("random")  # fmt: skip
    assert dists["lr"].log and (dists["lr"].low, dists["lr"].high) == (0.001, 0.1)
    assert type(dists["batch_size"]).__name__ == "IntDistribution"
    assert dists["optimizer"].choices == ("sgd", "adam")
    grid = parse_space({"lr": {"low": 0.001, "high": 0.1, "log": True}}).distributions("grid")
    assert grid["lr"].choices == pytest.approx((0.001, 0.01, 0.1))


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("{", "not valid JSON"),
        ({}, "at least one option"),
        ({"nope": [1]}, "'nope' is not a training option"),
        ({"dataset": ["a"]}, "dataset cannot be searched"),
        ({"ranks": [1, 2]}, "ranks cannot be searched"),
        ({"optimizer": ["sgd", "lbfgs"]}, "optimizer 'lbfgs': choose one of sgd, adam"),
        ({"optimizer": []}, "non-empty list"),
        ({"batch_size": [1.5]}, "batch_size: 1.5 is not a whole number"),
        ({"nesterov": [1]}, "nesterov: 1 is not a true or false"),
        ({"lr": [-0.1]}, "lr -0.1: expected a number >= 0"),
        ({"lr": {"low": 0.1, "high": 0.01}}, "low < high"),
        ({"lr": {"low": 0, "high": 1, "log": True}}, "low > 0 on a log scale"),
        ({"lr": {"low": 0.1, "high": 1, "stride": 2}}, 'optional "log" and "steps"'),
        ({"optimizer": {"low": 1, "high": 2}}, "optimizer takes values from a list"),
        ({"lr": {"low": 0.1, "high": math.inf}}, "is not a number"),
    ],
)
def test_bad_spaces_are_refused_with_what_is_wrong(raw: object, says: str) -> None:
    with pytest.raises(SpaceError, match=None) as caught:
        parse_space(raw)  # type: ignore[arg-type]
    assert says in str(caught.value)


def test_metrics_know_their_direction_and_what_is_reported_each_epoch() -> None:
    assert metric("val_acc").direction == "maximize" and metric("val_loss").direction == "minimize"
    assert metric("test_accuracy").per_epoch == "val_acc"  # trials are never cut short on the test images
    assert set(METRICS) == {"val_acc", "val_loss", "test_accuracy"}
    with pytest.raises(ChoiceError, match="metric 'accuracy': choose one of val_acc"):
        metric("accuracy")


def test_the_space_says_itself_in_words() -> None:
    lines = parse_space({"lr": {"low": 0.001, "high": 0.1, "log": True}, "nesterov": [True, False]}).describe()
    assert lines == ["Learning rate: from 0.001 to 0.1 (log scale)", "Nesterov momentum: yes, no"]


# --- the learning rate around each optimizer's usual rate (issue 24) -------------------------------------------


def test_the_usual_rate_space_draws_a_multiple_of_each_optimizers_usual_rate() -> None:
    from core.experiments.rates import RATE_FACTOR, trial_settings
    from core.train.config import TrainConfig

    space = parse_space({"optimizer": ["sgd", "adam"], "lr": "usual"})
    assert list(space.options) == ["optimizer", RATE_FACTOR]  # one parameter in every trial: grids keep working
    assert space.options[RATE_FACTOR] == Range(0.1, 3.0, log=True, integer=False, steps=3)
    assert parse_space(space_json(space)) == space
    base = TrainConfig(dataset="d")
    assert space.describe(base) == ["Optimizer: SGD (momentum), Adam",
                                    "Learning rate: 0.01 to 0.3 for SGD (momentum), 1e-4 to 3e-3 for Adam (log scale, "
                                    "around each optimizer's usual rate)"]  # fmt: skip
    # A grid puts each optimizer's rates at the same places in its own range.
    rates = {(o, trial_settings(base, {"optimizer": o, RATE_FACTOR: f})["lr"]) for o in ("sgd", "adam")
             for f in space.grid()[RATE_FACTOR]}  # fmt: skip
    assert rates == {("sgd", 0.01), ("sgd", 0.0547723), ("sgd", 0.3), ("adam", 1e-4), ("adam", 5.47723e-4),
                     ("adam", 3e-3)}  # fmt: skip
    adadelta = trial_settings(base, {"optimizer": "adadelta", RATE_FACTOR: 0.5})
    assert adadelta == {"optimizer": "adadelta", "lr": 0.5}  # Adadelta's usual rate is 1.0
    pretrained = trial_settings(TrainConfig(dataset="d", weights="imagenet"), {"optimizer": "sgd", RATE_FACTOR: 1.0})
    assert pretrained["lr"] == pytest.approx(0.01)  # a tenth from trained weights, as the run's own plan does


def test_a_typed_rate_range_is_kept_but_said_to_lie_far_outside_an_optimizers_usual_range() -> None:
    from core.experiments.space import rate_warnings
    from core.train.config import TrainConfig

    base = TrainConfig(dataset="d")
    issue = parse_space({"optimizer": ["sgd", "adam"], "lr": {"low": 0.01, "high": 0.3, "log": True}})
    assert issue.options["lr"] == Range(0.01, 0.3, log=True, integer=False, steps=3)  # the user's choice stays
    [warning] = rate_warnings(issue, base)
    assert warning.startswith("Learning rates 0.01 to 0.3 lie far outside Adam's usual range (1e-4 to 3e-3): up to "
                              "100x above it")  # fmt: skip
    assert rate_warnings(parse_space({"lr": {"low": 0.01, "high": 0.3, "log": True}}), base) == []  # SGD's own
    [low] = rate_warnings(parse_space({"lr": [1e-4, 3e-4]}), base)  # Adam's rates for SGD
    assert "SGD (momentum)'s usual range (0.01 to 0.3): down to 100x below it" in low
    assert rate_warnings(parse_space({"optimizer": ["sgd", "adam"], "lr": "usual"}), base) == []
    # A rate given in the base settings is every trial's: it is checked the same way.
    [fixed] = rate_warnings(parse_space({"optimizer": ["sgd", "adam"]}), TrainConfig(dataset="d", lr=0.1))
    assert "Adam's usual range" in fixed and "33x above it" in fixed


def test_bad_usual_rate_spaces_are_refused_in_words() -> None:
    with pytest.raises(SpaceError, match="not both"):
        parse_space({"lr": [0.1], "lr_factor": [1.0]})
    with pytest.raises(SpaceError, match='"usual"'):
        parse_space({"lr": "fast"})
    with pytest.raises(SpaceError, match="lr_factor"):
        parse_space({"lr_factor": [0]})


def test_an_automatic_batch_or_size_is_said_in_words() -> None:
    lines = parse_space({"batch_size": [0, 16], "image_size": [0, 32]}).describe()
    assert "Images per step: Automatic, 16" in lines and "Input size (px): Automatic, 32" in lines
