"""``python -m core dedup``: the groups CSV (``--csv``, the Duplicates page's download) and the borderline pairs
(``--json``'s ``borderline``, the page's Borderline tab), made by core.dedup.tables for both, on the zoo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from core.cli.main import main
from core.dedup.groups import DEFAULT_THRESHOLDS
from tests import imagefactory as f
from tests.dedup.zoo import Zoo, make_zoo

CSV_COLUMNS = ["group", "kind", "size", "conflict", "leak", "max_distance", "path", "label", "split", "width", "height"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return make_zoo(tmp_path_factory.mktemp("zoo") / "zoo")


def _dedup(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["dedup", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_command_line_writes_the_groups_csv_of_the_page(zoo: Zoo, tmp_path: Path, capsys) -> None:
    target = tmp_path / "out" / "groups.csv"
    target.parent.mkdir()
    result = _dedup([str(zoo.ref.root), "--csv", str(target), "--workspace", str(tmp_path / "ws")], capsys)
    assert result["csv"] == str(target)
    frame = pd.read_csv(target)
    assert list(frame.columns) == CSV_COLUMNS
    assert len(frame) == sum(len(g["files"]) for g in result["groups"]) == 12  # every image of every group
    assert sorted(frame["group"].unique()) == list(range(1, len(zoo.groups) + 1))  # numbered from 1, as on the page
    by_group = [set(paths) for _, paths in frame.groupby("group")["path"]]
    assert sorted(map(sorted, by_group)) == sorted(map(sorted, zoo.groups.values()))
    leak = frame[frame["path"] == "val/cat/r_q60.jpg"].iloc[0]
    assert bool(leak["leak"]) and leak["kind"] == "near" and leak["split"] == "val"
    assert set(frame.loc[frame["conflict"], "label"]) == {"cat", "dog"}
    assert main(["dedup", str(zoo.ref.root), "--csv", str(target), "--workspace", str(tmp_path / "ws")]) == 0
    assert f"groups CSV: {target}" in capsys.readouterr().out


def test_labels_and_file_names_in_the_csv_stay_text_in_a_spreadsheet(tmp_path: Path, capsys) -> None:
    root = tmp_path / "formulas"
    f.write_photo(root / "=HYPERLINK(1)" / "+a.jpg", 1, (120, 90))
    shutil.copy(root / "=HYPERLINK(1)" / "+a.jpg", root / "=HYPERLINK(1)" / "@b.jpg")
    f.write_photo(root / "plain" / "c.jpg", 2, (120, 90))
    target = tmp_path / "groups.csv"
    _dedup([str(root), "--csv", str(target), "--workspace", str(tmp_path / "ws")], capsys)
    frame = pd.read_csv(target)
    assert frame["label"].tolist() == ["'=HYPERLINK(1)"] * 2  # a leading quote: a spreadsheet shows it as text
    assert sorted(frame["path"]) == ["'=HYPERLINK(1)/+a.jpg", "'=HYPERLINK(1)/@b.jpg"]
    assert frame["size"].tolist() == [2, 2]  # numbers stay numbers


def test_an_empty_result_writes_the_header_only(tmp_path: Path, capsys) -> None:
    root = tmp_path / "distinct"
    for k in range(4):
        f.write_photo(root / ["cat", "dog"][k % 2] / f"{k}.jpg", 300 + k)
    target = tmp_path / "groups.csv"
    assert _dedup([str(root), "--csv", str(target), "--workspace", str(tmp_path / "ws")], capsys)["n_groups"] == 0
    assert target.read_text() == ",".join(CSV_COLUMNS) + "\n"


def test_a_csv_that_cannot_be_written_is_an_error_in_words(zoo: Zoo, tmp_path: Path, capsys) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    target = tmp_path / "a-file" / "groups.csv"
    assert main(["dedup", str(zoo.ref.root), "--csv", str(target), "--workspace", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_command_line_reports_the_borderline_pairs_of_the_page(zoo: Zoo, tmp_path: Path, capsys) -> None:
    ws = str(tmp_path / "ws")
    full = _dedup([str(zoo.ref.root), "--workspace", ws], capsys)
    largest = max(g["distance"] for g in full["groups"])
    assert 0 < largest <= DEFAULT_THRESHOLDS["phash"]
    # One bit under the farthest near pair: that pair drops out of the groups, and the borderline says one more
    # bit adds it back (what the page's Borderline tab shows as "At N bits +1 pairs").
    tighter = _dedup([str(zoo.ref.root), "--threshold", str(largest - 1), "--workspace", ws], capsys)
    near = tighter["borderline"]
    assert near["threshold"] == largest - 1 and (near["low"], near["high"]) == (max(largest - 3, 0), largest + 1)
    changes = {c["threshold"]: c["pairs"] for c in near["changes"]}
    assert set(changes) == {largest - 2, largest, largest + 1}
    assert changes[largest] >= 1 and changes[largest + 1] >= changes[largest] and changes[largest - 2] <= 0
    assert tighter["n_groups"] == full["n_groups"] - changes[largest]
    rows = near["by_distance"]
    assert {"bits", "candidate_pairs", "verified", "grouped_now"} == set(rows[0])
    assert all(near["low"] <= r["bits"] <= near["high"] and r["grouped_now"] <= r["verified"] for r in rows)
    added = [p for p in near["pairs"] if p["distance"] == largest and p["verified"]]
    assert added and not any(p["grouped_now"] for p in added)
    assert len(near["pairs"]) == sum(r["candidate_pairs"] for r in rows)
    assert main(["dedup", str(zoo.ref.root), "--threshold", str(largest - 1), "--workspace", ws]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("borderline"))
    assert f"at {largest} bits +{changes[largest]} pair" in line


def test_the_page_and_the_command_line_count_the_same_borderline(zoo: Zoo, tmp_path: Path, capsys) -> None:
    from core.dedup.groups import DedupConfig, find_duplicates

    result = find_duplicates(zoo.ref, tmp_path / "cache", DedupConfig(threshold=4))
    near = result.near_threshold
    table = near.by_distance()
    assert list(table.columns) == ["bits", "candidate pairs", "copies on the pixels", "grouped now"]  # the page's words
    assert json.loads(json.dumps(result.summary()))["borderline"] == json.loads(json.dumps(near.to_dict()))
    assert len(near.grouped()) == int(table["grouped now"].sum())
    assert len(near.outside()) == int((table["copies on the pixels"] - table["grouped now"]).sum())
