"""Tests for core.scan: real images decoded, the on-disk cache, and worker processes for large folders."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from PIL import Image

from core.common.errors import DatasetError
from core.common.workspace import Workspace
from core.datasets.scan import WINDOW, ScanResult, map_chunks, require_labels, scan_dataset
from core.datasets.sources import resolve_dataset
from tests import imagefactory as f

CONTRACT_KEYS = {"n_images", "n_classes", "classes", "splits", "unreadable"}


def scan_path(ws: Workspace, path: Path, **options) -> ScanResult:
    return scan_dataset(resolve_dataset(str(path), ws, **options), ws.cache)


def unreadable(result: ScanResult) -> dict[str, str]:
    return dict(zip(result.unreadable["path"], result.unreadable["reason"], strict=True))


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


# --- counts on every layout --------------------------------------------------------------------------------


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_counts_on_all_three_formats_and_a_zip_of_each(
    tmp_path: Path, ws: Workspace, class_folder: Path, whale_csv, bins, as_zip: bool
) -> None:
    datasets = [
        (class_folder, {}, {"bird": 4, "cat": 4, "dog": 4}, set()),
        (whale_csv.csv if not as_zip else whale_csv.csv.parent, {}, whale_csv.classes, set()),
        (bins.root, {"label_key": "EXPECTED_QUANTITY"}, bins.classes, bins.bad),
    ]
    for path, options, classes, bad in datasets:
        if as_zip:
            folder = path if path.is_dir() else path.parent
            path = f.write_zip(tmp_path / "zips" / f"{folder.name}.zip", f.folder_members(folder))
        summary = scan_path(ws, path, **options).summary()
        assert summary["classes"] == classes, path
        assert summary["n_images"] == sum(classes.values())
        assert summary["n_classes"] == len(classes)
        assert {Path(u["path"]).name for u in summary["unreadable"]} == {Path(b).name for b in bad}


def test_summary_is_the_scan_json_object_of_the_contract(class_folder: Path, ws: Workspace) -> None:
    summary = scan_path(ws, class_folder).summary()

    assert CONTRACT_KEYS <= set(summary)
    assert json.loads(json.dumps(summary)) == summary  # plain JSON types only
    assert summary["splits"] == {"unsplit": 12}
    assert list(summary["classes"]) == ["bird", "cat", "dog"]


def test_splits_are_counted_and_labels_sorted_naturally(tmp_path: Path, ws: Workspace) -> None:
    root = tmp_path / "digits"
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        for label in ("2", "10"):
            for i in range(n):
                f.write_gray(root / split / label / f"{i}.png", size=(8, 8), seed=i)
    result = scan_path(ws, root)

    assert result.splits == {"train": 6, "val": 4, "test": 2}
    assert list(result.classes) == ["2", "10"]


def test_an_empty_folder_scans_to_nothing_without_error(tmp_path: Path, ws: Workspace) -> None:
    (tmp_path / "empty").mkdir()
    summary = scan_path(ws, tmp_path / "empty").summary()
    assert (summary["n_images"], summary["classes"], summary["unreadable"]) == (0, {}, [])


# --- broken and odd files --------------------------------------------------------------------------------


def test_odd_folder_counts_every_good_image_and_lists_every_bad_file(odd_folder, ws: Workspace) -> None:
    result = scan_path(ws, odd_folder.root)

    assert result.classes == odd_folder.classes
    assert len(result.manifest) == odd_folder.n_good
    reasons = unreadable(result)
    assert set(reasons) == odd_folder.bad
    assert all(reason.strip() for reason in reasons.values())


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("broken/empty.jpg", "empty"),
        ("broken/text.jpg", "not an image"),
        ("broken/truncated.jpg", "truncated"),
        ("broken/truncated.png", "truncated"),
        ("broken/bomb.png", "decompression bomb"),
        ("broken/icon.png", "ICO not allowed"),
        ("broken/link.jpg", "outside the dataset"),
        ("broken/dangling.jpg", "broken link"),
        ("broken/loop.jpg", "broken link"),
        ("elsewhere", "not followed"),
    ],
)
def test_each_bad_file_has_a_reason_that_says_what_is_wrong(odd_folder, ws: Workspace, path: str, words: str) -> None:
    assert words in unreadable(scan_path(ws, odd_folder.root))[path]


def test_odd_but_good_images_keep_their_own_facts(odd_folder, ws: Workspace) -> None:
    rows = scan_path(ws, odd_folder.root).manifest.set_index("path")

    assert rows.loc["odd/cmyk.jpg", "mode"] == "CMYK"
    assert rows.loc["odd/sixteen.png", "mode"] == "I;16"
    assert rows.loc["odd/palette.png", "mode"] == "P"
    assert rows.loc["odd/animated.gif", "frames"] == 3
    assert (rows.loc["odd/rotated.jpg", "width"], rows.loc["odd/rotated.jpg", "height"]) == (6, 12)  # upright
    assert rows.loc["odd/UPPER.JPG", "format"] == "JPEG"
    assert "odd/café crème.png" in rows.index and "odd/ñandú über.jpeg" in rows.index
    assert (rows["bytes"] > 0).all()


def test_a_symlink_to_an_image_inside_the_dataset_is_followed(class_folder: Path, ws: Workspace) -> None:
    (class_folder / "cat" / "alias.png").symlink_to(class_folder / "dog" / "0.png")
    result = scan_path(ws, class_folder)
    assert result.classes["cat"] == 5 and result.unreadable.empty


def test_a_csv_cannot_reach_files_outside_the_allowed_folders(tmp_path: Path, ws: Workspace) -> None:
    ws = Workspace(ws.root, (Path(os.path.realpath(tmp_path / "data")),))  # tmp_path/secret is not allowed
    images = tmp_path / "data" / "images"
    f.write_rgb(images / "ok.png", size=(8, 8))
    f.write_rgb(tmp_path / "secret" / "s.png", size=(8, 8))
    (images / "linked").symlink_to(tmp_path / "secret", target_is_directory=True)
    csv = tmp_path / "data" / "labels.csv"
    csv.write_text("image,label\nok.png,a\n../../secret/s.png,b\nlinked/s.png,b\n")

    result = scan_path(ws, csv, images=images)
    assert list(result.manifest["path"]) == ["ok.png"]
    assert set(unreadable(result)) == {"../../secret/s.png", "linked/s.png"}
    assert all("outside the dataset" in reason for reason in unreadable(result).values())


# --- the cache -------------------------------------------------------------------------------------------


def test_a_second_scan_opens_no_file_and_gives_the_same_manifest(odd_folder, ws: Workspace) -> None:
    first = scan_path(ws, odd_folder.root)
    second = scan_path(ws, odd_folder.root)

    assert first.n_opened == odd_folder.n_good + 6  # 6 broken files; the 3 links and the linked folder: not opened
    assert second.n_opened == 0
    assert second.manifest.equals(first.manifest)
    assert second.unreadable.equals(first.unreadable)
    assert list(ws.cache.joinpath("manifests").glob("*.parquet"))


def test_touching_one_file_reopens_only_that_file(class_folder: Path, ws: Workspace) -> None:
    scan_path(ws, class_folder)
    bump_mtime(class_folder / "dog" / "2.png")
    assert scan_path(ws, class_folder).n_opened == 1
    assert scan_path(ws, class_folder).n_opened == 0


def test_replacing_one_file_reopens_it_and_records_its_new_facts(class_folder: Path, ws: Workspace) -> None:
    scan_path(ws, class_folder)
    f.write_rgb(class_folder / "cat" / "1.png", size=(20, 10))
    result = scan_path(ws, class_folder)

    assert result.n_opened == 1
    row = result.manifest.set_index("path").loc["cat/1.png"]
    assert (row["width"], row["height"]) == (20, 10)


def test_a_good_file_turned_bad_is_reopened_and_listed(class_folder: Path, ws: Workspace) -> None:
    scan_path(ws, class_folder)
    f.write_truncated_png(class_folder / "bird" / "0.png")
    result = scan_path(ws, class_folder)
    assert result.classes["bird"] == 3 and "truncated" in unreadable(result)["bird/0.png"]


def test_deleting_or_adding_a_file_changes_the_counts(class_folder: Path, ws: Workspace) -> None:
    scan_path(ws, class_folder)
    (class_folder / "cat" / "3.png").unlink()
    after_delete = scan_path(ws, class_folder)
    f.write_rgb(class_folder / "owl" / "0.png", size=(8, 8))
    after_add = scan_path(ws, class_folder)

    assert (after_delete.n_opened, after_delete.classes["cat"]) == (0, 3)
    assert "cat/3.png" not in set(after_delete.manifest["path"])
    assert (after_add.n_opened, after_add.classes["owl"], len(after_add.manifest)) == (1, 1, 12)


def test_a_damaged_cache_file_only_costs_a_rescan(class_folder: Path, ws: Workspace) -> None:
    first = scan_path(ws, class_folder)
    for cache_file in ws.cache.joinpath("manifests").glob("*.parquet"):
        cache_file.write_bytes(b"not parquet at all")
    again = scan_path(ws, class_folder)
    assert again.n_opened == 12 and again.manifest.equals(first.manifest)


def test_each_dataset_has_its_own_cache(class_folder: Path, whale_csv, ws: Workspace) -> None:
    scan_path(ws, class_folder)
    assert scan_path(ws, whale_csv.csv).n_opened == 8
    assert len(list(ws.cache.joinpath("manifests").glob("*.parquet"))) == 2


def test_without_a_cache_dir_every_scan_opens_every_file(class_folder: Path, ws: Workspace) -> None:
    ref = resolve_dataset(str(class_folder), ws)
    assert scan_dataset(ref).n_opened == 12 and scan_dataset(ref).n_opened == 12
    assert not ws.cache.joinpath("manifests").exists()


# --- decoding threads ----------------------------------------------------------------------------------


N_LARGE = 700  # a multiple of 7: every kind of file the same number of times


@pytest.fixture
def large_folder(tmp_path: Path) -> Path:
    """A few hundred files: hard links to a few real images (good and bad), made in milliseconds."""
    sources = tmp_path / "sources"
    originals = [
        f.write_rgb(sources / "rgb.png", size=(8, 8)),
        f.write_cmyk_jpeg(sources / "cmyk.jpg", size=(8, 8)),
        f.write_exif_rotated_jpeg(sources / "rotated.jpg", size=(12, 6)),
        f.write_animated_gif(sources / "anim.gif", size=(8, 8)),
        f.write_16bit_png(sources / "sixteen.png", size=(8, 8)),
        f.write_truncated_jpeg(sources / "truncated.jpg", size=(32, 32)),
        f.write_empty(sources / "empty.png"),
    ]
    root = tmp_path / "large"
    for i in range(N_LARGE):
        original = originals[i % len(originals)]
        target = root / f"class_{i % 3}" / f"{i:04d}{original.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(original, target)
    return root


def _scan_workers() -> int:
    """Decoding workers alive now: "scan" threads, or worker processes forked from this one."""
    threads = sum(t.name.startswith("scan") for t in threading.enumerate())
    children = Path(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children")
    processes = len(children.read_text().split()) if children.exists() else 0
    return threads + processes


@pytest.mark.parametrize("with_other_thread", [False, True], ids=["processes", "threads"])
def test_large_folders_are_decoded_in_parallel_with_the_serial_result(
    large_folder: Path, ws: Workspace, with_other_thread: bool
) -> None:
    """Alone in its process (the command line) the scan forks worker processes; with another thread running
    (a Streamlit server) it uses threads, as forking a threaded process is unsafe."""
    ref = resolve_dataset(str(large_folder), ws)
    children_seen: list[int] = []
    progress: list[tuple[int, int]] = []

    def watch(done: int, total: int) -> None:
        progress.append((done, total))
        children_seen.append(_scan_workers())

    other = threading.Event()
    if with_other_thread:
        threading.Thread(target=other.wait, name="server", daemon=True).start()
    try:
        parallel = scan_dataset(ref, workers=2, progress=watch)
    finally:
        other.set()
    serial_children: list[int] = []
    serial = scan_dataset(ref, workers=1, progress=lambda *_: serial_children.append(_scan_workers()))

    assert max(children_seen) >= 2 and max(serial_children) == 0
    assert progress[-1] == (len(parallel.manifest) + len(parallel.unreadable),) * 2
    assert parallel.manifest.equals(serial.manifest)
    assert parallel.unreadable.equals(serial.unreadable)
    assert len(parallel.unreadable) == 2 * N_LARGE // 7


def test_the_built_in_sample_scans_in_parallel_to_its_known_counts(digits_ws: Workspace, tmp_path: Path) -> None:
    ref = resolve_dataset("sample:digits", digits_ws)
    result = scan_dataset(ref, tmp_path / "cache", workers=2)
    assert (len(result.manifest), len(result.classes), result.n_opened) == (1797, 10, 1797)
    assert result.unreadable.empty


# --- unlabelled images, every file accounted for ---------------------------------------------------------------


def test_a_flat_folder_scans_as_unlabelled_images_and_training_is_refused_plainly(
    tmp_path: Path, ws: Workspace
) -> None:
    flat = tmp_path / "holiday"
    for i in range(4):
        f.write_rgb(flat / f"IMG_{i}.jpg", size=(16, 12), seed=i)
    Image.new("L", (10, 10), 90).save(flat / "scan.pgm")
    Image.new("1", (10, 10), 1).save(flat / "mask.pbm")
    (flat / "camera.svg").write_bytes((flat / "IMG_0.jpg").read_bytes())  # a JPEG behind a wrong extension
    (flat / "notes.txt").write_text("not a picture")
    result = scan_path(ws, flat)
    summary = result.summary()
    assert (summary["n_images"], summary["n_classes"], summary["classes"], summary["n_unlabelled"]) == (7, 0, {}, 7)
    assert summary["splits"] == {"unsplit": 7}
    assert unreadable(result) == {"notes.txt": "not an image (a .txt file)"}
    assert set(result.manifest["format"]) == {"JPEG", "PPM"}
    with pytest.raises(DatasetError, match="this dataset has no labels: its 7 images lie directly in holiday"):
        require_labels(result)
    labelled = ScanResult(result.ref, result.manifest.assign(label="a"), result.unreadable, 0.0, 0)
    require_labels(labelled)  # images with a label: accepted


def test_an_inspector_opens_each_file_once_and_its_extras_are_kept(class_folder: Path, ws: Workspace) -> None:
    calls: list[str] = []

    def inspector(paths):
        calls.extend(paths)
        return [{"width": 8, "height": 8, "mode": "RGB", "format": "PNG", "frames": 1, "bytes": 1, "error": "",
                 "seen": True} for _ in paths]  # fmt: skip

    ref = resolve_dataset(str(class_folder), ws)
    first = scan_dataset(ref, ws.cache, inspector=inspector)
    assert len(calls) == 12 and first.extras["seen"].all() and len(first.extras) == 12
    assert sorted(first.extras["path"]) == sorted(first.manifest["path"])
    again = scan_dataset(ref, ws.cache, inspector=inspector)
    assert len(calls) == 12 and again.extras.empty  # cached: nothing opened, nothing extra


def test_map_chunks_keeps_the_order_and_takes_chunks_only_as_workers_need_them() -> None:
    drawn, done = [0], [0]
    ahead: list[int] = []

    def chunks():
        for k in range(100):
            drawn[0] += 1
            yield [k]

    def run(chunk):  # a closure: not picklable, so threads (the server's way)
        ahead.append(drawn[0] - done[0])
        return chunk

    results = []
    for part in map_chunks(run, chunks(), 2, "test"):
        results += part
        done[0] += 1
    assert results == list(range(100))
    assert max(ahead) <= WINDOW * 2 + 1  # never the whole iterable at once (Executor.map would take all 100)
