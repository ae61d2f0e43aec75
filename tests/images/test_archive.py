"""Tests for core.archive: real ZIPs, honest and hostile, built by tests/imagefactory.py."""

from __future__ import annotations

import io
import json
import random
import resource
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core.common.errors import ArchiveError
from core.images import archive
from core.images.archive import ExtractResult, ZipLimits, extract_zip
from tests import imagefactory as factory
from tests.support import ROOT


@pytest.fixture(scope="module")
def jpg() -> bytes:
    """The bytes of one small real JPEG, reused as the content of many members."""
    buffer = io.BytesIO()
    factory.Image.new("RGB", (8, 8), factory.RED).save(buffer, "JPEG")
    return buffer.getvalue()


def files_under(folder: Path) -> set[str]:
    """Every file and folder below ``folder``, as relative POSIX paths."""
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*")}


def refusal(source, dest: Path, **kwargs) -> str:
    """Extract, expect a refusal, check nothing was left beside ``dest``, and return the message."""
    before = set(dest.parent.iterdir()) if dest.parent.exists() else set()
    with pytest.raises(ArchiveError) as caught:
        extract_zip(source, dest, **kwargs)
    assert not dest.exists()
    left = set(dest.parent.iterdir()) if dest.parent.exists() else set()
    assert left == before, f"left behind: {left - before}"
    return str(caught.value)


# --- honest archives -----------------------------------------------------------------------------


def test_folder_per_class_zip_wrapped_in_one_folder_gives_that_folder_as_root(tmp_path: Path, jpg: bytes) -> None:
    members = {"mydata/cat/1.jpg": jpg, "mydata/cat/2.JPG": jpg, "mydata/dog/1.jpg": jpg}
    result = extract_zip(factory.zip_bytes(members), tmp_path / "ds")
    assert result == ExtractResult(tmp_path / "ds" / "mydata", 3, 3 * len(jpg), [])
    assert (result.root / "dog" / "1.jpg").read_bytes() == jpg
    assert files_under(result.root) == {"cat", "cat/1.jpg", "cat/2.JPG", "dog", "dog/1.jpg"}


def test_zip_with_several_top_level_folders_has_dest_as_root(tmp_path: Path, jpg: bytes) -> None:
    result = extract_zip(factory.zip_bytes({"cat/1.jpg": jpg, "dog/1.jpg": jpg}), tmp_path / "ds")
    assert result.root == tmp_path / "ds"
    assert files_under(result.root) == {"cat", "cat/1.jpg", "dog", "dog/1.jpg"}


def test_single_top_folder_holding_only_images_is_a_class_not_a_wrapper(tmp_path: Path, jpg: bytes) -> None:
    result = extract_zip(factory.zip_bytes({"cat/1.jpg": jpg, "cat/2.jpg": jpg}), tmp_path / "ds")
    assert result.root == tmp_path / "ds"


def test_csv_and_json_label_files_are_extracted_beside_the_images(tmp_path: Path, jpg: bytes) -> None:
    members = {
        "whales/train.csv": b"Image,Id\n1.jpg,w_1\n",
        "whales/train/1.jpg": jpg,
        "whales/meta/1.json": b'{"EXPECTED_QUANTITY": 3}',
        "whales/README.txt": b"hello",
        "whales/table.TSV": b"a\tb\n",
    }
    result = extract_zip(factory.zip_bytes(members), tmp_path / "ds")
    assert result.root == tmp_path / "ds" / "whales"
    assert (result.n_files, result.skipped) == (5, [])
    assert (result.root / "train.csv").read_text() == "Image,Id\n1.jpg,w_1\n"


def test_extract_zip_reads_a_path_bytes_and_a_file_object_alike(tmp_path: Path, jpg: bytes) -> None:
    zip_path = factory.write_zip(tmp_path / "up.zip", {"a/1.jpg": jpg, "b/1.jpg": jpg})
    sources = [zip_path, str(zip_path), zip_path.read_bytes(), io.BytesIO(zip_path.read_bytes())]
    for number, source in enumerate(sources):
        assert extract_zip(source, tmp_path / f"ds{number}").n_files == 2


class _ReadOnlyStream:
    """A stream that can only be read forwards, like a socket or a pipe."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)


def test_extract_zip_reads_a_stream_that_cannot_seek(tmp_path: Path, jpg: bytes) -> None:
    data = factory.zip_bytes({"a/1.jpg": jpg, "b/1.jpg": jpg})
    assert extract_zip(_ReadOnlyStream(data), tmp_path / "ds").n_files == 2


def test_dest_parent_is_created_and_the_dataset_folder_is_not_private(tmp_path: Path, jpg: bytes) -> None:
    result = extract_zip(factory.zip_bytes({"a/1.jpg": jpg, "b/1.jpg": jpg}), tmp_path / "new" / "deeper" / "ds")
    assert result.root.is_dir()
    assert result.root.stat().st_mode & 0o755 == 0o755


def test_empty_zip_gives_an_empty_dataset_folder(tmp_path: Path) -> None:
    result = extract_zip(factory.zip_bytes({}), tmp_path / "ds")
    assert result == ExtractResult(tmp_path / "ds", 0, 0, [])


def test_directory_entries_are_created(tmp_path: Path, jpg: bytes) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.mkdir("cat")
        zf.mkdir("dog")
        zf.writestr("dog/1.jpg", jpg)
    result = extract_zip(buffer.getvalue(), tmp_path / "ds")
    assert files_under(result.root) == {"cat", "dog", "dog/1.jpg"}


# --- members that are skipped --------------------------------------------------------------------


def test_unsafe_names_are_skipped_and_nothing_is_written_outside_dest(tmp_path: Path, jpg: bytes) -> None:
    unsafe = ["../evil.jpg", "/abs/evil.jpg", "a/../../evil2.jpg", "C:/evil.jpg", "c:evil.jpg", "back\\slash.jpg",
              "a" * 1100 + ".jpg", "./", "."]  # fmt: skip
    data = factory.zip_bytes({name: jpg for name in unsafe} | {"ok/1.jpg": jpg, "fine/2.jpg": jpg})
    home = tmp_path / "home"
    result = extract_zip(data, home / "ds")
    assert sorted(result.skipped) == sorted((name, "unsafe name") for name in unsafe)
    assert files_under(tmp_path) == {
        "home",
        "home/ds",
        "home/ds/ok",
        "home/ds/ok/1.jpg",
        "home/ds/fine",
        "home/ds/fine/2.jpg",
    }


def test_name_with_a_nul_byte_is_skipped_as_unsafe(tmp_path: Path, jpg: bytes) -> None:
    # zipfile cuts names at NUL, so "x.csv\0.jpg" would land as "x.csv": a type trick.
    data = factory.zip_bytes({"a/x.csvZ.jpg": jpg, "a/1.jpg": jpg, "b/1.jpg": jpg}).replace(b"x.csvZ", b"x.csv\0")
    result = extract_zip(data, tmp_path / "ds")
    assert result.skipped == [("a/x.csv\\0.jpg", "unsafe name")]
    assert result.n_files == 2


def test_symlink_member_is_skipped_and_no_link_is_created(tmp_path: Path, jpg: bytes) -> None:
    data = factory.zip_bytes({"cat/1.jpg": jpg, "dog/1.jpg": jpg}, symlinks={"cat/2.jpg": "/etc/passwd"})
    result = extract_zip(data, tmp_path / "ds")
    assert result.skipped == [("cat/2.jpg", "symlink")]
    assert not (result.root / "cat" / "2.jpg").exists() and not (result.root / "cat" / "2.jpg").is_symlink()


def test_members_that_are_neither_images_nor_label_files_are_skipped(tmp_path: Path, jpg: bytes) -> None:
    members = {"cat/1.jpg": jpg, "cat/run.exe": b"MZ", "dog/1.jpg": jpg, "dog/doc.pdf": b"%PDF", "Makefile": b"x"}
    result = extract_zip(factory.zip_bytes(members), tmp_path / "ds")
    reason = "not an image or label file"
    assert result.skipped == [("cat/run.exe", reason), ("dog/doc.pdf", reason), ("Makefile", reason)]
    assert files_under(result.root) == {"cat", "cat/1.jpg", "dog", "dog/1.jpg"}


def test_macos_junk_is_dropped_without_being_listed(tmp_path: Path, jpg: bytes) -> None:
    members = {"__MACOSX/cat/._1.jpg": b"junk", "cat/1.jpg": jpg, "cat/._1.jpg": b"junk", "cat/.DS_Store": b"junk",
               "dog/1.jpg": jpg, ".DS_Store": b"junk"}  # fmt: skip
    result = extract_zip(factory.zip_bytes(members), tmp_path / "ds")
    assert (result.n_files, result.skipped) == (2, [])
    assert files_under(result.root) == {"cat", "cat/1.jpg", "dog", "dog/1.jpg"}


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")
def test_duplicate_name_keeps_the_first_member_and_lists_the_second(tmp_path: Path, jpg: bytes) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("cat/1.jpg", jpg)
        zf.writestr("cat/1.jpg", b"second")
        zf.writestr("dog/1.jpg", jpg)
    result = extract_zip(buffer.getvalue(), tmp_path / "ds")
    assert result.skipped == [("cat/1.jpg", "name clashes with another member")]
    assert (result.root / "cat" / "1.jpg").read_bytes() == jpg


def test_file_and_folder_with_the_same_name_do_not_stop_extraction(tmp_path: Path, jpg: bytes) -> None:
    data = factory.zip_bytes({"cat.jpg": jpg, "cat.jpg/1.jpg": jpg, "dog/1.jpg": jpg})
    result = extract_zip(data, tmp_path / "ds")
    assert result.skipped == [("cat.jpg/1.jpg", "name clashes with another member")]
    assert result.n_files == 2


def test_member_with_unsupported_compression_is_skipped(tmp_path: Path, jpg: bytes) -> None:
    data = bytearray(factory.zip_bytes({"cat/1.jpg": jpg, "dog/1.jpg": jpg}))
    central = factory.central_entries(bytes(data))[0]
    struct.pack_into("<H", data, central + 10, 9)  # method 9 = Deflate64, written by Windows Explorer
    struct.pack_into("<H", data, 8, 9)
    result = extract_zip(bytes(data), tmp_path / "ds")
    assert [(name, reason.split(" (")[0]) for name, reason in result.skipped] == [
        ("cat/1.jpg", "unsupported compression")
    ]
    assert result.n_files == 1


# --- archives that are refused -------------------------------------------------------------------


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_member_whose_compressed_data_is_damaged_is_refused(tmp_path: Path, jpg: bytes, method: int) -> None:
    data = bytearray(factory.zip_bytes({"a/1.jpg": jpg * 4, "b/1.jpg": jpg}, compression=method))
    data_start = 30 + len("a/1.jpg")  # first member: local header at 0, no extra field
    for offset in range(data_start + 20, data_start + 60, 7):
        data[offset] ^= 0xFF
    assert refusal(bytes(data), tmp_path / "d" / "ds").startswith("corrupt ZIP member 'a/1.jpg'")


def test_zip_needing_a_future_zip_version_is_refused(tmp_path: Path, jpg: bytes) -> None:
    data = bytearray(factory.zip_bytes({"a/1.jpg": jpg}))
    struct.pack_into("<H", data, factory.central_entries(bytes(data))[0] + 6, 153)  # "version needed": 15.3
    assert refusal(bytes(data), tmp_path / "d" / "ds").startswith("unsupported ZIP")


def test_ratio_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = factory.zip_bomb_bytes("bomb.png", size=16 * 2**20)
    assert len(data) < 40_000
    message = refusal(data, tmp_path / "datasets" / "ds")
    assert message.startswith("possible zip bomb: 'bomb.png' expands") and "(limit 250x)" in message


def test_small_files_that_compress_well_do_not_trip_the_ratio_check(tmp_path: Path) -> None:
    csv = b"image,label\n" + b"0000000.jpg,cat\n" * 60_000  # ~1 MB, compresses > 250x
    info = zipfile.ZipFile(io.BytesIO(factory.zip_bytes({"labels.csv": csv}))).infolist()[0]
    assert info.file_size / info.compress_size > 250
    assert extract_zip(factory.zip_bytes({"labels.csv": csv}), tmp_path / "ds").n_bytes == len(csv)


def test_many_small_members_that_together_are_a_bomb_are_refused_before_writing(tmp_path: Path) -> None:
    """Each member is 1 MiB of zeros (at the per-member ratio check's threshold); together: 40 MiB from ~40 KB."""
    data = factory.zip_bytes({f"cat/{i}.png": bytes(2**20) for i in range(40)})
    assert len(data) < 60_000
    message = refusal(data, tmp_path / "datasets" / "ds")
    assert message.startswith("possible zip bomb: the archive (") and "40.0 MiB" in message and "limit 250x" in message
    assert not (tmp_path / "datasets").exists() or not any((tmp_path / "datasets").iterdir())


def test_the_streaming_counter_holds_the_whole_archive_to_its_ratio_too(tmp_path: Path) -> None:
    zf = zipfile.ZipFile(io.BytesIO(factory.zip_bytes({"a.png": bytes(2**20)})))
    budget = archive._Budget(archive_bytes=1000, total_bytes=250_000, by_ratio=True)
    tally = archive._Tally()
    with pytest.raises(ArchiveError, match="inflates beyond the size limits"):
        archive._extract_file(zf, zf.infolist()[0], tmp_path / "a.png", ZipLimits(), budget, tally)


def test_an_ordinary_dataset_zip_is_far_below_the_whole_archive_ratio(tmp_path: Path, jpg: bytes) -> None:
    csv = b"image,label\n" + b"".join(f"{i}.jpg,cat\n".encode() for i in range(300))
    data = factory.zip_bytes({"labels.csv": csv, **{f"{i}.jpg": jpg for i in range(300)}})
    assert extract_zip(data, tmp_path / "ok").n_files == 301


def test_headers_that_understate_a_members_size_are_refused(tmp_path: Path) -> None:
    data = factory.understated_size_zip_bytes("big.png", real_size=4 * 2**20, declared=1000)
    assert zipfile.ZipFile(io.BytesIO(data)).infolist()[0].file_size == 1000  # passes every header check
    message = refusal(data, tmp_path / "datasets" / "ds")
    assert message.startswith("corrupt ZIP member 'big.png'")


def test_streaming_counter_stops_a_member_at_the_limit_whatever_its_header_says(tmp_path: Path) -> None:
    # The header checks already refuse an honest oversize member, so the streaming bound is tested directly.
    zf = zipfile.ZipFile(io.BytesIO(factory.zip_bytes({"big.png": bytes(3 * 2**20)})))
    with pytest.raises(ArchiveError, match="inflates beyond the size limits"):
        archive._copy_member(zf, zf.infolist()[0], tmp_path / "out.png", 2**20, 2**30)
    assert (tmp_path / "out.png").stat().st_size <= 2**20


def test_overlapping_entries_are_refused_though_python_311_7_reads_them(tmp_path: Path) -> None:
    payload = bytes(2**16)
    data = factory.overlapping_zip_bytes("a.png", "b.png", payload)
    assert zipfile.ZipFile(io.BytesIO(data)).read("b.png") == payload  # a valid archive for zipfile
    assert refusal(data, tmp_path / "datasets" / "ds") == "possible zip bomb (overlapping entries): 'a.png'"


def test_member_count_over_the_limit_is_refused(tmp_path: Path, jpg: bytes) -> None:
    data = factory.zip_bytes({f"cat/{i}.jpg": jpg for i in range(4)})
    assert refusal(data, tmp_path / "d" / "ds", limits=ZipLimits(max_members=3)) == "too many members: 4 (limit 3)"
    assert extract_zip(data, tmp_path / "ok", limits=ZipLimits(max_members=4)).n_files == 4


def test_member_declared_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    data = factory.zip_bytes({"a/big.png": bytes(3 * 2**20)})
    message = refusal(data, tmp_path / "d" / "ds", limits=ZipLimits(max_member_bytes=2**20, max_ratio=1e9))
    assert message == "member 'a/big.png' too large: 3.0 MiB (limit 1.0 MiB)"


def test_archive_declared_over_the_total_limit_is_refused(tmp_path: Path) -> None:
    data = factory.zip_bytes({"a/1.png": bytes(2**20), "b/1.png": bytes(2**20)})
    message = refusal(data, tmp_path / "d" / "ds", limits=ZipLimits(max_total_bytes=2**20 + 1, max_ratio=1e9))
    assert message == "archive too large: 2.0 MiB uncompressed (limit 1.0 MiB)"


def test_encrypted_member_is_refused(tmp_path: Path) -> None:
    message = refusal(factory.encrypted_flag_zip_bytes("secret.png"), tmp_path / "d" / "ds")
    assert message.startswith("encrypted member 'secret.png'")


@pytest.mark.parametrize("data", [b"", b"hello, I am not a zip", b"PK\x03\x04 truncated"])
def test_bytes_that_are_not_a_zip_are_refused(tmp_path: Path, data: bytes) -> None:
    assert refusal(data, tmp_path / "d" / "ds") == "not a ZIP archive"


def test_an_image_uploaded_as_a_zip_is_refused(tmp_path: Path) -> None:
    png = factory.write_rgb(tmp_path / "up.zip", fmt="PNG")
    assert refusal(png, tmp_path / "d" / "ds") == "not a ZIP archive"


def test_missing_zip_file_is_refused(tmp_path: Path) -> None:
    assert "cannot read ZIP" in refusal(tmp_path / "missing.zip", tmp_path / "d" / "ds")


def test_existing_dest_is_refused_and_left_untouched(tmp_path: Path, jpg: bytes) -> None:
    dest = tmp_path / "ds"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ArchiveError, match="destination already exists"):
        extract_zip(factory.zip_bytes({"cat/1.jpg": jpg}), dest)
    assert files_under(dest) == {"keep.txt"}


def test_failure_midway_leaves_neither_dest_nor_a_temp_folder(tmp_path: Path, jpg: bytes) -> None:
    # Good members first, so files are already written when the lying one is reached.
    members = {f"cat/{i}.jpg": jpg for i in range(3)} | {"zz.png": bytes(4 * 2**20)}
    data = _understate_last_member(factory.zip_bytes(members), declared=1000)
    assert "corrupt ZIP member 'zz.png'" in refusal(data, tmp_path / "datasets" / "ds")
    assert list((tmp_path / "datasets").iterdir()) == []


def _understate_last_member(data: bytes, declared: int) -> bytes:
    """Make the last member's headers claim ``declared`` bytes, keeping its CRC of the real content."""
    patched = bytearray(data)
    central = factory.central_entries(data)[-1]
    local = struct.unpack_from("<L", data, central + 42)[0]
    struct.pack_into("<L", patched, central + 24, declared)
    struct.pack_into("<L", patched, local + 22, declared)
    return bytes(patched)


# --- a disk too small (issue 22): words instead of [Errno 28], nothing left behind --------------------------------
#
# A real full disk needs a small file system: ``unshare`` gives the child its own mount namespace (as an unprivileged
# user where user namespaces are allowed) with a 1 MiB tmpfs, and the extraction runs there; where that is not
# allowed the two tmpfs tests are skipped. ``ulimit -f`` (RLIMIT_FSIZE) needs no privilege: the same code path with
# EFBIG instead of ENOSPC, so the cleanup and the words are checked everywhere.

EXTRACT = """
import json, os, sys
from pathlib import Path
from core.common.errors import ArchiveError
from core.images.archive import extract_zip
target = Path(sys.argv[1])
try:
    extract_zip(Path(sys.argv[2]), target / "ds")
    out = {"error": None}
except ArchiveError as exc:
    out = {"error": str(exc), "kind": type(exc).__name__}
out["left"] = sorted(os.listdir(target))
print(json.dumps(out))
"""
NO_TMPFS = 97  # the child's exit status when the private tmpfs could not be mounted


def _random_members(count: int, size: int) -> dict[str, bytes]:
    rng = random.Random(count * size)  # incompressible: the archive is as large as what it unpacks to
    return {f"cat/{i}.png": rng.randbytes(size) for i in range(count)}


def _extract_on_small_tmpfs(tmp_path: Path, members: dict[str, bytes]) -> dict:
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed: no private tmpfs to fill")
    source = factory.write_zip(tmp_path / "upload.zip", members)
    small = tmp_path / "small"
    small.mkdir()
    mount = f'mount -t tmpfs -o size=1m tmpfs "$1" || exit {NO_TMPFS}; exec "$2" -c "$3" "$1" "$4"'
    cmd = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount, "sh", str(small), sys.executable,
           EXTRACT, str(source)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode == NO_TMPFS or (done.returncode and done.stderr.startswith("unshare:")):
        pytest.skip(f"no private tmpfs here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_a_zip_larger_than_the_free_space_is_refused_before_writing_in_words(tmp_path: Path) -> None:
    out = _extract_on_small_tmpfs(tmp_path, _random_members(3, 600_000))
    assert out["kind"] == "ArchiveSpaceError" and "Errno" not in out["error"], out
    assert "not enough disk space to extract the ZIP: its 3 files hold 1.8 MB" in out["error"]
    assert "1.0 MB is free" in out["error"] and "nothing was written" in out["error"]
    assert out["left"] == []


def test_a_disk_that_fills_while_extracting_is_said_in_words_and_nothing_is_left(tmp_path: Path) -> None:
    # 600 files of 200 bytes declare 0.1 MB, which fits; each takes a whole 4 KB page, so the disk fills half-way.
    out = _extract_on_small_tmpfs(tmp_path, _random_members(600, 200))
    assert out["kind"] == "ArchiveSpaceError" and "Errno" not in out["error"], out
    assert "its 600 files hold 0.1 MB (about 2.5 MB on this disk, in 4 KB blocks)" in out["error"]
    assert "MB is free in" in out["error"] and "the part written was removed" in out["error"]
    assert out["left"] == []  # neither the dataset nor its .partial folder


def test_a_file_size_limit_while_extracting_is_said_in_words_and_nothing_is_left(tmp_path: Path) -> None:
    source = factory.write_zip(tmp_path / "upload.zip", _random_members(2, 2 * 2**20))
    (tmp_path / "out").mkdir()

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    done = subprocess.run([sys.executable, "-c", EXTRACT, str(tmp_path / "out"), str(source)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["kind"] == "ArchiveSpaceError" and "Errno" not in out["error"], out
    assert out["error"].startswith("file too large") and "ulimit -f" in out["error"]
    assert "nothing of the ZIP was kept" in out["error"] and out["left"] == []
