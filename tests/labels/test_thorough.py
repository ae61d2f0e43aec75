"""Thorough mode: K-fold cross-training, each fold an ordinary run that never sees the images it predicts.

Real training throughout: LeNet for one epoch on a small colour-classes set (seconds a fold), and the default recipe
on the built-in digits with planted label flips (slow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.common.errors import RunStoreError
from core.common.workspace import Workspace
from core.datasets import samples
from core.datasets.sources import DatasetRef, csv_ref, resolve_dataset
from core.labels import thorough
from core.labels.confident import find_label_issues
from core.labels.folds import assign_folds, fold_tables, gather, labelled_images
from core.labels.probabilities import LabelIssuesError, load_out_of_sample, out_of_sample_file
from core.labels.temperature import scaled
from core.store.runs import RunStore
from core.train.checkpoints import stored_plan
from core.train.jobs import JobRegistry
from core.train.predictions import predictions_file
from core.train.run_folder import run_dir, run_splits
from tests import imagefactory as f
from tests.labels import plant_flips
from tests.support import TrainedRun, train_to_the_end

WAIT_S = 600


# --- the folds (no training) ---------------------------------------------------------------------


def _table(sizes: dict[str, int]) -> pd.DataFrame:
    rows = [(f"{label}/{i:03d}.png", label) for label, n in sizes.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["path", "label"])


def test_folds_are_stratified_balanced_and_the_same_whatever_the_listing_order() -> None:
    table = _table({"a": 23, "b": 17, "c": 5, "d": 2})
    fold = assign_folds(table, 5)
    assert np.ptp(np.bincount(fold, minlength=5)) <= 1  # fold sizes differ by at most one image
    for label, n in {"a": 23, "b": 17, "c": 5, "d": 2}.items():
        per_fold = np.bincount(fold[table["label"].to_numpy() == label], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == n
    shuffled = table.sample(frac=1.0, random_state=3)
    again = dict(zip(shuffled["path"], assign_folds(shuffled, 5), strict=True))
    assert again == dict(zip(table["path"], fold, strict=True))
    assert not np.array_equal(assign_folds(table, 5, seed=1), fold)  # the seed decides


def test_fold_tables_hold_each_image_out_once_and_keep_a_lone_image_in_training() -> None:
    table = _table({"a": 6, "b": 7, "solo": 1})
    tables, left_out = fold_tables(table, 3)
    held = pd.concat([t[t["split"] == "test"] for t in tables])
    assert sorted(held["image"]) == sorted(p for p in table["path"] if not p.startswith("solo/"))
    assert all((t.set_index("image").loc["solo/000.png", "split"] == "train") for t in tables)
    assert [x["path"] for x in left_out] == ["solo/000.png"] and "only image" in left_out[0]["reason"]


# --- a label check on the colour classes (real runs, 1 epoch each) -----------------------------------


FOLDS = 3


def _colour_run(base: Path) -> tuple[TrainedRun, DatasetRef]:
    ws = Workspace.open(base / "ws")
    root = f.write_colour_classes(ws.datasets / "colours", 12, size=(12, 12))
    f.write_text_as_image(root / "red" / "broken.png")  # unreadable: listed with its reason, never lost
    trained = train_to_the_end(ws, dataset=str(root), arch="lenet", epochs=1, batch_size=16, log_every=1)
    return trained, resolve_dataset(str(root), ws)


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainedRun, DatasetRef, int]:
    """A completed label check (3 folds) of a 1-epoch LeNet run on 3 colour classes x 12 images."""
    trained, ref = _colour_run(tmp_path_factory.mktemp("thorough"))
    store = RunStore(trained.ws.runs_db)
    group = thorough.submit_thorough(JobRegistry(store), trained.ws, store, ref, trained.run_id, FOLDS)
    assert thorough.wait_thorough(store, group, WAIT_S)
    return trained, ref, group


def test_every_image_is_predicted_once_by_a_fold_that_never_trained_on_it(checked) -> None:
    trained, ref, group = checked
    ws, store = trained.ws, RunStore(trained.ws.runs_db)
    oos = thorough.collect_thorough(ws, store, group)
    table, _ = labelled_images(ref, ws)
    assert oos is not None and oos.mode == "thorough" and oos.folds == FOLDS and oos.run_id == trained.run_id
    assert oos.dataset == ref.spec and oos.classes == ["blue", "green", "red"]
    assert oos.paths == sorted(table["path"]) and len(set(oos.paths)) == 36  # the dataset's own order, each once
    assert oos.given == [p.split("/")[0] for p in oos.paths]
    np.testing.assert_allclose(oos.probs.sum(1), 1.0, rtol=1e-5)
    runs = thorough.fold_runs(store, group)
    assert oos.fold_runs == [runs[k].run_id for k in range(FOLDS)]
    for path, fold in zip(oos.paths, oos.fold_of, strict=True):
        for k, run in runs.items():  # held out by its own fold; trained on (or validated on) by every other
            split = run_splits(ws, run.run_id).set_index("path").loc[path, "split"]
            assert (split == "test") == (k == fold), (path, k, split)
    assert np.ptp(np.bincount(oos.fold_of)) <= 1
    assert [x["path"] for x in oos.left_out] == ["red/broken.png"]
    raw = gather(ws, [runs[k] for k in range(FOLDS)])[1]  # as the folds answered: smoothed (label smoothing 0.1)
    assert 0 < oos.temperature <= 1
    np.testing.assert_allclose(oos.probs, scaled(raw, oos.temperature), rtol=1e-5, atol=1e-7)


def test_the_label_check_is_one_record_and_its_folds_say_what_they_are(checked) -> None:
    trained, ref, group = checked
    store = RunStore(trained.ws.runs_db)
    record = store.get_run(group)
    assert (record.kind, record.status, record.parent_id) == ("label-check", "completed", trained.run_id)
    assert thorough.thorough_spec(store, group) == thorough.ThoroughSpec(ref.spec, trained.run_id, FOLDS)
    assert thorough.find_thorough(store, ref.spec, trained.run_id) == group
    assert thorough.thorough_progress(store, group) == (FOLDS, FOLDS, 0)
    folds = store.list_runs(group=f"labels-{group}")
    assert len(folds) == FOLDS and {r.kind for r in folds} == {"train"}
    assert sorted(r.name for r in folds) == [f"label check {group}, fold {k} of {FOLDS}" for k in (1, 2, 3)]
    assert store.summary(record)["kind"] == "label-check"  # what `runs` prints in the network's place


def test_each_fold_trains_with_the_runs_own_settings_from_a_fresh_network(checked) -> None:
    trained, _, group = checked
    store = RunStore(trained.ws.runs_db)
    base = stored_plan(store, trained.ws, store.get_run(trained.run_id)).settings
    for run in thorough.fold_runs(store, group).values():
        plan = stored_plan(store, trained.ws, run).settings
        assert (plan.arch, plan.image_size, plan.lr, plan.batch_size, plan.epochs, plan.seed) == (
            base.arch, base.image_size, base.lr, base.batch_size, base.epochs, base.seed)  # fmt: skip
        assert plan.from_run == 0 and plan.dataset.startswith("csv:")


def test_collect_reads_back_what_it_saved_and_predicts_again_when_a_fold_lost_its_predictions(checked) -> None:
    trained, ref, group = checked
    ws, store = trained.ws, RunStore(trained.ws.runs_db)
    first = thorough.collect_thorough(ws, store, group)
    kept = load_out_of_sample(ws, ref.spec, trained.run_id, "thorough")
    np.testing.assert_array_equal(kept.probs, first.probs)
    out_of_sample_file(ws, ref.spec, trained.run_id, "thorough").unlink()
    predictions_file(run_dir(ws, first.fold_runs[1]), "test").unlink()  # best.pt predicts fold 2 again
    again = thorough.collect_thorough(ws, store, group)
    assert again.paths == first.paths
    np.testing.assert_allclose(again.probs, first.probs, rtol=1e-4, atol=1e-6)


def test_cancel_stops_the_folds_collect_waits_and_resume_finishes_them(tmp_path: Path) -> None:
    trained, ref = _colour_run(tmp_path)
    ws, store = trained.ws, RunStore(trained.ws.runs_db)
    registry = JobRegistry(store, cores=1)  # one fold at a time: the others are still queued when cancelled
    group = thorough.submit_thorough(registry, ws, store, ref, trained.run_id, FOLDS)
    assert thorough.collect_thorough(ws, store, group) is None  # nothing collected before every fold completed
    assert thorough.cancel_thorough(registry, store, group) >= FOLDS - 1
    assert thorough.wait_thorough(store, group, WAIT_S)
    done, total, stopped = thorough.thorough_progress(store, group)
    assert (total, done + stopped) == (FOLDS, FOLDS) and stopped >= FOLDS - 1
    assert store.get_run(group).status == "cancelled" and thorough.collect_thorough(ws, store, group) is None
    queued = thorough.resume_thorough(registry, ws, store, group)
    assert len(queued) == stopped
    assert thorough.wait_thorough(store, group, WAIT_S)
    assert store.get_run(group).status == "completed"
    oos = thorough.collect_thorough(ws, store, group)
    assert oos is not None and len(oos.paths) == 36 and sorted(oos.fold_runs) == sorted(
        r.run_id for r in thorough.fold_runs(store, group).values())  # fmt: skip


def test_a_fold_cancelled_on_its_own_is_resumed_while_the_others_train(tmp_path: Path) -> None:
    trained, ref = _colour_run(tmp_path)
    ws, store = trained.ws, RunStore(trained.ws.runs_db)
    registry = JobRegistry(store, cores=1)
    group = thorough.submit_thorough(registry, ws, store, ref, trained.run_id, FOLDS)
    last = thorough.fold_runs(store, group)[FOLDS - 1].run_id
    assert registry.cancel(last)  # still queued behind the others: cancelled before it started (the Runs page's way)
    assert store.get_run(last).status == "cancelled"
    (again,) = thorough.resume_thorough(registry, ws, store, group)  # no checkpoint: queued afresh as the same fold
    assert again != last and thorough.fold_runs(store, group)[FOLDS - 1].run_id == again
    assert thorough.wait_thorough(store, group, WAIT_S)
    assert store.get_run(group).status == "completed" and thorough.thorough_progress(store, group) == (3, 3, 0)
    with pytest.raises(RunStoreError, match="completed"):
        thorough.resume_thorough(registry, ws, store, group)
    assert thorough.collect_thorough(ws, store, group).fold_runs[-1] == again


def test_the_command_lines_form_trains_the_folds_and_returns_the_probabilities(tmp_path: Path) -> None:
    trained, ref = _colour_run(tmp_path)
    store = RunStore(trained.ws.runs_db)
    seen: list[int] = []
    oos = thorough.thorough_and_wait(trained.ws, store, ref, trained.run_id, 2, on_wait=seen.append)
    assert len(oos.paths) == 36 and oos.folds == 2 and set(oos.fold_of) == {0, 1}
    assert store.get_run(thorough.find_thorough(store, ref.spec, trained.run_id)).status == "completed"


def test_refusals_are_said_in_words(checked, tmp_path: Path) -> None:
    trained, ref, _ = checked
    store = RunStore(trained.ws.runs_db)
    registry = JobRegistry(store)
    with pytest.raises(LabelIssuesError, match="folds"):
        thorough.submit_thorough(registry, trained.ws, store, ref, trained.run_id, 1)
    queued = store.create_run(dataset=ref.spec, kind="train")
    with pytest.raises(LabelIssuesError, match="no settings"):
        thorough.submit_thorough(registry, trained.ws, store, ref, queued, 3)
    few = csv_ref(_few(tmp_path, ref), trained.ws.with_roots(tmp_path), images=ref.root)
    with pytest.raises(LabelIssuesError, match="fewer folds"):
        thorough.submit_thorough(registry, trained.ws.with_roots(tmp_path), store, few, trained.run_id, 5)
    assert store.list_runs(kind="label-check") == [store.get_run(checked[2])]  # nothing left behind


def _few(folder: Path, ref: DatasetRef) -> Path:
    """Four images of two classes: too few for five folds."""
    csv = folder / "few.csv"
    csv.write_text("image,label\nred/0.png,red\nred/1.png,red\nblue/0.png,blue\nblue/1.png,blue\n")
    return csv


# --- how well it finds planted flips (the figures in the final report of issue 27's note) --------------------


def thorough_scores(base: Path, source: Path, seed: int = 0) -> tuple[int, int, int]:
    """Plant 5% flips in a copy of ``source`` (``seed``), train the default recipe on the flipped copy (the run a
    user with wrong labels has), then thorough mode with its settings, 5 folds: (flips found, suspects, flips)."""
    flipped = plant_flips(source, base / "flipped", seed=seed)
    ws = Workspace.open(base / "ws").with_roots(base)
    run = train_to_the_end(ws, dataset=str(flipped.root))
    store = RunStore(ws.runs_db)
    oos = thorough.thorough_and_wait(ws, store, resolve_dataset(str(flipped.root), ws), run.run_id)
    assert not oos.left_out and len(oos.paths) == flipped.n_images
    suspects = list(find_label_issues(oos).suspects["path"])
    precision, recall = flipped.scores(suspects)
    print(f"{source.name} (flips seed {seed}): {len(suspects)} suspects, {len(flipped.flips)} flips, precision "
          f"{precision:.3f}, recall {recall:.3f}, temperature {oos.temperature:.2f}, folds {oos.seconds['wall']:.0f} s")  # fmt: skip
    return len(set(suspects) & set(flipped.flips)), len(suspects), len(flipped.flips)


DIGIT_DRAWS = (0, 1, 2)


@pytest.mark.measure  # ~4 min of training: a figure of the note, run by hand (-m measure); CI stays under 25 min
def test_thorough_mode_finds_planted_flips_in_the_digits(digits_ws: Workspace, tmp_path: Path) -> None:
    """Three draws of the flips (seeds 0-2, 90 of 1,797 each), default recipe, 5 folds, pooled: one draw of 90 flips
    is a small sample (the share of flips counted varied from 64% to 79% between draws, against 77% of clean images).

    Measured 2026-12-07 (four draws, 0-3): without the temperature precision 0.951, recall 0.814 pooled (per draw
    recall 0.744, 0.789, 0.889, 0.833); with it (``core.labels.temperature``, T = 0.84-0.85) 0.954 and 0.856 (0.800,
    0.811, 0.900, 0.911). Every flip missed is predicted as its true class, but below that class's threshold (its
    images' mean confidence)."""
    source = samples.sample_path("sample:digits", digits_ws.datasets)
    found = suspects = flips = 0
    for seed in DIGIT_DRAWS:
        one = thorough_scores(tmp_path / f"draw{seed}", source, seed)
        assert one[2] == 90 and one[0] >= 0.7 * one[2], one  # no draw far below the bar
        found, suspects, flips = found + one[0], suspects + one[1], flips + one[2]
    print(f"pooled over {len(DIGIT_DRAWS)} draws: precision {found / suspects:.3f}, recall {found / flips:.3f}")
    assert found / suspects >= 0.8 and found / flips >= 0.8


@pytest.mark.slow
def test_thorough_mode_finds_planted_flips_in_colour_classes(tmp_path: Path) -> None:
    """Measured at 3 x 200 images of 32 px: precision 1.0, recall 0.90 (27 suspects, 30 flips of 600), folds 135 s on
    the shared machine; run here at 3 x 100 of 16 px (15 flips), a third of the time, for CI's budget."""
    source = f.write_colour_classes(tmp_path / "colours", 100, size=(16, 16))
    found, suspects, flips = thorough_scores(tmp_path, source)
    assert flips == 15
    assert found / suspects >= 0.8 and found / flips >= 0.8
