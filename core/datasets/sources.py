"""Which dataset a user means, and where its files are: ``DatasetRef`` and how to resolve one.

A dataset is a folder per class, a CSV of labels, or a folder of JSON metadata (``core.datasets.layouts`` reads
each), given as a path, a ZIP (extracted into the workspace once), or ``sample:NAME``. Listing never
opens an image; ``core.datasets.scan`` does that. A ``DatasetRef`` has a one-line ``spec`` that every
command accepts as ``DATASET``, so a run can name the exact dataset it was trained on.

A ref made here also carries the allowed roots of the workspace it was opened in (``roots``, not part of the
spec): every file the dataset lists, images, metadata files, CSV rows, must resolve inside them (``reach``),
the same rule ``Workspace.confine`` applies to typed paths.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import pandas as pd

from core.common.errors import DatasetError
from core.common.jsonfile import JsonFileError, is_regular_file, read_json
from core.common.workspace import Workspace
from core.datasets import samples
from core.datasets.layouts import (
    SPLIT_ALIASES,
    Entry,
    Problem,
    csv_image_path,
    hidden,
    json_files,
    list_csv,
    list_folder,
    list_metadata,
    metadata_keys,
    read_label_csv,
    real,
    walk_files,
    within,
)
from core.images.archive import ArchiveExistsError, extract_zip
from core.images.opener import is_image_name

ZIP_SKIPPED = ".zip-skipped.json"  # hidden: never taken for data


@dataclass(frozen=True)
class DatasetRef:
    """Where a dataset is and how to read it. ``root`` is the folder that manifest paths are relative to."""

    kind: str  # "folder" | "csv" | "metadata"
    root: Path
    labels: Path | None = None  # csv: the CSV file
    metadata: Path | None = None  # metadata: the folder of JSON files
    label_key: str | None = None  # metadata: the key holding the label ("a.b" for nested keys)
    name: str = ""  # how to show it; "sample:digits" for the sample
    # The allowed roots of the workspace that opened it (resolved); not part of the spec, nor of equality.
    roots: tuple[Path, ...] = field(default=(), compare=False, repr=False)

    @property
    def reach(self) -> tuple[Path, ...]:
        """The folders the files this dataset lists may resolve into: the allowed roots it was opened with; a ref
        made without a workspace reaches only its own folders (the image root and the metadata folder)."""
        return self.roots or tuple(real(p) for p in (self.root, self.metadata) if p is not None)

    @property
    def spec(self) -> str:
        """One line that ``resolve_dataset`` turns back into this ref (stored with every run)."""
        if self.name.startswith(samples.SAMPLE_PREFIX):
            return self.name
        if self.kind == "csv":
            return f"csv:{self.labels}?{urlencode({'images': str(self.root)})}"
        if self.kind == "metadata":
            query = urlencode({"key": self.label_key or "", "images": str(self.root)})
            return f"json:{self.metadata}?{query}"
        return str(self.root)

    @property
    def key(self) -> str:
        """Stable id of this ref, for cache file names."""
        return hashlib.sha1(self.spec.encode()).hexdigest()[:16]

    @property
    def display(self) -> str:
        return self.name or self.root.name


# ---------------------------------------------------------------------------------------------------------------
# Resolving what a user typed (CLI argument or page choice) into a DatasetRef


def resolve_dataset(
    spec: str,
    ws: Workspace,
    *,
    labels: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
    metadata: str | os.PathLike[str] | None = None,
    label_key: str | None = None,
) -> DatasetRef:
    """Turn ``DATASET`` and the source options into a ref.

    ``spec`` is ``sample:NAME``, a folder, a ``.csv`` of labels, a ``.zip`` (extracted into the workspace
    once), or a ``spec`` string of an earlier ref (``csv:...``, ``json:...``). Every path, typed or found
    in a spec, goes through ``ws.confine`` before anything reads it.

    Raises:
        DatasetError: the path does not exist or the options do not fit together.
        PathNotAllowedError: a path lies outside the workspace and the allowed roots.
    """
    if samples.is_sample_ref(spec):
        return DatasetRef("folder", samples.sample_path(spec, ws.datasets), name=spec, roots=ws.allowed_roots)
    if spec.startswith(("csv:", "json:")):
        return _from_spec_string(spec, ws)
    path = _existing(spec, "dataset", ws)
    image_dir = _existing(images, "image folder", ws) if images else None
    if metadata is not None:
        base = image_dir or (path if path.is_dir() else path.parent)
        return metadata_ref(_existing(metadata, "metadata folder", ws), label_key, ws, images=base)
    if labels is not None:
        return csv_ref(_existing(labels, "labels CSV", ws), ws, images=image_dir or path)
    if path.suffix.lower() == ".csv":
        return csv_ref(path, ws, images=image_dir)
    if path.suffix.lower() == ".zip":
        return detect_dataset(extract_upload(path, path.name, ws), ws, label_key=label_key)
    if not path.is_dir():
        raise DatasetError(f"{spec} is neither a folder, a .csv nor a .zip")
    if label_key:  # a key only means something for JSON metadata: never scan the folder as classes instead
        return _metadata_inside(path, label_key, ws)
    return DatasetRef("folder", path, name=path.name, roots=ws.allowed_roots)


def _metadata_inside(folder: Path, label_key: str, ws: Workspace) -> DatasetRef:
    meta = find_metadata_folder(folder, ws)
    if meta is None:
        raise DatasetError(
            f"--label-key {label_key} needs a folder of .json files; none in {folder.name} (use --metadata DIR)"
        )
    return metadata_ref(meta, label_key, ws, images=folder)


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``csv:PATH?images=DIR`` or ``json:PATH?key=K&images=DIR`` as (kind, path, query parameters)."""
    kind, _, rest = spec.partition(":")
    target, has_query, query = rest.rpartition("?")  # the path may hold a "?"; the urlencoded query never does
    return kind, target if has_query else rest, {k: v[0] for k, v in parse_qs(query).items()}


def spec_paths(spec: str) -> list[str]:
    """Every path a ``DATASET`` value names (none for a sample): what the command line trusts as typed."""
    if samples.is_sample_ref(spec):
        return []
    if spec.startswith(("csv:", "json:")):
        _, target, params = parse_spec(spec)
        return [target] + ([params["images"]] if params.get("images") else [])
    return [spec]


def dataset_title(spec: str) -> str:
    """What to call a dataset in front of people (pages, reports): "Handwritten digits (built-in sample)", a
    folder's or a CSV's name; never a spec or a server path."""
    if samples.is_sample_ref(spec):
        sample = samples.SAMPLES.get(spec.removeprefix(samples.SAMPLE_PREFIX))
        return f"{sample.title} (built-in sample)" if sample else spec
    paths = spec_paths(spec)
    first = Path(paths[0].split("|")[0]) if paths else Path(spec)
    if spec.startswith("csv:"):
        return f"{first.parent.name}/{first.name}" if first.parent.name else first.name
    if spec.startswith("json:"):
        return first.parent.name or first.name
    return first.name or spec


def _from_spec_string(spec: str, ws: Workspace) -> DatasetRef:
    kind, target, params = parse_spec(spec)
    path = _existing(target, "labels CSV" if kind == "csv" else "metadata folder", ws)
    images = _existing(params["images"], "image folder", ws) if params.get("images") else None
    if kind == "csv":
        return csv_ref(path, ws, images=images)
    return metadata_ref(path, params.get("key"), ws, images=images)


def _existing(path: str | os.PathLike[str], what: str, ws: Workspace) -> Path:
    """The confined, resolved path; refused before it is ever opened or even tested for existence."""
    p = ws.confine(path, what)
    try:
        found = p.exists()
    except OSError as exc:  # a name no file system holds (over 255 bytes...): the user's to fix, not a crash
        raise DatasetError(f"the {what} is not a usable path ({exc.strerror or exc})") from None
    if not found:
        raise DatasetError(f"{what} not found: {path}")
    return p


def csv_ref(labels: Path, ws: Workspace, *, images: Path | None = None) -> DatasetRef:
    """A CSV-of-labels dataset. Without ``images``, the image folder is guessed next to the CSV.

    Both the CSV and the image folder must lie inside ``ws``'s allowed roots (``PathNotAllowedError``).
    """
    labels = ws.confine(labels, "labels CSV")
    table = read_label_csv(labels)
    root = ws.confine(images, "image folder") if images else _guess_csv_images(labels, table, ws)
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {ws.relative_name(root)}")
    return DatasetRef("csv", root, labels=labels, name=labels.name, roots=ws.allowed_roots)


def metadata_ref(metadata: Path, label_key: str | None, ws: Workspace, *, images: Path | None = None) -> DatasetRef:
    """A JSON-per-image dataset. Without ``images``, the folder whose file stems match is chosen among the
    folders near the metadata that lie inside ``ws``'s allowed roots.

    Raises:
        DatasetError: no label key given (the message lists the keys found), or no JSON files.
        PathNotAllowedError: the metadata or the image folder lies outside the allowed roots.
    """
    metadata = ws.confine(metadata, "metadata folder")
    if not metadata.is_dir():
        raise DatasetError(f"metadata folder not found: {ws.relative_name(metadata)}")
    if not label_key:
        found = ", ".join(k.key for k in metadata_keys(metadata, reach=ws.allowed_roots)[:12]) or "none"
        raise DatasetError(f"choose the label key (--label-key); keys found in {metadata.name}: {found}")
    stems = [p.stem for p in json_files(metadata)][:200]
    if not stems:
        raise DatasetError(f"no .json files in {metadata.name}")
    root = ws.confine(images, "image folder") if images else None
    if root is None or not _count_stem_matches(root, stems):
        parent = metadata.parent if ws.allows(metadata.parent) else metadata
        root = _best_images_folder(_candidate_folders(metadata, root, ws), stems) or root or parent
    return DatasetRef("metadata", root, metadata=metadata, label_key=label_key, name=metadata.parent.name,
                      roots=ws.allowed_roots)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Listing entries per format


def list_entries(ref: DatasetRef) -> tuple[list[Entry], list[Problem]]:
    """All images the ref names, with label and split, and the files it cannot use (with a reason).

    Nothing outside ``ref.reach`` is read: metadata files and CSV rows are checked here, images by the scan.
    """
    if ref.kind == "folder":
        entries, problems = list_folder(ref.root)
    elif ref.kind == "csv":
        assert ref.labels is not None
        entries, problems = list_csv(ref.root, ref.labels, ref.reach)
    elif ref.kind == "metadata":
        assert ref.metadata is not None and ref.label_key
        entries, problems = list_metadata(ref.root, ref.metadata, ref.label_key, ref.reach)
    else:
        raise DatasetError(f"unknown dataset kind {ref.kind!r}; expected folder, csv or metadata")
    return entries, problems + _zip_problems(ref.root, ref.reach)


def _zip_problems(root: Path, reach: tuple[Path, ...]) -> list[Problem]:
    """Members of the ZIP this dataset came from that extraction left out (unsafe names, symlinks...).

    The record is the studio's own: a regular file (never a link) inside the reach, a list of path/reason
    pairs; anything else is not such a record and is ignored.
    """
    for folder in (root, *list(root.parents)[:2]):
        record = folder / ZIP_SKIPPED
        if is_regular_file(record) and within(record, reach):
            try:
                rows = read_json(record, expect=list)
            except JsonFileError:
                return []
            return [Problem(r["path"], r["reason"]) for r in rows
                    if isinstance(r, dict) and isinstance(r.get("path"), str) and isinstance(r.get("reason"), str)]  # fmt: skip
    return []


def came_from_zip(folder: Path, ws: Workspace) -> bool:
    """True when ``folder`` lies in a folder a ZIP was extracted into (``extract_upload`` marks each one)."""
    folder = Path(os.path.realpath(folder))
    if not folder.is_relative_to(ws.datasets):
        return False
    return any((p / ZIP_SKIPPED).is_file() for p in [folder, *folder.parents] if p.is_relative_to(ws.datasets))


def _guess_csv_images(labels: Path, table: pd.DataFrame, ws: Workspace) -> Path:
    names = [n for n in table["image"].head(50) if n]
    near = [labels.parent / labels.stem, *sorted(p for p in labels.parent.iterdir() if p.is_dir())]
    candidates = [labels.parent, *(p for p in near if ws.allows(p))]  # a linked folder may lead out
    best = max(candidates, key=lambda folder: sum(csv_image_path(folder, n) is not None for n in names))
    return best.resolve()


def _candidate_folders(metadata: Path, images: Path | None, ws: Workspace) -> list[Path]:
    """Folders that may hold the images: the given one, its children, the metadata's siblings and parent.

    Only folders inside the allowed roots: with ``STUDIO_DATA_ROOTS`` set to the metadata folder itself, its
    siblings are outside and must not even be listed.
    """
    near = [images] if images else []
    for base in (images, metadata.parent):
        if base and base.is_dir() and ws.allows(base):
            near.extend(sorted(p for p in base.iterdir() if p.is_dir() and not hidden(p.name)))
    return [c for c in [*near, metadata.parent, metadata] if ws.allows(c)]


def _count_stem_matches(folder: Path, stems: list[str]) -> int:
    if not folder.is_dir():
        return 0
    have = {Path(rel).stem for rel, _ in walk_files(folder) if is_image_name(rel)}
    return sum(s in have for s in stems)


def _best_images_folder(candidates: list[Path], stems: list[str]) -> Path | None:
    scored = [(_count_stem_matches(c, stems), c) for c in candidates]
    score, best = max(scored, key=lambda sc: sc[0], default=(0, None))
    return best.resolve() if best is not None and score else None


# ---------------------------------------------------------------------------------------------------------------
# Uploads and format detection


def extract_upload(data: bytes | Path, filename: str, ws: Workspace) -> Path:
    """Extract a ZIP (uploaded bytes, or a file) into the workspace once; the same bytes again reuse the folder."""
    if isinstance(data, Path):
        with data.open("rb") as f:  # hashed in chunks: a dataset ZIP can be larger than memory
            digest = hashlib.file_digest(f, "sha256").hexdigest()[:10]
    else:
        digest = hashlib.sha256(data).hexdigest()[:10]
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(filename).stem)[:60] or "upload"
    dest = ws.datasets / f"{stem}-{digest}"
    if not dest.exists():
        try:
            # The record, kept beside the data, lets every later scan list what the ZIP held but was left out.
            extract_zip(data, dest, skipped_record=ZIP_SKIPPED)
        except ArchiveExistsError:
            pass  # two launchers of one run extract the same bytes at once: the other's copy is the same
    return _single_top_folder(dest)


def _single_top_folder(dest: Path) -> Path:
    """The one folder wrapping the dataset, if any; a lone folder of images is a class folder and is kept."""
    visible = [p for p in dest.iterdir() if not hidden(p.name)]
    if len(visible) != 1 or not visible[0].is_dir() or visible[0].name.lower() in SPLIT_ALIASES:
        return dest
    only_images = all(p.is_file() and is_image_name(p.name) for p in visible[0].iterdir() if not hidden(p.name))
    return dest if only_images else visible[0]


def detect_dataset(folder: Path, ws: Workspace, *, label_key: str | None = None) -> DatasetRef:
    """Guess the layout of a folder (an extracted ZIP, a folder picked on the page), inside ``ws``'s roots.

    A CSV at the top whose columns look like image,label wins; then a folder of JSON files whose stems
    match images (needs ``label_key``); otherwise a folder per class.
    """
    folder = ws.confine(folder, "folder")
    for labels in sorted(folder.glob("*.csv")) + sorted(folder.glob("*.tsv")):
        if "submission" in labels.stem.lower():  # Kaggle's prediction template: test images, dummy labels
            continue
        try:
            return replace(csv_ref(labels, ws), name=f"{folder.name}/{labels.name}")
        except DatasetError:
            continue
    meta = find_metadata_folder(folder, ws)
    if meta is not None:
        return metadata_ref(meta, label_key, ws, images=folder)
    return DatasetRef("folder", folder, name=folder.name, roots=ws.allowed_roots)


def find_metadata_folder(folder: Path, ws: Workspace) -> Path | None:
    """A folder (the given one or a child inside the allowed roots) where most files are JSON, if any."""
    children = sorted(p for p in folder.iterdir() if p.is_dir() and ws.allows(p))
    for candidate in [folder, *children]:
        files = [p for p in candidate.iterdir() if p.is_file() and not hidden(p.name)]
        n_json = sum(p.suffix.lower() == ".json" for p in files)
        if n_json >= 2 and n_json * 2 >= len(files):
            return candidate
    return None
