"""``python -m core evaluate``: the JSON contract, the leakage-honest score on planted copies, the predictions
file against ``predict --run``, the self-contained report, and one-line errors for runs that cannot be scored."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from core.cli.main import main
from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train.predictions import predictions_file, read_predictions
from core.train.run_folder import run_dir
from tests.evaluate.runs import LEAK_CLASSES, MISLABELLED, N_COPIES, N_FRESH_TEST, leaky_photos, train
from tests.support import TrainedRun, copy_workspace

CONTRACT = {"run_id", "split", "n", "accuracy", "top5", "macro", "per_class", "confusion", "map5", "ece", "log_loss",
            "leakage"}  # fmt: skip


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval-cli")


@pytest.fixture(scope="module")
def colours_run(trained_colour_folders: TrainedRun, base: Path) -> tuple[Workspace, int]:
    """The session's colour-folders run in a copy of its workspace (a test adds runs to it)."""
    run = copy_workspace(trained_colour_folders, base / "ws")
    return run.ws, run.run_id


@pytest.fixture(scope="module")
def leaky_run(base: Path) -> tuple[Workspace, int, set[str]]:
    ws = Workspace.open(base / "ws-leaky").with_roots(base)
    root, planted = leaky_photos(base / "leaky")
    return ws, train(ws, root, epochs=12, image_size=32), planted


def test_evaluate_json_follows_the_contract(colours_run, capsys) -> None:
    ws, run_id = colours_run
    code, out, err = cli(["evaluate", str(run_id), "--workspace", str(ws.root), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert CONTRACT <= set(result)
    assert result["run_id"] == run_id and result["split"] == "test"
    frame = read_predictions(predictions_file(run_dir(ws, run_id), "test")).frame
    assert result["n"] == len(frame) == 20
    assert result["accuracy"] == pytest.approx((frame["pred1"] == frame["label"]).mean(), abs=1e-6)
    assert set(result["macro"]) >= {"precision", "recall", "f1"}
    assert [row["label"] for row in result["per_class"]] == ["blue", "green", "red"]
    assert set(result["per_class"][0]) >= {"label", "precision", "recall", "f1", "support"}
    assert result["confusion"]["labels"] == ["blue", "green", "red"]
    matrix = result["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == 20 and [sum(row) for row in matrix] == [7, 7, 6]
    assert result["top5"] == 1.0 and result["top_k"]["k"] == 2
    assert result["leakage"]["checked"] is True and set(result["leakage"]) >= {"n_leaking", "accuracy_without_leaks"}
    assert 0 <= result["ece"] <= 1 and result["log_loss"] > 0 and 0 <= result["map5"] <= 1


def test_the_score_is_given_with_and_without_test_images_that_have_a_copy_in_train(leaky_run, capsys) -> None:
    ws, run_id, planted = leaky_run
    code, out, err = cli(["evaluate", str(run_id), "--workspace", str(ws.root), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    leakage = result["leakage"]
    assert leakage["n_leaking"] == len(planted) == N_COPIES * len(LEAK_CLASSES)
    assert {pair[0] for pair in leakage["pairs"]} == planted
    assert all(pair[1].startswith("train/") for pair in leakage["pairs"])
    frame = read_predictions(predictions_file(run_dir(ws, run_id), "test")).frame
    right = frame["pred1"] == frame["label"]
    clean = ~frame["image"].isin(planted)
    assert leakage["n_without_leaks"] == int(clean.sum()) == N_FRESH_TEST * len(LEAK_CLASSES)
    assert leakage["accuracy_all"] == pytest.approx(right.mean(), abs=1e-6)
    assert result["accuracy"] == pytest.approx(right.mean(), abs=1e-6)
    assert leakage["accuracy_without_leaks"] == pytest.approx(right[clean].mean(), abs=1e-6)
    assert leakage["gap"] == pytest.approx(right.mean() - right[clean].mean(), abs=1e-6)
    code, out, _ = cli(["evaluate", str(run_id), "--workspace", str(ws.root)], capsys)
    assert code == 0 and f"{len(planted)} of the {len(frame)} test images have a copy" in out


def test_the_predictions_file_agrees_with_predict_on_the_same_images(colours_run, tmp_path: Path, capsys) -> None:
    ws, run_id = colours_run
    target = tmp_path / "preds.csv"
    code, _, err = cli(["evaluate", str(run_id), "--predictions", str(target), "--workspace", str(ws.root)], capsys)
    assert code == 0, err
    table = pd.read_csv(target, keep_default_na=False)
    assert list(table.columns) == ["image", "label", *(f"{c}{k}" for k in range(1, 6) for c in ("pred", "p"))]
    assert len(table) == 20 and table["pred4"].eq("").all()
    code, out, err = cli(["predict", "--run", str(run_id), *table["image"], "--workspace", str(ws.root), "--json"],
                         capsys)  # fmt: skip
    assert code == 0, err
    for row, predicted in zip(table.itertuples(), json.loads(out), strict=True):
        assert predicted["image"] == row.image
        assert [t["label"] for t in predicted["top"]] == [row.pred1, row.pred2, row.pred3]
        assert [t["p"] for t in predicted["top"]] == pytest.approx([row.p1, row.p2, row.p3], abs=1e-4)
    mislabelled = table[table["image"].str.endswith(MISLABELLED[0])]
    assert mislabelled["label"].item() == "blue"


def test_the_report_is_one_self_contained_html_file_with_the_metrics(colours_run, tmp_path: Path, capsys) -> None:
    ws, run_id = colours_run
    target = tmp_path / "report.html"
    code, out, err = cli(["evaluate", str(run_id), "--report", str(target), "--workspace", str(ws.root), "--json"],
                         capsys)  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    page = target.read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert f"{100 * result['accuracy']:.1f}%" in page and "Confusion matrix" in page and "<svg" in page
    assert "data:image/png;base64," in page  # the mistakes' pictures and heat maps are inside the file
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|/)""", page)  # nothing to fetch
    assert "<script" not in page.lower()
    assert str(ws.root) not in page and str(Path(ws.root).parent) not in page  # no server paths
    for label in ("blue", "green", "red"):
        assert f">{label}<" in page


def test_runs_that_cannot_be_scored_get_one_line_and_exit_2(colours_run, trained_colour_folders: TrainedRun,
                                                             capsys) -> None:  # fmt: skip
    ws, _ = colours_run
    colours = trained_colour_folders.dataset
    store = RunStore(ws.runs_db)
    queued = store.create_run(dataset=str(colours), kind="train")
    no_test = train(ws, colours / "train", epochs=1, test_fraction=0.0)
    cases = {"12345": "unknown run 12345", str(queued): "still training",
             str(no_test): "has no test images"}  # fmt: skip
    for run, message in cases.items():
        code, out, err = cli(["evaluate", run, "--workspace", str(ws.root), "--json"], capsys)
        assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err
        assert message in err
    code, _, err = cli(["evaluate", str(no_test), "--split", "nope", "--workspace", str(ws.root)], capsys)
    assert code == 2 and "invalid choice" in err
