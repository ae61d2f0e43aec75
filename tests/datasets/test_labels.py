"""One label rule for every dataset format (``core.datasets.labels.label_text``): a CSV's "5.0", a JSON 5.0 and a
JSON 5 are one class, "5"; text is stripped; a decimal keeps its value, not its spelling ("2.50" is "2.5")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.common.workspace import Workspace
from core.datasets.labels import label_text
from core.datasets.scan import scan_dataset
from core.datasets.sources import csv_ref, metadata_ref, resolve_dataset
from tests import imagefactory as fx


@pytest.mark.parametrize(
    ("value", "text"),
    [(5, "5"), (5.0, "5"), ("5.0", "5"), ("5.000", "5"), (" 5 ", "5"), ("5", "5"), (-3.0, "-3"), ("-3.0", "-3"),
     (2.5, "2.5"), ("2.50", "2.5"), (-0.0, "0"), ("-0.0", "0"), ("007", "007"), ("1.0.2", "1.0.2"), ("v5.0", "v5.0"),
     (True, "true"), ("cat\u00a0", "cat"), ("Cafe\u0301", "Caf\u00e9"), ("", "")],
)  # fmt: skip
def test_one_rule_for_a_label_value(value: object, text: str) -> None:
    assert label_text(value) == text


def _images(folder: Path, stems: list[str]) -> None:
    for i, stem in enumerate(stems):
        fx.write_rgb(folder / f"{stem}.png", size=(8, 8), seed=i)


def test_a_csv_and_a_json_dataset_with_the_same_counts_give_the_same_classes(tmp_path: Path, ws: Workspace) -> None:
    stems = ["a", "b", "c", "d", "e", "f"]
    written = ["5.0", "5", " 5 ", "2.50", "2.5", "3"]  # as a spreadsheet export writes them
    _images(tmp_path / "csv", stems)
    rows = "".join(f"{stem}.png,{label}\n" for stem, label in zip(stems, written, strict=True))
    (tmp_path / "csv" / "labels.csv").write_text("image,count\n" + rows)
    _images(tmp_path / "json" / "images", stems)
    for stem, count in zip(stems, [5.0, 5, 5, 2.5, 2.50, 3], strict=True):  # as JSON writers emit them
        (tmp_path / "json" / "meta").mkdir(parents=True, exist_ok=True)
        (tmp_path / "json" / "meta" / f"{stem}.json").write_text(json.dumps({"count": count}))

    from_csv = scan_dataset(csv_ref(tmp_path / "csv" / "labels.csv", ws), ws.cache)
    from_json = scan_dataset(metadata_ref(tmp_path / "json" / "meta", "count", ws, images=tmp_path / "json" / "images"),
                             ws.cache)  # fmt: skip
    assert from_csv.classes == from_json.classes == {"2.5": 2, "3": 1, "5": 3}


def test_a_class_folder_follows_the_same_rule(tmp_path: Path, ws: Workspace) -> None:
    _images(tmp_path / "d" / "5.0", ["a"])
    _images(tmp_path / "d" / "5", ["b"])
    assert scan_dataset(resolve_dataset(str(tmp_path / "d"), ws), ws.cache).classes == {"5": 2}
