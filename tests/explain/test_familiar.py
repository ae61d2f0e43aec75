"""Tests for core.train.familiar: "not sure" on the default digits run, with real photos of other things.

The digits run (the session's default recipe) meets scikit-image's real photos (a coffee cup, an astronaut), a flat
grey square and noise: each must be called "not like the photos this model learned from", even where the network
is confidently wrong about it, while at least 95% of the run's own test digits are not.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as photos

from core.__main__ import main
from core.explain.predict import Predictor, load_run_predictor
from core.store.runs import RunStore
from core.train.checkpoints import load_for_inference
from core.train.familiar import FAMILIAR_FILE, PASS_SHARE, UNLIKE, caught_features, fit_familiarity, last_linear
from core.train.run_folder import checkpoint_path, run_splits
from tests.support import TrainedRun

OTHER_THINGS = {
    "coffee": lambda: Image.fromarray(photos.coffee()),
    "astronaut": lambda: Image.fromarray(photos.astronaut()),
    "grey square": lambda: Image.new("RGB", (64, 64), (128, 128, 128)),
    "noise": lambda: Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)),
}


@pytest.fixture(scope="module")
def predictor(trained_digits: TrainedRun) -> Predictor:
    return load_run_predictor(trained_digits.ws, RunStore(trained_digits.ws.runs_db), trained_digits.run_id)


def test_the_run_stores_its_thresholds_and_their_false_alarms_on_validation(trained_digits: TrainedRun) -> None:
    params = RunStore(trained_digits.ws.runs_db).params(trained_digits.run_id)
    assert (checkpoint_path(trained_digits.ws, trained_digits.run_id, "best").parent / FAMILIAR_FILE).is_file()
    assert params["familiar_n_val"] == 270
    # the quantile puts about 1 - PASS_SHARE of the validation images over each threshold, no more than ~2x
    assert 0.0 < params["unlike_false_alarm"] <= 2 * (1 - PASS_SHARE)
    assert 0.0 <= params["unsure_false_alarm"] <= 2 * (1 - PASS_SHARE)
    assert 0.0 < params["unsure_p"] <= 0.5 and params["unlike_threshold"] > 0


@pytest.mark.parametrize("thing", sorted(OTHER_THINGS))
def test_a_photo_of_something_else_is_not_like_the_training_photos(predictor: Predictor, thing: str) -> None:
    pred = predictor.classify(OTHER_THINGS[thing](), thing)
    assert pred.not_sure and pred.why == UNLIKE, (pred.top[0], pred.why)


def test_at_least_95_percent_of_the_runs_own_test_digits_are_not_called_unlike(
    trained_digits: TrainedRun, predictor: Predictor
) -> None:
    splits = run_splits(trained_digits.ws, trained_digits.run_id)
    test = splits[splits["split"] == "test"]
    whys = [predictor.run(trained_digits.dataset / p, p).why for p in test["path"]]
    unlike = sum(w == UNLIKE for w in whys)
    assert len(whys) == 270 and unlike / len(whys) <= 0.05, unlike


def test_classify_and_explain_judge_a_photo_alike(predictor: Predictor, trained_digits: TrainedRun) -> None:
    digit = Image.open(trained_digits.dataset / "test" / "3" / sorted(p.name for p in
                       (trained_digits.dataset / "test" / "3").iterdir())[0])  # fmt: skip
    coffee = OTHER_THINGS["coffee"]()
    for picture in (digit, coffee):
        plain = predictor.classify(picture, "x")
        for method in ("gradcam", "scorecam"):
            explained = predictor.explain(picture, "x", method)
            assert (explained.not_sure, explained.why) == (plain.not_sure, plain.why), method


def test_predict_json_says_not_sure_and_why_for_every_image(trained_digits: TrainedRun, tmp_path, capsys) -> None:
    coffee = tmp_path / "coffee.jpg"
    OTHER_THINGS["coffee"]().save(coffee)
    digit = next((trained_digits.dataset / "test" / "7").iterdir())
    code = main(["predict", str(coffee), str(digit), "--run", str(trained_digits.run_id), "--workspace",
                 str(trained_digits.ws.root), "--json"])  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    assert code == 0
    assert rows[0]["not_sure"] is True and rows[0]["why"] == UNLIKE
    assert rows[1]["not_sure"] is False and rows[1]["why"] == "" and rows[1]["top"][0]["label"] == "7"


def test_without_stored_checks_a_weak_best_guess_alone_makes_it_not_sure(trained_digits: TrainedRun) -> None:
    model = load_for_inference(checkpoint_path(trained_digits.ws, trained_digits.run_id, "best"))
    bare = Predictor(model, source="an older run")  # as a run trained before the checks were kept
    with torch.no_grad():
        last_linear(model.model).weight.zero_()  # every class equally likely: a 10% best guess
        last_linear(model.model).bias.zero_()
    pred = bare.classify(OTHER_THINGS["grey square"](), "grey")
    assert pred.not_sure and pred.why == "its best guess has only 10%"


def test_too_few_validation_images_give_no_checks() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    few = [(torch.rand(5, 4), torch.zeros(5))]
    assert fit_familiarity(net, few, few) is None
    with caught_features(net) as seen:
        net(torch.rand(2, 4))
    assert seen.features[0].shape == (2, 4) and seen.inputs[0].shape == (2, 4)


@pytest.mark.parametrize("damage", ["feature view only", "truncated"])
def test_a_damaged_or_older_checks_file_leaves_the_weak_guess_rule_not_a_crash(
    trained_digits: TrainedRun, tmp_path, damage: str
) -> None:
    from core.train.familiar import load_familiarity

    folder = checkpoint_path(trained_digits.ws, trained_digits.run_id, "best").parent
    saved = torch.load(folder / FAMILIAR_FILE, weights_only=True)
    if damage == "feature view only":  # what a build of the same day wrote before the pixel view was added
        torch.save({k: v for k, v in saved.items() if not k.startswith("pixel")}, tmp_path / FAMILIAR_FILE)
    else:
        (tmp_path / FAMILIAR_FILE).write_bytes((folder / FAMILIAR_FILE).read_bytes()[:100])
    assert load_familiarity(tmp_path) is None
