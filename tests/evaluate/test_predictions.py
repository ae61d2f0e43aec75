"""Per-image predictions kept with a run: written at the end of training, read back by evaluation, and made once
from the best checkpoint for a run finished before they were kept (and for the val split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.common.workspace import Workspace
from core.evaluate.evaluation import evaluate_run
from core.store.runs import RunStore
from core.train import run_folder
from core.train import runner as train_run
from core.train.predictions import PredictionsError, predictions_file, read_predictions
from tests.evaluate.runs import MISLABELLED, SPLIT_SIZES
from tests.support import TrainedRun, copy_workspace


@pytest.fixture(scope="module")
def trained(trained_colour_folders: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, int]:
    """The session's colour-folders run in a copy of its workspace (these tests remove and remake its files)."""
    run = copy_workspace(trained_colour_folders, tmp_path_factory.mktemp("eval-predictions") / "ws")
    return run.ws, run.run_id


def test_a_completed_run_keeps_its_test_predictions_beside_its_checkpoints(trained) -> None:
    ws, run_id = trained
    store = RunStore(ws.runs_db)
    path = predictions_file(run_folder.run_dir(ws, run_id), "test")
    assert path.is_file()
    assert {a["kind"] for a in store.artifacts(run_id)} >= {"test_predictions"}
    stored = read_predictions(path)
    frame = stored.frame
    assert stored.classes == ["blue", "green", "red"] and stored.split == "test"
    assert len(frame) == 3 * SPLIT_SIZES["test"] + len(MISLABELLED)
    assert set(MISLABELLED) <= set(frame["image"])
    assert {"image", "label", "pred1", "p1", "pred3", "p3", "rank", "p_true", "loss"} <= set(frame)
    probs = stored.probs
    assert probs.shape == (len(frame), 3)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (frame["pred1"] == [stored.classes[i] for i in probs.argmax(1)]).all()
    assert np.allclose(frame["loss"], -np.log(frame["p_true"]))
    assert frame["pred4"].eq("").all() and frame["p4"].isna().all()  # 3 classes: no 4th guess
    # The numbers the run logged at its end are those of the stored file.
    test = train_run.result_json(store, run_id, ws)["test"]
    assert test["n"] == len(frame)
    assert test["accuracy"] == pytest.approx((frame["pred1"] == frame["label"]).mean())
    assert test["loss"] == pytest.approx(frame["loss"].mean(), rel=1e-4)


def test_a_run_from_before_predictions_were_kept_is_predicted_once_from_its_best_checkpoint(trained) -> None:
    ws, run_id = trained
    store = RunStore(ws.runs_db)
    path = predictions_file(run_folder.run_dir(ws, run_id), "test")
    original = read_predictions(path).frame
    path.unlink()  # as a run finished before this version left it
    ev = evaluate_run(ws, store, run_id, leaks="skip")
    assert path.is_file() and ev.predictions.meta["made"] == "later, from best.pt"
    again = ev.frame.set_index("image").loc[original["image"]]
    assert list(again["pred1"]) == list(original["pred1"])
    assert np.allclose(again["p_true"], original["p_true"], atol=1e-5)
    mtime = path.stat().st_mtime_ns
    evaluate_run(ws, store, run_id, leaks="skip")
    assert path.stat().st_mtime_ns == mtime  # once: the next evaluation reads the file


def test_the_val_split_is_predicted_once_and_stored_the_same_way(trained) -> None:
    ws, run_id = trained
    ev = evaluate_run(ws, RunStore(ws.runs_db), run_id, split="val", leaks="skip")
    assert ev.metrics.n == 3 * SPLIT_SIZES["val"]
    assert predictions_file(run_folder.run_dir(ws, run_id), "val").is_file()
    assert set(ev.frame["image"]) == {p for p in ev.splits["path"] if p.startswith("val/")}


def test_a_damaged_predictions_file_is_refused_with_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "test_predictions.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(PredictionsError, match="cannot be read as stored predictions"):
        read_predictions(bad)
