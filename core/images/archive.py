"""Safe extraction of an uploaded dataset ZIP (folder per class, CSV + images, or JSON + images).

A ZIP from a user can be a zip bomb, hold names that point outside the target folder, or carry
symlinks; ``extract_zip`` refuses the first and skips the others. It checks everything the central
directory declares *before* writing a byte, then counts the real bytes while streaming, because
headers can lie and Python 3.11.7's ``zipfile`` predates the overlapping-entry check (CVE-2024-0450).
It writes into a temporary folder beside the destination and renames it into place, so a failed
extraction never leaves half a dataset behind. A disk too small for the archive is said in words (what it
unpacks to, what is free): before writing when the declared sizes already do not fit, and when a write fails
for want of space (``ENOSPC``, ``EDQUOT``: small files take whole blocks) or over the process's file-size limit.
"""

from __future__ import annotations

import errno
import io
import json
import lzma
import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from core.common.diskspace import FULL_ERRNOS, DiskFullError, free_bytes, write_failure
from core.common.errors import ArchiveError
from core.images.opener import is_image_name

LABEL_EXTENSIONS: frozenset[str] = frozenset({".csv", ".tsv", ".json", ".txt"})

_RATIO_MIN_BYTES = 2**20  # small files (CSV, tiny PNGs) compress very well without being bombs
_CHUNK = 2**20
_MAX_NAME = 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
_CLASH = "name clashes with another member"
_SILENT = ""  # skip reason for OS junk (macOS resource forks...): dropped without being listed
# Local file header: signature, 5 x uint16 (version, flags, method, time, date), CRC, sizes, 2 lengths.
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_ENCRYPTED = 0x1  # general purpose flag bit 0

Source = str | os.PathLike[str] | bytes | BinaryIO


class ArchiveExistsError(ArchiveError):
    """The destination folder exists (perhaps put there by another process extracting the same ZIP)."""


class ArchiveSpaceError(ArchiveError, DiskFullError):
    """Too little disk space (or quota, or file-size limit) to extract the archive; nothing was left behind."""


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on what an archive may unpack to; anything beyond refuses the whole archive.

    Attributes:
        max_members: Entries in the central directory (files, folders and skipped junk alike).
        max_total_bytes: Uncompressed bytes of all members together.
        max_member_bytes: Uncompressed bytes of any one member.
        max_ratio: Uncompressed / compressed size of a member above 1 MiB, and of the whole archive (its
            file size) once it unpacks to more than 1 MiB: 1,000 members of 1 MiB of zeros each pass the
            per-member check (about 1 KB each) but not this one. Bombs reach 1000x; datasets (compressed
            images, CSV, JSON) stay far below.
    """

    max_members: int = 200_000
    max_total_bytes: int = 8 * 2**30
    max_member_bytes: int = 512 * 2**20
    max_ratio: float = 250.0


@dataclass(frozen=True)
class ExtractResult:
    """What ``extract_zip`` produced.

    Attributes:
        root: The dataset folder: the destination, or its single top-level folder when the archive
            wraps everything in one folder (``mydata/cat/1.jpg`` gives ``<dest>/mydata``).
        n_files: Files written.
        n_bytes: Bytes written.
        skipped: ``(member name, reason)`` for each member left out (OS junk is not listed).
    """

    root: Path
    n_files: int
    n_bytes: int
    skipped: list[tuple[str, str]]


def extract_zip(
    source: Source, dest: Path, *, limits: ZipLimits = ZipLimits(), skipped_record: str | None = None
) -> ExtractResult:
    """Extract the images and label files of a ZIP into ``dest``, all or nothing.

    Args:
        source: A path to the ZIP, its bytes, or a binary file object (e.g. a Streamlit upload).
        dest: Folder to create; it must not exist yet. Its parent is created if needed.
        limits: Size bounds; the defaults suit datasets of up to a few hundred thousand images.
        skipped_record: A file name inside ``dest`` for the skipped members as JSON, written before the
            folder is renamed into place so no reader ever sees the folder without it.

    Returns:
        Where the dataset landed, what was written and what was skipped, with reasons.

    Raises:
        ArchiveExistsError: (an ArchiveError) ``dest`` exists, or appeared while extracting.
        ArchiveError: the source is not a readable ZIP, or the archive is refused
            (too many members, too large, possible zip bomb, encrypted, corrupt). Nothing is left
            behind: neither ``dest`` nor the temporary folder.
        ArchiveSpaceError: (an ArchiveError) the disk is too small for it; nothing is left behind either.
    """
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise ArchiveExistsError(f"destination already exists: {dest}")
    with _zip_stream(source) as fp, _open_zip(fp) as zf:
        members = zf.infolist()
        budget = _unpack_budget(fp, limits)
        _check_declared(members, limits, budget)
        _check_overlaps(fp, members, zf.start_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _check_space(dest.parent, members)
        tmp: Path | None = None
        try:
            # Same filesystem as dest, so the final rename is atomic.
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
            tally = _extract_members(zf, members, tmp, limits, budget)
            if skipped_record:
                skipped = [{"path": name, "reason": f"left out of the ZIP: {why}"} for name, why in tally.skipped]
                (tmp / skipped_record).write_text(json.dumps(skipped))
            _move_into_place(tmp, dest)
        except BaseException as exc:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            full = _space_error(exc, dest.parent, members)  # measured after the partial copy is gone
            if full is not None:
                raise full from None
            raise
    return ExtractResult(_dataset_root(dest), tally.n_files, tally.n_bytes, tally.skipped)


# --- disk space ----------------------------------------------------------------------------------


def _check_space(folder: Path, members: list[zipfile.ZipInfo]) -> None:
    """Refuse before writing a byte when the bytes the archive declares cannot fit in ``folder``'s free space.

    Only a certain refusal: the bytes themselves, not the blocks they will take (file systems differ there).
    """
    free = free_bytes(folder)
    if free is not None and sum(info.file_size for info in members) > free:
        raise ArchiveSpaceError(_space_message(folder, members, free, "nothing was written"))


def _space_error(exc: BaseException, folder: Path, members: list[zipfile.ZipInfo]) -> ArchiveSpaceError | None:
    """The words for a write that failed for want of space (or over ``ulimit -f``); None for any other failure."""
    if not isinstance(exc, OSError) or exc.errno not in (*FULL_ERRNOS, errno.EFBIG):
        return None
    if exc.errno == errno.EFBIG:
        return ArchiveSpaceError(str(write_failure(exc, folder, "nothing of the ZIP was kept")))
    quota = " (over this user's disk quota)" if exc.errno == errno.EDQUOT else ""
    return ArchiveSpaceError(_space_message(folder, members, free_bytes(folder), "the part written was removed", quota))


def _space_message(folder: Path, members: list[zipfile.ZipInfo], free: int | None, kept: str, quota: str = "") -> str:
    """What the archive needs (its bytes, and the whole blocks its files take) and what is free, in MB (10^6 bytes,
    as ``diskspace`` and ``df -H`` say)."""
    try:
        block = os.statvfs(folder).f_frsize or 4096
    except OSError:
        block = 4096
    files = [info.file_size for info in members if not info.is_dir()]
    on_disk = sum(-(-size // block) * block for size in files)
    have = "an unknown amount" if free is None else f"{free / 1e6:.1f} MB"
    return (f"not enough disk space to extract the ZIP{quota}: its {len(files):,} files hold {sum(files) / 1e6:.1f} MB "
            f"(about {on_disk / 1e6:.1f} MB on this disk, in {block // 1024} KB blocks) and {have} is free in "
            f"{os.fspath(folder)}; {kept}: free some space and try again")  # fmt: skip


# --- opening -------------------------------------------------------------------------------------


@contextmanager
def _zip_stream(source: Source) -> Iterator[BinaryIO]:
    """Yield a seekable binary stream over ``source``; close it only if it was opened here."""
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        try:
            fp = open(source, "rb")  # closed by the with-block below
        except OSError as exc:
            raise ArchiveError(f"cannot read ZIP {os.fspath(source)}: {exc.strerror or exc}") from exc
        with fp:
            yield fp
    elif not getattr(source, "seekable", lambda: False)():
        yield io.BytesIO(source.read())  # zipfile needs to seek to the central directory
    else:
        yield source


@contextmanager
def _open_zip(fp: BinaryIO) -> Iterator[zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(fp)
    except zipfile.BadZipFile as exc:
        raise ArchiveError("not a ZIP archive" if "not a zip file" in str(exc) else f"corrupt ZIP: {exc}") from exc
    except NotImplementedError as exc:  # e.g. a version number from the future
        raise ArchiveError(f"unsupported ZIP: {exc}") from exc
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise ArchiveError(f"corrupt ZIP: {exc}") from exc
    with zf:
        yield zf


# --- checks on what the headers declare ----------------------------------------------------------


@dataclass(frozen=True)
class _Budget:
    """How many bytes the whole archive may unpack to: the size limit, or ``max_ratio`` times its file size."""

    archive_bytes: int
    total_bytes: int
    by_ratio: bool  # the ratio is the tighter bound (so an overrun is a bomb, not just a large archive)


def _unpack_budget(fp: BinaryIO, limits: ZipLimits) -> _Budget:
    archive_bytes = fp.seek(0, io.SEEK_END)
    ratio_bytes = max(_RATIO_MIN_BYTES, int(limits.max_ratio * archive_bytes))
    return _Budget(archive_bytes, min(limits.max_total_bytes, ratio_bytes), ratio_bytes < limits.max_total_bytes)


def _check_declared(members: list[zipfile.ZipInfo], limits: ZipLimits, budget: _Budget) -> None:
    """Refuse the archive on what its central directory declares, before anything is written."""
    if len(members) > limits.max_members:
        raise ArchiveError(f"too many members: {len(members)} (limit {limits.max_members})")
    for info in members:
        _check_member_header(info, limits)
    total = sum(info.file_size for info in members)
    if total > limits.max_total_bytes:
        raise ArchiveError(f"archive too large: {_size(total)} uncompressed (limit {_size(limits.max_total_bytes)})")
    if total > budget.total_bytes:
        ratio = total / max(budget.archive_bytes, 1)
        raise ArchiveError(f"possible zip bomb: the archive ({_size(budget.archive_bytes)}) unpacks to {_size(total)}, "
                           f"{ratio:.0f}x its size (limit {limits.max_ratio:.0f}x)")  # fmt: skip


def _check_member_header(info: zipfile.ZipInfo, limits: ZipLimits) -> None:
    name = info.filename
    if info.flag_bits & _ENCRYPTED:
        raise ArchiveError(f"encrypted member {name!r}: password-protected ZIPs are not supported")
    if info.file_size > limits.max_member_bytes:
        raise ArchiveError(
            f"member {name!r} too large: {_size(info.file_size)} (limit {_size(limits.max_member_bytes)})"
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > _RATIO_MIN_BYTES and ratio > limits.max_ratio:
        raise ArchiveError(f"possible zip bomb: {name!r} expands {ratio:.0f}x (limit {limits.max_ratio:.0f}x)")


def _check_overlaps(fp: BinaryIO, members: list[zipfile.ZipInfo], start_dir: int) -> None:
    """Refuse members whose data runs into the next member's header (or the central directory).

    Overlapping entries let a zip bomb reuse one compressed kernel for many members; CPython only
    checks this from 3.11.8 / 3.12.2 on.
    """
    ordered = sorted(members, key=lambda info: info.header_offset)
    next_offsets = [info.header_offset for info in ordered[1:]] + [start_dir]
    for info, next_offset in zip(ordered, next_offsets, strict=False):  # empty archive: nothing to pair
        if _data_start(fp, info) + info.compress_size > next_offset:
            raise ArchiveError(f"possible zip bomb (overlapping entries): {info.filename!r}")


def _data_start(fp: BinaryIO, info: zipfile.ZipInfo) -> int:
    """Offset of a member's data: its local header has its own name and extra-field lengths."""
    if info.header_offset < 0:  # zipfile adds the size of any prefix; a lying directory goes below zero
        raise ArchiveError(f"corrupt ZIP: no local header for {info.filename!r}")
    fp.seek(info.header_offset)
    header = fp.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or not header.startswith(_LOCAL_SIGNATURE):
        raise ArchiveError(f"corrupt ZIP: no local header for {info.filename!r}")
    *_, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


# --- extraction ----------------------------------------------------------------------------------


@dataclass
class _Tally:
    n_files: int = 0
    n_bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _extract_members(
    zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], root: Path, limits: ZipLimits, budget: _Budget
) -> _Tally:
    tally = _Tally()
    root = root.resolve()
    for info in members:
        reason = _skip_reason(info)
        if reason is None:
            target = _safe_target(root, info.orig_filename)
            reason = _make_dir(target) if info.is_dir() else _extract_file(zf, info, target, limits, budget, tally)
        if reason:  # "" is OS junk, or a member written
            tally.skipped.append((info.orig_filename.replace("\0", "\\0"), reason))
    return tally


def _skip_reason(info: zipfile.ZipInfo) -> str | None:
    """Why a member is left out (``_SILENT`` for OS junk), or None to extract it."""
    name = info.orig_filename  # zipfile's .filename is cut at a NUL byte, hiding the trick
    if _is_junk(name):
        return _SILENT
    if not _is_safe_name(name):
        return "unsafe name"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symlink"
    if info.is_dir() or is_image_name(name) or Path(name).suffix.lower() in LABEL_EXTENSIONS:
        return None
    return "not an image or label file"


def _is_junk(name: str) -> bool:
    parts = name.rstrip("/").split("/")
    return "__MACOSX" in parts or parts[-1] in _JUNK_NAMES or parts[-1].startswith("._")


def _is_safe_name(name: str) -> bool:
    """A relative, forward-slash name that stays inside the folder it is extracted to."""
    if not name or len(name) > _MAX_NAME or "\\" in name or "\0" in name:
        return False
    if name.startswith("/") or _DRIVE.match(name):
        return False
    parts = name.split("/")
    # Some part must name something: "./" or "" would be the extraction folder itself.
    return ".." not in parts and any(part not in ("", ".") for part in parts)


def _safe_target(root: Path, name: str) -> Path:
    """Where ``name`` goes under ``root``; a last guard, after the name checks, that it stays inside."""
    target = (root / name).resolve()
    if target == root or not target.is_relative_to(root):
        raise ArchiveError(f"unsafe member name {name!r}")  # unreachable for names _is_safe_name accepts
    return target


def _make_dir(target: Path) -> str:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        return _CLASH
    return ""


def _extract_file(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limits: ZipLimits, budget: _Budget, tally: _Tally
) -> str:
    """Write one member; return a skip reason, or "" once written. Refuse the archive if it is corrupt."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        written = _copy_member(zf, info, target, limits.max_member_bytes, budget.total_bytes - tally.n_bytes)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        return _CLASH
    except NotImplementedError as exc:  # e.g. Deflate64, which Windows uses for large folders
        return f"unsupported compression ({exc})"
    tally.n_files += 1
    tally.n_bytes += written
    return ""


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, member_limit: int, total_left: int) -> int:
    """Stream one member to a new file, counting real bytes: a hard bound whatever the headers say."""
    written = 0
    with _reading(info), zf.open(info) as src, open(target, "xb") as out:  # "x": a duplicate never overwrites
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > member_limit or written > total_left:
                raise ArchiveError(f"possible zip bomb: {info.filename!r} inflates beyond the size limits")
            out.write(chunk)
    return written


@contextmanager
def _reading(info: zipfile.ZipInfo) -> Iterator[None]:
    """Refuse the archive when a member's data cannot be decoded (bad CRC, broken stream...)."""
    try:
        yield
    except OSError as exc:
        if exc.errno is not None:  # the filesystem (a name clash, a full disk), not the archive's data
            raise
        raise _corrupt(info, exc) from exc  # bz2 reports a broken stream as a bare OSError
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, ValueError) as exc:
        raise _corrupt(info, exc) from exc


def _corrupt(info: zipfile.ZipInfo, exc: Exception) -> ArchiveError:
    return ArchiveError(f"corrupt ZIP member {info.filename!r}: {exc}")


def _move_into_place(tmp: Path, dest: Path) -> None:
    tmp.chmod(0o755)  # mkdtemp makes it private; a dataset folder is an ordinary folder
    if dest.exists():  # created by someone else while extracting: rename would replace an empty folder
        raise ArchiveExistsError(f"destination already exists: {dest}")
    try:
        os.rename(tmp, dest)
    except OSError as exc:  # another process's rename landed between the check above and ours
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise ArchiveExistsError(f"destination already exists: {dest}") from exc
        raise


def _dataset_root(dest: Path) -> Path:
    """``dest``, or its only entry when that is a folder wrapping the dataset.

    A single folder holding nothing but images is a class folder, not a wrapper, so it is kept.
    """
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not _only_images(entries[0]):
        return entries[0]
    return dest


def _only_images(folder: Path) -> bool:
    return all(entry.is_file() and is_image_name(entry.name) for entry in folder.iterdir())


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"
