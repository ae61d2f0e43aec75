"""Issue 22: every CSV the studio exports is safe to open in a spreadsheet (OWASP's CSV injection advice: a text
cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading single quote; numbers, and
texts that are plain numbers, stay as they are), and numbers typed in an address are read strictly.

The writers are tested on a real LeNet run on the payload dataset (``tests/payloads.py``), whose labels, file
names and dataset name start with formula characters: ``predict --csv`` and ``evaluate --predictions`` through
the command line, and the Classify, Compare and Duplicates downloads through the functions that make them.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pandas as pd
import pytest

from core.cli.main import main
from core.common.untrusted import from_spreadsheet, spreadsheet_cell, spreadsheet_safe, whole_number
from core.common.workspace import Workspace
from core.datasets.layouts import read_label_csv
from core.datasets.sources import resolve_dataset
from core.store.runs import RunStore
from tests.evaluate.runs import train
from tests.payloads import AT_FORMULA, FORMULA, LABELS, MINUS, ODD_FILE, payload_csv

DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


# --- the rule ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=1+2", "'=1+2"),
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+cmd", "'+cmd"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("@SUM(1)", "'@SUM(1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-", "'-"),
        ("'=1", "''=1"),  # looks quoted already: one more quote, so reading back gives "'=1"
        ("'-1", "'-1"),
        ("-1", "-1"),  # a negative number is a number, not a formula
        ("+2.5", "+2.5"),
        ("-1e-3", "-1e-3"),
        ("-.5", "-.5"),
        ("cat", "cat"),
        ("a=b", "a=b"),
        ("", ""),
        (-3, -3),
        (0.25, 0.25),
        (None, None),
    ],
)
def test_a_cell_a_spreadsheet_would_run_gets_a_quote_and_numbers_stay_numbers(value, written) -> None:
    assert spreadsheet_cell(value) == written


@pytest.mark.parametrize("text", ["=1", "'=1", "''=1", "-1", "'-1", "-x", "'", "", "cat", "'cat", "@", "\t"])
def test_reading_back_undoes_exactly_the_quote_that_writing_added(text: str) -> None:
    assert from_spreadsheet(spreadsheet_cell(text)) == text


def test_a_frame_keeps_its_number_columns_and_quotes_its_text_cells_and_names() -> None:
    frame = pd.DataFrame({"image": ["=a.png", "b.png"], "p": [-0.5, 1.0], "n": [-1, 2], "=x": ["-1", "@y"]})
    safe = spreadsheet_safe(frame)
    assert list(safe.columns) == ["image", "p", "n", "'=x"]
    assert safe["image"].tolist() == ["'=a.png", "b.png"] and safe["'=x"].tolist() == ["-1", "'@y"]
    assert safe["p"].dtype == frame["p"].dtype and safe["n"].tolist() == [-1, 2]
    assert frame["image"].tolist() == ["=a.png", "b.png"]  # the caller's frame is left as it was


@pytest.mark.parametrize(
    ("text", "number"),
    [("12", 12), ("0", 0), ("007", 7), ("²", None), ("١٢", None), ("1_0", None), (" 1", None), ("-1", None),
     ("", None), (None, None), ("1.0", None), ("99999999999999999999", 99999999999999999999)],
)  # fmt: skip
def test_a_whole_number_is_ascii_digits_only(text, number) -> None:
    assert whole_number(text) == number


def test_a_negative_whole_number_when_asked() -> None:
    assert whole_number("-3", negative=True) == -3
    assert whole_number("--3", negative=True) is None and whole_number("-", negative=True) is None
    assert whole_number("-²", negative=True) is None


# --- the writers, on a real run ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("csv-safety")
    csv_path = payload_csv(base)
    ws = Workspace.open(base / "ws").with_roots(base)
    return {"base": base, "csv": csv_path, "ws": ws, "run": train(ws, csv_path, epochs=3)}


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def cells(text: str) -> list[list[str]]:
    """The CSV's rows as a spreadsheet reads them: every cell as the text it holds."""
    return list(csv.reader(io.StringIO(text)))


def assert_spreadsheet_safe(text: str) -> None:
    """No cell a spreadsheet would run as a formula: each starts with a quote, or is not text, or is a number."""
    for row in cells(text):
        for cell in row:
            if cell.startswith(DANGEROUS):
                assert pd.to_numeric(pd.Series([cell]), errors="coerce").notna().all(), (cell, row)


def test_predict_csv_quotes_formula_labels_and_file_names(payload: dict, tmp_path: Path, monkeypatch, capsys) -> None:
    red = payload["csv"].parent / "train" / "r0.png"
    for name in ("=1+2.png", "@SUM(1).png", "plain.png"):
        shutil.copy(red, tmp_path / name)
    monkeypatch.chdir(tmp_path)  # the image column holds the paths as typed
    target = tmp_path / "predictions.csv"
    argv = ["predict", "=1+2.png", "@SUM(1).png", "plain.png", "--run", str(payload["run"]), "--csv", str(target)]
    code, _, err = cli([*argv, "--workspace", str(payload["ws"].root)], capsys)
    assert code == 0, err
    text = target.read_text()
    assert_spreadsheet_safe(text)
    rows = cells(text)
    assert [r[0] for r in rows[1:]] == ["'=1+2.png", "'@SUM(1).png", "plain.png"]
    labels = {cell for r in rows[1:] for cell in r[1:11:2]}  # top1 .. top5: every class of the model
    assert {spreadsheet_cell(label) for label in LABELS} == labels
    assert {"'" + FORMULA, "'" + AT_FORMULA, MINUS} <= labels  # the negative number stays a number
    probabilities = pd.read_csv(target)["p1"]
    assert probabilities.between(0, 1).all()  # numbers stay numbers


def test_evaluate_predictions_quotes_formula_labels_and_reads_back_as_they_were(payload: dict, tmp_path: Path,
                                                                                capsys) -> None:  # fmt: skip
    target = tmp_path / "evaluation.csv"
    argv = ["evaluate", str(payload["run"]), "--predictions", str(target), "--workspace", str(payload["ws"].root)]
    code, _, err = cli(argv, capsys)
    assert code == 0, err
    text = target.read_text()
    assert_spreadsheet_safe(text)
    table = pd.read_csv(target, dtype=str, keep_default_na=False)
    assert {"'" + FORMULA, "'" + AT_FORMULA, MINUS} <= set(table["label"])
    assert any(image.endswith(ODD_FILE) for image in table["image"])
    # The studio reading this file as a CSV of labels gets the labels back as they were, not quoted.
    assert set(read_label_csv(target)["label"]) == set(LABELS)


def test_the_classify_batch_csv_quotes_formula_names_and_labels(payload: dict) -> None:
    from core.explain.predict import load_run_predictor
    from ui.classify.batch import predictions_csv
    from ui.classify.results import Upload

    ws = payload["ws"]
    predictor = load_run_predictor(ws, RunStore(ws.runs_db), payload["run"], "cpu")
    data = (payload["csv"].parent / "train" / "b0.png").read_bytes()
    files = [Upload("=1+2.png", "a", data), Upload("-x.png", "b", b"not an image")]
    preds = [predictor.run(data, files[0].name), "not an image (a text file)"]
    text = predictions_csv(files, preds).decode()
    assert_spreadsheet_safe(text)
    rows = cells(text)
    assert [r[0] for r in rows[1:]] == ["'=1+2.png", "'-x.png"]
    assert rows[1][1] == "'" + FORMULA  # a blue picture: the blue class, a formula, quoted


def test_the_compare_csv_quotes_a_formula_dataset_name(payload: dict, monkeypatch) -> None:
    from core.experiments.compare import compare_table
    from ui.compare import table_csv

    ws = payload["ws"]
    store = RunStore(ws.runs_db)
    frame = compare_table(store, ws, [store.get_run(payload["run"])], leaks="skip")
    text = table_csv(frame).decode()
    assert_spreadsheet_safe(text)
    rows = cells(text)
    dataset = rows[0].index("Dataset")
    assert rows[1][dataset].startswith("'@") or rows[1][dataset].startswith("'=")  # "@![d](beacon)/=labels.csv"


def test_the_duplicate_groups_csv_quotes_formula_labels(payload: dict) -> None:
    from core.dedup.groups import DedupConfig, find_duplicates
    from core.dedup.tables import groups_csv

    ws = payload["ws"]
    result = find_duplicates(resolve_dataset(str(payload["csv"]), ws), ws.cache, DedupConfig())
    text = groups_csv(result.groups, result.members)
    assert_spreadsheet_safe(text)
    assert "'" + FORMULA in set(pd.read_csv(io.StringIO(text), dtype=str)["label"])  # train/b0.png and its copy
