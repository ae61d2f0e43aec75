"""Tests for the command line (core.__main__) against its contract (core/cli/main.py), on real datasets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli.main import main
from core.common.workspace import Workspace
from core.store.runs import RunStore
from tests import imagefactory as f
from tests.support import ROOT

SCAN_KEYS = {"n_images", "n_classes", "classes", "splits", "unreadable"}
RUN_KEYS = {"run_id", "status", "arch", "dataset", "best_val_acc", "wall_s"}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``python -m core ARGV``, run in this process."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse leaves through SystemExit(2), exactly as `python -m core` does
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def paths(tmp_path: Path, class_folder: Path, bins) -> dict[str, str]:
    """Placeholders for the argument tables below."""
    (tmp_path / "bad.csv").write_text("a,b,c\n1.jpg,x,y\n")
    (tmp_path / "one.csv").write_text("image\n1.jpg\n")
    (tmp_path / "fake.zip").write_text("I am not a zip")
    return {"tmp": str(tmp_path), "classes": str(class_folder), "bins": str(bins.root), "ws": str(tmp_path / "ws")}


# --- bad input: one line on stderr, exit 2, never a traceback ---------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["scan", "{tmp}/nope", "--json"], "dataset not found", id="missing-dataset"),
        pytest.param(["scan", "{tmp}/bad.csv", "--json"], "cannot tell which columns", id="csv-without-columns"),
        pytest.param(["scan", "{classes}", "--labels", "{tmp}/one.csv"], "two columns", id="one-column-labels"),
        pytest.param(
            ["scan", "{bins}", "--metadata", "{bins}/metadata"],
            "keys found in metadata: .*EXPECTED_QUANTITY",
            id="metadata-without-label-key",
        ),
        pytest.param(
            ["scan", "{classes}", "--metadata", "{tmp}/nope", "--label-key", "k"],
            "metadata folder not found",
            id="missing-metadata",
        ),
        pytest.param(["scan", "{classes}", "--label-key", "k"], "--metadata", id="label-key-without-json"),
        pytest.param(
            ["scan", "sample:nope", "--json"], "unknown sample 'nope'; available: digits", id="unknown-sample"
        ),
        pytest.param(["scan", "{tmp}/fake.zip"], "not a ZIP", id="not-a-zip"),
        pytest.param(["scan", "{classes}", "--workers", "many"], "invalid int value", id="bad-option-value"),
        pytest.param(["scan", "{classes}", "--frobnicate"], "unrecognized arguments", id="unknown-option"),
        pytest.param(["scan"], "DATASET", id="no-dataset"),
        pytest.param(["frobnicate"], "invalid choice", id="unknown-command"),
        pytest.param([], "command \\(see: python -m core --help\\)", id="no-command"),
        pytest.param(
            ["runs", "--status", "done"], "invalid choice: 'done' \\(choose from 'queued'", id="unknown-status"
        ),
        pytest.param(["scan", "{classes}", "--workspace", "{tmp}/bad.csv"], "bad.csv", id="workspace-is-a-file"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    paths: dict[str, str], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    argv = [arg.format(**paths) for arg in argv]
    if "--workspace" not in argv:
        argv += ["--workspace", paths["ws"]] if argv and argv[0] in ("scan", "runs") else []
    code, out, err = run_cli(argv, capsys)

    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1
    assert re.search(message, err)
    assert "Traceback" not in err


# --- scan -------------------------------------------------------------------------------------------------


def test_scan_json_prints_the_contract_object(class_folder: Path, ws: Workspace, capsys) -> None:
    code, out, err = run_cli(["scan", str(class_folder), "--json", "--workspace", str(ws.root)], capsys)

    assert (code, err) == (0, "")
    result = json.loads(out)
    assert SCAN_KEYS <= set(result)
    assert result["classes"] == {"bird": 4, "cat": 4, "dog": 4}
    assert (result["n_images"], result["n_classes"], result["splits"], result["unreadable"]) == (
        12,
        3,
        {"unsplit": 12},
        [],
    )


def test_scan_with_labels_and_images_reads_the_whale_csv(whale_csv, ws: Workspace, capsys) -> None:
    argv = ["scan", str(whale_csv.csv.parent), "--labels", str(whale_csv.csv), "--images", str(whale_csv.images)]
    code, out, _ = run_cli([*argv, "--json", "--workspace", str(ws.root)], capsys)
    assert code == 0 and json.loads(out)["classes"] == whale_csv.classes


@pytest.mark.parametrize("images_option", [False, True], ids=["dataset-is-the-image-folder", "images-option"])
def test_scan_with_metadata_and_label_key_reads_the_bins(bins, ws: Workspace, capsys, images_option: bool) -> None:
    dataset = bins.root if images_option else bins.images
    argv = ["scan", str(dataset), "--metadata", str(bins.metadata), "--label-key", "EXPECTED_QUANTITY"]
    argv += ["--images", str(bins.images)] if images_option else []
    code, out, _ = run_cli([*argv, "--json", "--workspace", str(ws.root)], capsys)

    result = json.loads(out)
    assert code == 0 and result["classes"] == bins.classes
    assert sorted(u["path"] for u in result["unreadable"]) == ["106.jpg", "107.jpg", "108.jpg"]
    assert all(u["reason"] for u in result["unreadable"])


def test_scan_of_a_zip_extracts_it_into_the_workspace(whale_csv, ws: Workspace, tmp_path: Path, capsys) -> None:
    archive = f.write_zip(tmp_path / "whales.zip", f.folder_members(whale_csv.csv.parent))
    code, out, _ = run_cli(["scan", str(archive), "--json", "--workspace", str(ws.root)], capsys)

    assert code == 0 and json.loads(out)["classes"] == whale_csv.classes
    assert len(list(ws.datasets.iterdir())) == 1


def test_scan_of_the_built_in_sample(digits_ws: Workspace, capsys) -> None:
    code, out, _ = run_cli(["scan", "sample:digits", "--json", "--workspace", str(digits_ws.root)], capsys)
    result = json.loads(out)
    assert code == 0
    assert (result["n_images"], result["n_classes"], result["splits"]) == (
        1797,
        10,
        {"train": 1257, "val": 270, "test": 270},
    )


def test_scan_without_json_prints_a_readable_report(odd_folder, ws: Workspace, capsys) -> None:
    code, out, _ = run_cli(["scan", str(odd_folder.root), "--workspace", str(ws.root)], capsys)

    assert code == 0
    first_line = out.splitlines()[0]
    assert first_line.startswith(f"{odd_folder.n_good} images, 2 classes in ") and first_line.endswith("(folder)")
    assert f"unreadable: {len(odd_folder.bad)}" in out
    assert "broken/bomb.png: too large" in out


def test_scan_without_workspace_uses_the_default_one(class_folder: Path, default_workspace: Path, capsys) -> None:
    code, _, _ = run_cli(["scan", str(class_folder), "--json"], capsys)
    assert code == 0 and list((default_workspace / "cache" / "manifests").glob("*.parquet"))


def test_python_m_core_scan_of_the_odd_folder_exits_0_with_json_and_no_traceback(odd_folder, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "core", "scan", str(odd_folder.root), "--json", "--workspace", str(tmp_path / "ws")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["n_images"] == odd_folder.n_good
    assert {u["path"] for u in result["unreadable"]} == odd_folder.bad
    assert not (tmp_path / "workspace").exists()


# --- runs -------------------------------------------------------------------------------------------------


def test_runs_json_is_an_empty_list_in_a_new_workspace(ws: Workspace, capsys) -> None:
    assert run_cli(["runs", "--json", "--workspace", str(ws.root)], capsys)[:2] == (0, "[]\n")
    assert run_cli(["runs", "--workspace", str(ws.root)], capsys)[:2] == (0, "no runs yet\n")


def test_runs_text_names_a_search_as_such_not_as_a_run_without_a_network(ws: Workspace, capsys) -> None:
    store = RunStore(ws.runs_db)
    search = store.create_run(dataset="sample:digits", kind="search")
    trial = store.create_run(dataset="sample:digits", arch="lenet", parent_id=search)
    store.close()
    code, out, _ = run_cli(["runs", "--workspace", str(ws.root)], capsys)
    lines = {int(line.split()[0]): line for line in out.splitlines()[1:]}
    assert code == 0 and "(search)" in lines[search] and "lenet" in lines[trial]


def test_runs_json_lists_stored_runs_newest_first_and_filters_by_status(ws: Workspace, capsys) -> None:
    store = RunStore(ws.runs_db)
    done = store.create_run(dataset="sample:digits", arch="resnet18")
    store.start_run(done)
    store.log_metrics(done, [("val_acc", 1, 0.5), ("val_acc", 2, 0.75)])
    store.finish_run(done, "completed")
    queued = store.create_run(dataset="sample:digits", arch="mobilenet_v3_small")
    store.close()

    code, out, _ = run_cli(["runs", "--json", "--workspace", str(ws.root)], capsys)
    rows = json.loads(out)
    assert code == 0 and [r["run_id"] for r in rows] == [queued, done]
    assert all(RUN_KEYS <= set(r) for r in rows)
    assert rows[1]["status"] == "completed" and rows[1]["best_val_acc"] == 0.75 and rows[1]["wall_s"] >= 0

    code, out, _ = run_cli(["runs", "--status", "completed", "--json", "--workspace", str(ws.root)], capsys)
    assert [r["run_id"] for r in json.loads(out)] == [done]
    code, out, _ = run_cli(["runs", "--workspace", str(ws.root)], capsys)
    assert "resnet18" in out and "0.7500" in out


# --- dedup ----------------------------------------------------------------------------------------------


@pytest.fixture
def whales_with_copies(tmp_path: Path) -> Path:
    """A whale-style train.csv: a byte copy filed as new_whale next to its real id, and a plain duplicate."""
    images = tmp_path / "wh" / "train"
    rows = []
    for i in range(6):
        f.write_photo(images / f"w{i}.jpg", seed=300 + i)
        rows.append((f"w{i}.jpg", f"w_{i}"))
    (images / "copy_of_w0.jpg").write_bytes((images / "w0.jpg").read_bytes())
    rows.append(("copy_of_w0.jpg", "new_whale"))
    (images / "again_w1.jpg").write_bytes((images / "w1.jpg").read_bytes())
    rows.append(("again_w1.jpg", "w_1"))
    csv = tmp_path / "wh" / "train.csv"
    csv.write_text("Image,Id\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return csv


def test_dedup_json_follows_the_contract(whales_with_copies: Path, tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(["dedup", str(whales_with_copies), "--workspace", str(tmp_path / "ws"), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["n_groups"] == 2 and result["n_redundant"] == 2
    by_files = {tuple(sorted(g["files"])): g for g in result["groups"]}
    conflict = by_files[("copy_of_w0.jpg", "w0.jpg")]
    assert conflict["kind"] == "exact" and conflict["conflict"] and sorted(conflict["labels"]) == ["new_whale", "w_0"]
    assert not by_files[("again_w1.jpg", "w1.jpg")]["conflict"]


def test_dedup_apply_writes_a_dataset_every_command_accepts(whales_with_copies: Path, tmp_path: Path, capsys) -> None:
    ws = str(tmp_path / "ws")
    argv = ["dedup", str(whales_with_copies), "--apply", "keep-one,prefer-known,drop-conflicts",
            "--unknown-label", "new_whale", "--workspace", ws, "--json"]  # fmt: skip
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    cleaned = json.loads(out)["cleaned"]
    assert cleaned["n_images"] == 6 and len(cleaned["removed"]) == 2
    code, out, err = run_cli(["scan", cleaned["dataset"], "--workspace", ws, "--json"], capsys)
    assert code == 0, err
    scanned = json.loads(out)
    assert scanned["n_images"] == 6
    assert scanned["classes"]["w_0"] == 1 and "new_whale" not in scanned["classes"]  # the whale rule kept the id
    assert (whales_with_copies.parent / "train" / "copy_of_w0.jpg").is_file()  # sources untouched


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--apply", "keep-two"], "unknown cleaning policy keep-two"), (["--threshold", "99"], "threshold")],
)
def test_dedup_bad_options_are_one_line(extra, message, whales_with_copies: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["dedup", str(whales_with_copies), *extra, "--workspace", str(tmp_path / "ws")], capsys)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv", [["--help"], ["runs", "--json"], ["runs"]])
def test_help_and_runs_load_neither_torch_nor_pandas(argv: list[str], tmp_path: Path) -> None:
    """What makes them answer in a fraction of a second (bench/bench_cli.py measures it): only the command being
    run gets its full parser, and nothing heavy is imported for these two."""
    code = (
        "import sys, contextlib, io\n"
        "from core.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv + ['--workspace', str(tmp_path / 'ws')] if argv[0] == 'runs' else argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'pandas', 'sklearn', 'PIL') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_every_command_keeps_its_full_options_when_it_runs(capsys) -> None:
    for command in ("scan", "dedup", "train", "predict", "serve", "evaluate", "sweep", "scaling", "runs"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0 and "--workspace" in capsys.readouterr().out, command
