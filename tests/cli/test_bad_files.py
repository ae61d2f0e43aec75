"""The bad-file corpus (tests/badfiles.py) through every command, as a user runs them: ``scan``, ``dedup``,
``train``, ``predict`` and ``evaluate`` in real processes. Nothing crashes, every file is either used or listed
with its reason, the good ones are used, and a newline in a file name never splits a line of text output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.badfiles import CORPUS, GOOD_PER_CLASS, write_corpus
from tests.support import ROOT

GOOD = [k for k in CORPUS if k.good]
BAD = [k for k in CORPUS if not k.good]
N_GOOD = 2 * GOOD_PER_CLASS + len(GOOD)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "odd")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus-ws")


def core(ws: Path, *argv: str, json_out: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "core", *argv, "--workspace", str(ws), *(["--json"] if json_out else [])]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr, done.stderr[-3000:]
    return done


def test_scan_uses_every_good_file_and_gives_every_bad_one_its_reason(corpus: Path, ws: Path) -> None:
    summary = json.loads(_ok(core(ws, "scan", str(corpus))).stdout)
    assert summary["n_images"] == N_GOOD and summary["classes"] == {"a": N_GOOD - GOOD_PER_CLASS, "b": GOOD_PER_CLASS}
    reasons = {u["path"]: u["reason"] for u in summary["unreadable"]}
    assert set(reasons) == {f"a/{k.name}" for k in BAD}
    for kind in BAD:
        assert kind.reason in reasons[f"a/{kind.name}"], (kind.what, reasons[f"a/{kind.name}"])


def test_scan_text_keeps_one_line_per_file_whatever_its_name(corpus: Path, ws: Path) -> None:
    lines = _ok(core(ws, "scan", str(corpus), json_out=False)).stdout.splitlines()
    assert lines[0].startswith(f"{N_GOOD} images, 2 classes")
    listed = [line for line in lines if line.startswith("  a/")]
    assert len(listed) == len(BAD)  # one line each: nothing split, nothing forged


def test_dedup_lists_the_bad_files_and_escapes_names_in_its_text(corpus: Path, ws: Path) -> None:
    summary = json.loads(_ok(core(ws, "dedup", str(corpus))).stdout)
    assert summary["n_images"] == N_GOOD
    assert {u["path"] for u in summary["unreadable"]} == {f"a/{k.name}" for k in BAD}
    text = _ok(core(ws, "dedup", str(corpus), json_out=False)).stdout
    assert "new\nline.png" not in text and not any(line.startswith("line.png") for line in text.splitlines())


@pytest.fixture(scope="module")
def trained_run(corpus: Path, ws: Path) -> dict:
    done = _ok(core(ws, "train", str(corpus), "--arch", "lenet", "--epochs", "2", "--threads", "1"))
    return json.loads(done.stdout)


def test_training_uses_the_good_files_and_skips_the_bad_ones(ws: Path, trained_run: dict) -> None:
    assert trained_run["status"] == "completed"
    (run,) = json.loads(_ok(core(ws, "runs")).stdout)
    assert sum(run["splits"].values()) == N_GOOD, run["splits"]


def test_predict_answers_every_file_with_a_prediction_or_its_reason(corpus: Path, ws: Path, trained_run: dict) -> None:
    files = [str(corpus / "a" / k.name) for k in CORPUS] + [str(corpus / "a" / "missing.jpg")]
    rows = json.loads(_ok(core(ws, "predict", *files, "--run", str(trained_run["run_id"]))).stdout)
    assert len(rows) == len(files)
    by_name = {Path(r["image"]).name: r for r in rows}
    for kind in CORPUS:
        row = by_name[kind.name]
        if kind.good or kind.name in ("link-out.jpg",):  # predict reads what the operator names, as any command
            assert "top" in row or "error" in row
        else:
            assert "error" in row and row["error"], (kind.what, row)
    assert "error" in by_name["missing.jpg"]
    assert all("top" in by_name[k.name] for k in GOOD), [by_name[k.name] for k in GOOD if "top" not in by_name[k.name]]
    text = _ok(core(ws, "predict", *files, "--run", str(trained_run["run_id"]), json_out=False)).stdout
    assert len(text.splitlines()) == len(files)  # the newline in a name does not split its line


def test_evaluate_runs_on_the_corpus_run(ws: Path, trained_run: dict) -> None:
    result = json.loads(_ok(core(ws, "evaluate", str(trained_run["run_id"]))).stdout)
    assert result["n"] > 0


def test_runs_text_keeps_one_line_per_run_when_a_dataset_name_holds_a_newline(tmp_path: Path) -> None:
    from core.store.runs import RunStore

    ws = tmp_path / "ws-runs"
    store = RunStore(ws / "runs.sqlite")
    store.create_run(dataset=str(tmp_path / "holiday\nphotos"))
    store.close()
    lines = _ok(core(ws, "runs", json_out=False)).stdout.splitlines()
    assert len(lines) == 2 and lines[1].rstrip().endswith("holiday photos")


# --- hostile files a dataset lists, and a hostile search space (issue 22) -------------------------------------

SECRETS = ("hunter2-token", "root-password-77")
DEEP = "[" * 100_000  # RecursionError in json.loads: a traceback and exit 1 before the fix


def _refused(done: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a refused command (exit 2, no traceback)."""
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: "), done.stderr[-3000:]
    assert len(done.stderr.splitlines()) == 1, done.stderr
    return done.stderr


def _bins(folder: Path, extra: dict[str, str]) -> Path:
    """``folder/images/{1,2,3}.jpg`` and ``folder/metadata/{1,3}.json`` (label cat) plus ``extra`` metadata texts."""
    from tests import imagefactory as f

    (folder / "metadata").mkdir(parents=True)
    for stem in ("1", "2", "3"):
        f.write_rgb(folder / "images" / f"{stem}.jpg", size=(8, 8), seed=int(stem))
    for stem, text in {"1": '{"label": "cat"}', "3": '{"label": "cat"}', **extra}.items():
        (folder / "metadata" / f"{stem}.json").write_text(text)
    return folder


def test_scan_lists_a_metadata_file_linked_outside_and_shows_nothing_of_it(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, ws: Path
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # beside tmp_path (the data root), not inside it
    (elsewhere / "creds.json").write_text(json.dumps({"label": SECRETS[0], "password": SECRETS[1]}))
    bins = _bins(tmp_path / "bins", {})
    (bins / "metadata" / "2.json").symlink_to(elsewhere / "creds.json")
    done = _ok(core(ws, "scan", str(bins), "--label-key", "label"))
    summary = json.loads(done.stdout)
    assert summary["classes"] == {"cat": 2}
    assert [u["path"] for u in summary["unreadable"]] == ["images/2.jpg"]
    assert "outside the folders this studio may read" in summary["unreadable"][0]["reason"]
    assert not any(s in done.stdout + done.stderr for s in (*SECRETS, str(elsewhere)))
    # Without a key, the keys offered come from the files inside the allowed folders only.
    assert "password" not in _refused(core(ws, "scan", str(bins), "--metadata", str(bins / "metadata")))


def test_scan_lists_a_metadata_file_nested_100000_deep_and_uses_the_others(tmp_path: Path, ws: Path) -> None:
    bins = _bins(tmp_path / "bins", {"2": DEEP})
    summary = json.loads(_ok(core(ws, "scan", str(bins), "--label-key", "label")).stdout)
    assert summary["classes"] == {"cat": 2}
    assert summary["unreadable"] == [{"path": "images/2.jpg", "reason": "2.json: nested deeper than 64 levels"}]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (DEEP.encode(), "nested deeper than 64 levels"),
        (b"\x89PNG\r\n\x1a\n\0\0", "not valid JSON"),
        (b'{"lr": [' + b"0.1, " * 300_000 + b"0.2]}", "too large"),
    ],  # fmt: skip
    ids=["deep", "binary", "large"],
)
def test_search_refuses_a_hostile_space_file_in_one_line(tmp_path: Path, ws: Path, content: bytes, words: str) -> None:
    from tests import imagefactory as f

    for label in ("a", "b"):
        f.write_rgb(tmp_path / "pets" / label / "0.png", size=(8, 8))
    (tmp_path / "space.json").write_bytes(content)
    stderr = _refused(core(ws, "search", str(tmp_path / "pets"), "--space", str(tmp_path / "space.json")))
    assert f"the search space is {words}" in stderr, stderr
