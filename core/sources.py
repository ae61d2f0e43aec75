"""Dataset formats -> one list of (image path, label, split) entries, plus the problems found on the way.

Three layouts, as the reports behind this product met them:

* ``folder``: a folder per class (``cat/1.jpg``), optionally under split folders (``train/cat/1.jpg``);
* ``csv``: a CSV of image,label (Kaggle style: ``Image,Id``, ``filename,label``, ``path,class`` ...);
* ``metadata``: one JSON file per image holding the label under a key (Amazon bins: ``metadata/523.json``
  with ``EXPECTED_QUANTITY``, image ``bin-images/523.jpg`` found by the same stem).

Listing never opens an image; ``core.scan`` does that. A ``DatasetRef`` has a one-line ``spec`` that every
command accepts as ``DATASET``, so a run can name the exact dataset it was trained on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import pandas as pd

from core import samples
from core.archive import extract_zip
from core.errors import DatasetError
from core.images import is_image_name
from core.workspace import Workspace

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test"}  # fmt: skip
IMAGE_COLUMNS = ("image", "images", "img", "image_id", "imageid", "image_name", "image_path", "filename",
                 "file_name", "file", "filepath", "file_path", "path", "fname", "name", "id_code")  # fmt: skip
LABEL_COLUMNS = ("label", "labels", "class", "class_name", "classname", "category", "target", "y", "id",
                 "species", "breed", "diagnosis", "level")  # fmt: skip
SPLIT_COLUMNS = ("split", "subset", "set", "fold")
ZIP_SKIPPED = ".zip-skipped.json"  # hidden: never taken for data
JUNK_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class DatasetRef:
    """Where a dataset is and how to read it. ``root`` is the folder that manifest paths are relative to."""

    kind: str  # "folder" | "csv" | "metadata"
    root: Path
    labels: Path | None = None  # csv: the CSV file
    metadata: Path | None = None  # metadata: the folder of JSON files
    label_key: str | None = None  # metadata: the key holding the label ("a.b" for nested keys)
    name: str = ""  # how to show it; "sample:digits" for the sample

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


@dataclass(frozen=True)
class Entry:
    path: str  # relative to DatasetRef.root, with forward slashes
    label: str
    split: str  # "train" | "val" | "test" | ""


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


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
    once), or a ``spec`` string of an earlier ref (``csv:...``, ``json:...``).

    Raises:
        DatasetError: the path does not exist or the options do not fit together.
    """
    if samples.is_sample_ref(spec):
        return DatasetRef("folder", samples.sample_path(spec, ws.datasets), name=spec)
    if spec.startswith(("csv:", "json:")):
        return _from_spec_string(spec, ws)
    path = _existing(spec, "dataset")
    if metadata is not None:
        base = Path(images) if images else (path if path.is_dir() else path.parent)
        return metadata_ref(_existing(metadata, "metadata folder"), label_key, images=base)
    if labels is not None:
        return csv_ref(_existing(labels, "labels CSV"), images=Path(images) if images else path)
    if path.suffix.lower() == ".csv":
        return csv_ref(path, images=Path(images) if images else None)
    if path.suffix.lower() == ".zip":
        return detect_dataset(extract_upload(path.read_bytes(), path.name, ws), label_key=label_key)
    if not path.is_dir():
        raise DatasetError(f"{spec} is neither a folder, a .csv nor a .zip")
    if label_key:  # a key only means something for JSON metadata: never scan the folder as classes instead
        return _metadata_inside(path, label_key)
    return DatasetRef("folder", path, name=str(spec))


def _metadata_inside(folder: Path, label_key: str) -> DatasetRef:
    meta = find_metadata_folder(folder)
    if meta is None:
        raise DatasetError(
            f"--label-key {label_key} needs a folder of .json files; none in {folder} (use --metadata DIR)"
        )
    return metadata_ref(meta, label_key, images=folder)


def _from_spec_string(spec: str, ws: Workspace) -> DatasetRef:
    kind, _, rest = spec.partition(":")
    target, has_query, query = rest.rpartition("?")  # the path may hold a "?"; the urlencoded query never does
    target = target if has_query else rest
    params = {k: v[0] for k, v in parse_qs(query).items()}
    images = params.get("images")
    if kind == "csv":
        return csv_ref(_existing(target, "labels CSV"), images=Path(images) if images else None)
    return metadata_ref(
        _existing(target, "metadata folder"), params.get("key"), images=Path(images) if images else None
    )


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"{what} not found: {path}")
    return p.resolve()


def csv_ref(labels: Path, *, images: Path | None = None) -> DatasetRef:
    """A CSV-of-labels dataset. Without ``images``, the image folder is guessed next to the CSV."""
    table = read_label_csv(labels)
    root = images.resolve() if images else _guess_csv_images(labels, table)
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {root}")
    return DatasetRef("csv", root, labels=labels.resolve(), name=labels.name)


def metadata_ref(metadata: Path, label_key: str | None, *, images: Path | None = None) -> DatasetRef:
    """A JSON-per-image dataset. Without ``images``, the folder whose file stems match is chosen.

    Raises:
        DatasetError: no label key given (the message lists the keys found), or no JSON files.
    """
    if not metadata.is_dir():
        raise DatasetError(f"metadata folder not found: {metadata}")
    if not label_key:
        found = ", ".join(k.key for k in metadata_keys(metadata)[:12]) or "none"
        raise DatasetError(f"choose the label key (--label-key); keys found in {metadata.name}: {found}")
    stems = [p.stem for p in _json_files(metadata)][:200]
    if not stems:
        raise DatasetError(f"no .json files in {metadata}")
    root = images.resolve() if images else None
    if root is None or not _count_stem_matches(root, stems):
        root = _best_images_folder(_candidate_folders(metadata, images), stems) or root or metadata.parent
    return DatasetRef("metadata", root, metadata=metadata.resolve(), label_key=label_key, name=metadata.parent.name)


# ---------------------------------------------------------------------------------------------------------------
# Listing entries per format


def list_entries(ref: DatasetRef) -> tuple[list[Entry], list[Problem]]:
    """All images the ref names, with label and split, and the files it cannot use (with a reason)."""
    if ref.kind == "folder":
        entries, problems = _list_folder(ref.root)
    elif ref.kind == "csv":
        assert ref.labels is not None
        entries, problems = _list_csv(ref.root, ref.labels)
    elif ref.kind == "metadata":
        assert ref.metadata is not None and ref.label_key
        entries, problems = _list_metadata(ref.root, ref.metadata, ref.label_key)
    else:
        raise DatasetError(f"unknown dataset kind {ref.kind!r}; expected folder, csv or metadata")
    return entries, problems + _zip_problems(ref.root)


def _zip_problems(root: Path) -> list[Problem]:
    """Members of the ZIP this dataset came from that extraction left out (unsafe names, symlinks...)."""
    for folder in (root, *list(root.parents)[:2]):
        record = folder / ZIP_SKIPPED
        if record.is_file():
            try:
                return [Problem(r["path"], r["reason"]) for r in json.loads(record.read_text())]
            except (OSError, ValueError, KeyError, TypeError):
                return []
    return []


def walk_files(root: Path, linked_folders: list[str] | None = None) -> Iterator[tuple[str, Path]]:
    """(relative posix path, absolute path) of every visible file under ``root``; links are not followed.

    Symlinked files are yielded (``core.scan`` decides whether their target is inside the dataset);
    symlinked folders are never entered, so a link loop or a link to ``/`` cannot make a scan endless.
    Their relative paths are appended to ``linked_folders`` when it is given.
    """
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        if linked_folders is not None:
            linked_folders.extend((base / d).relative_to(root).as_posix() for d in dirs if (base / d).is_symlink())
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        for name in sorted(files):
            if not _hidden(name):
                full = base / name
                yield full.relative_to(root).as_posix(), full


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in JUNK_NAMES


def _list_folder(root: Path) -> tuple[list[Entry], list[Problem]]:
    entries: list[Entry] = []
    problems: list[Problem] = []
    split_layout = _has_split_folders(root)
    linked: list[str] = []
    for rel, _ in walk_files(root, linked):
        if not is_image_name(rel):
            continue
        parts = rel.split("/")
        split = SPLIT_NAMES.get(parts[0].lower(), "") if split_layout else ""
        class_parts = parts[1:] if split else parts
        if len(class_parts) < 2:
            where = f"the {parts[0]} folder" if split else "the dataset folder"
            problems.append(Problem(rel, f"not inside a class folder (directly in {where})"))
        else:
            entries.append(Entry(rel, class_parts[0], split))
    problems.extend(Problem(rel, "symlinked folder (not followed)") for rel in linked)
    return entries, problems


def _has_split_folders(root: Path) -> bool:
    """True when the top level holds train/val/test folders that themselves hold class folders."""
    tops = [p for p in root.iterdir() if p.is_dir() and not _hidden(p.name)] if root.is_dir() else []
    splits = [p for p in tops if p.name.lower() in SPLIT_NAMES]
    return bool(splits) and any(any(c.is_dir() for c in p.iterdir()) for p in splits)


def read_label_csv(path: Path) -> pd.DataFrame:
    """The CSV as a frame with columns ``image``, ``label`` and optional ``split``, as text.

    Raises:
        DatasetError: unreadable CSV, or no column that can hold the image names or the labels.
    """
    try:
        sep = _sniff_delimiter(path.read_text(errors="replace")[:8192])
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep, skipinitialspace=True)
    except (OSError, ValueError, csv.Error, pd.errors.ParserError) as exc:
        raise DatasetError(f"cannot read {path.name}: {exc}") from exc
    if raw.shape[1] < 2:
        raise DatasetError(f"{path.name} needs two columns (image, label); found {list(raw.columns)}")
    image_col, label_col = _pick_columns(raw, path.name)
    out = pd.DataFrame({"image": raw[image_col].str.strip(), "label": raw[label_col].str.strip()})
    split_col = _find_column(raw.columns, SPLIT_COLUMNS, exclude=(image_col, label_col))
    out["split"] = raw[split_col].str.strip().str.lower().map(lambda s: SPLIT_NAMES.get(s, "")) if split_col else ""
    return out


def _sniff_delimiter(sample_text: str) -> str:
    # A one-column file has no delimiter to find; "," lets the column check below say what is missing.
    try:
        return csv.Sniffer().sniff(sample_text, delimiters=",;\t|").delimiter if sample_text.strip() else ","
    except csv.Error:
        return ","


def _pick_columns(raw: pd.DataFrame, name: str) -> tuple[str, str]:
    image_col = _find_column(raw.columns, IMAGE_COLUMNS)
    label_col = _find_column(raw.columns, LABEL_COLUMNS, exclude=(image_col,))
    if image_col and label_col:
        return image_col, label_col
    if raw.shape[1] == 2:  # two columns with unknown names: image first, label second, the common order
        return str(raw.columns[0]), str(raw.columns[1])
    raise DatasetError(
        f"{name}: cannot tell which columns hold the image and the label; columns are {list(raw.columns)}; "
        f"expected an image column ({', '.join(IMAGE_COLUMNS[:6])}...) and a label column "
        f"({', '.join(LABEL_COLUMNS[:6])}...)"
    )


def _find_column(columns: pd.Index, wanted: tuple[str, ...], exclude: tuple[str | None, ...] = ()) -> str | None:
    by_lower = {str(c).strip().lower(): str(c) for c in columns if c not in exclude}
    return next((by_lower[w] for w in wanted if w in by_lower), None)


def _list_csv(root: Path, labels: Path) -> tuple[list[Entry], list[Problem]]:
    table = read_label_csv(labels)
    entries: list[Entry] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for row_no, (image, label, split) in enumerate(table.itertuples(index=False), start=2):
        rel = _csv_image_path(root, image)
        if not image:
            problems.append(Problem(f"{labels.name}:{row_no}", "row without an image name"))
        elif rel is None:
            problems.append(Problem(image, f"listed in {labels.name} (row {row_no}) but no such file"))
        elif not label:
            problems.append(Problem(rel, f"no label in {labels.name} (row {row_no})"))
        elif rel in seen:
            problems.append(Problem(rel, f"listed again in row {row_no} (row {seen[rel]} kept)"))
        else:
            seen[rel] = row_no
            entries.append(Entry(rel, label, split))
    return entries, problems


def _csv_image_path(root: Path, image: str) -> str | None:
    """The image's path relative to ``root``, trying common extensions for names given without one."""
    if not image:
        return None
    name = image.replace("\\", "/").lstrip("/")
    candidates = [name] if Path(name).suffix else [name + ext for ext in (".jpg", ".png", ".jpeg", ".webp", ".bmp")]
    return next((c for c in candidates if (root / c).is_file() or (root / c).is_symlink()), None)


def _guess_csv_images(labels: Path, table: pd.DataFrame) -> Path:
    names = [n for n in table["image"].head(50) if n]
    candidates = [labels.parent, labels.parent / labels.stem, *sorted(p for p in labels.parent.iterdir() if p.is_dir())]
    best = max(candidates, key=lambda folder: sum(_csv_image_path(folder, n) is not None for n in names))
    return best.resolve()


def _json_files(metadata: Path) -> list[Path]:
    return sorted(p for p in metadata.rglob("*.json") if not _hidden(p.name))


def _candidate_folders(metadata: Path, images: Path | None) -> list[Path]:
    near = [images] if images else []
    for base in (images, metadata.parent):
        if base and base.is_dir():
            near.extend(sorted(p for p in base.iterdir() if p.is_dir() and not _hidden(p.name)))
    return [*near, metadata.parent, metadata]


def _count_stem_matches(folder: Path, stems: list[str]) -> int:
    if not folder.is_dir():
        return 0
    have = {Path(rel).stem for rel, _ in walk_files(folder) if is_image_name(rel)}
    return sum(s in have for s in stems)


def _best_images_folder(candidates: list[Path], stems: list[str]) -> Path | None:
    scored = [(_count_stem_matches(c, stems), c) for c in candidates]
    score, best = max(scored, key=lambda sc: sc[0], default=(0, None))
    return best.resolve() if best is not None and score else None


def _list_metadata(root: Path, metadata: Path, key: str) -> tuple[list[Entry], list[Problem]]:
    by_stem: dict[str, str] = {}
    for rel, _ in walk_files(root):
        if is_image_name(rel):
            by_stem.setdefault(Path(rel).stem, rel)
    entries: list[Entry] = []
    problems: list[Problem] = []
    used: set[str] = set()
    for file in _json_files(metadata):
        label, reason = _label_from_json(file, key)
        rel = by_stem.get(file.stem)
        if rel is not None:
            used.add(rel)  # it has a metadata file, usable or not: one problem per image, not two
        if reason:
            problems.append(Problem(rel or file.name, reason))
        elif rel is None:
            problems.append(Problem(file.name, f"no image named {file.stem}.* in {root.name}"))
        else:
            entries.append(Entry(rel, label, ""))
    problems.extend(Problem(rel, "no metadata file for this image") for rel in by_stem.values() if rel not in used)
    return entries, problems


def _label_from_json(file: Path, key: str) -> tuple[str, str]:
    """(label, "") or ("", reason) for one metadata file."""
    try:
        value: object = json.loads(file.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        return "", f"{file.name}: invalid JSON ({str(exc)[:60]})"
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return "", f"{file.name}: no {key!r} key"
        value = value[part]
    if isinstance(value, dict | list) or value is None or str(value).strip() == "":
        return "", f"{file.name}: {key!r} holds no single value"
    return _label_text(value), ""


def _label_text(value: object) -> str:
    # 5 and 5.0 are the same bin count; JSON writers differ in which they emit.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@dataclass(frozen=True)
class KeyInfo:
    key: str
    n_files: int
    n_distinct: int
    examples: tuple[str, ...]


def metadata_keys(metadata: Path, *, sample: int = 200) -> list[KeyInfo]:
    """Keys with a single value in the metadata files (nested keys dotted), most common first.

    Only keys present in at least half of the sampled files are offered: per-file keys (such as product
    ids nested under a dict) would otherwise flood the list.
    """
    files = _json_files(metadata)[:sample]
    values: dict[str, list[str]] = {}
    for file in files:
        try:
            doc = json.loads(file.read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError):
            continue
        for key, value in _scalar_items(doc):
            values.setdefault(key, []).append(_label_text(value))
    keep = [(k, v) for k, v in values.items() if len(v) * 2 >= max(len(files), 1)]
    infos = [KeyInfo(k, len(v), len(set(v)), tuple(dict.fromkeys(v))[:5]) for k, v in keep]
    return sorted(infos, key=lambda i: (-i.n_files, i.key))


def _scalar_items(doc: object, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, object]]:
    if not isinstance(doc, dict) or depth > 2:
        return
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _scalar_items(value, name + ".", depth + 1)
        elif not isinstance(value, list) and value is not None:
            yield name, value


# ---------------------------------------------------------------------------------------------------------------
# Uploads and format detection


def extract_upload(data: bytes, filename: str, ws: Workspace) -> Path:
    """Extract an uploaded ZIP into the workspace once; the same bytes uploaded again reuse the folder."""
    digest = hashlib.sha256(data).hexdigest()[:10]
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(filename).stem)[:60] or "upload"
    dest = ws.datasets / f"{stem}-{digest}"
    if not dest.exists():
        result = extract_zip(data, dest)
        # Kept beside the data so every later scan lists what the ZIP held but the studio left out.
        skipped = [{"path": name, "reason": f"left out of the ZIP: {why}"} for name, why in result.skipped]
        (dest / ZIP_SKIPPED).write_text(json.dumps(skipped))
    return _single_top_folder(dest)


def _single_top_folder(dest: Path) -> Path:
    """The one folder wrapping the dataset, if any; a lone folder of images is a class folder and is kept."""
    visible = [p for p in dest.iterdir() if not _hidden(p.name)]
    if len(visible) != 1 or not visible[0].is_dir() or visible[0].name.lower() in SPLIT_NAMES:
        return dest
    only_images = all(p.is_file() and is_image_name(p.name) for p in visible[0].iterdir() if not _hidden(p.name))
    return dest if only_images else visible[0]


def detect_dataset(folder: Path, *, label_key: str | None = None) -> DatasetRef:
    """Guess the layout of a folder (an extracted ZIP, a folder picked on the page).

    A CSV at the top whose columns look like image,label wins; then a folder of JSON files whose stems
    match images (needs ``label_key``); otherwise a folder per class.
    """
    for labels in sorted(folder.glob("*.csv")) + sorted(folder.glob("*.tsv")):
        if "submission" in labels.stem.lower():  # Kaggle's prediction template: test images, dummy labels
            continue
        try:
            return replace(csv_ref(labels), name=f"{folder.name}/{labels.name}")
        except DatasetError:
            continue
    meta = find_metadata_folder(folder)
    if meta is not None:
        return metadata_ref(meta, label_key, images=folder)
    return DatasetRef("folder", folder.resolve(), name=folder.name)


def find_metadata_folder(folder: Path) -> Path | None:
    """A folder (the given one or a child) where most files are JSON, if any."""
    for candidate in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        files = [p for p in candidate.iterdir() if p.is_file() and not _hidden(p.name)]
        n_json = sum(p.suffix.lower() == ".json" for p in files)
        if n_json >= 2 and n_json * 2 >= len(files):
            return candidate
    return None
