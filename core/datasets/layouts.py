"""The three dataset layouts, read without opening any image: (path, label, split) entries and problems.

* folder per class (``cat/1.jpg``), optionally under split folders (``train/cat/1.jpg``); a flat folder of
  images (no class folder at all) is a folder of *unlabelled* images: their label is ``UNLABELLED`` (""), so
  they can be browsed, scanned and deduplicated before anyone labels them (training refuses them);
* a CSV of image,label (Kaggle style: ``Image,Id``, ``filename,label``, ``path,class`` ...);
* one JSON file per image holding the label under a key (Amazon bins: ``metadata/523.json`` with
  ``EXPECTED_QUANTITY``; the image ``523.jpg`` is found by the same stem).

Every file a dataset lists stays inside its *reach* (``DatasetRef.reach``: the workspace's allowed roots, symlinks
resolved): a metadata file that links out is listed with its reason and never opened, and a CSV row is not
looked up through a folder that links out (``core.datasets.scan`` applies the same rule to every image). JSON
is read through ``core.common.jsonfile`` (size, depth and type checked), so one hostile file is one problem.

``core.datasets.sources`` chooses the layout and where the files are; ``core.datasets.scan`` opens the images.
"""

from __future__ import annotations

import csv
import os
import posixpath
import stat
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.common.errors import DatasetError
from core.common.jsonfile import JsonFileError, read_json
from core.common.untrusted import from_spreadsheet
from core.datasets.labels import label_text
from core.images.opener import is_image_name, sniff_image

UNLABELLED = ""  # the label of an image that has none: never a class name (a folder cannot be named "")

# What a split folder or a CSV split column may call a split (any case) -> its name (core.common.words.SPLITS).
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}  # fmt: skip


IMAGE_COLUMNS = ("image", "images", "img", "image_id", "imageid", "image_name", "image_path", "filename",
                 "file_name", "file", "filepath", "file_path", "path", "fname", "name", "id_code")  # fmt: skip


LABEL_COLUMNS = ("label", "labels", "class", "class_name", "classname", "category", "target", "y", "id",
                 "species", "breed", "diagnosis", "level")  # fmt: skip


SPLIT_COLUMNS = ("split", "subset", "set", "fold")


JUNK_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}

# Why a listed file is not used when it leads out of the reach. Where it leads is never said: the page's audience
# must not learn what the server holds. "not opened": the scan, the thumbnails and training never read it.
LINK_OUTSIDE = "symlink to a file outside the dataset and outside the folders this studio may read (not opened)"
FOLDER_OUTSIDE = "in a linked folder outside the dataset and outside the folders this studio may read (not opened)"
METADATA_MAX_BYTES = 4 * 2**20  # one image's metadata: the Amazon bins' are ~2 KB


@dataclass(frozen=True, slots=True)  # slots: a 200,000-image listing holds 200,000 of them
class Entry:
    path: str  # relative to DatasetRef.root, with forward slashes
    label: str  # as ``labels.label_text`` writes it, whichever format it came from
    split: str  # "train" | "val" | "test" | ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", label_text(self.label))  # the one place every format's labels pass


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


def one_line(name: str) -> str:
    """``name`` as it may be printed on one line: control characters (a newline in a file name) written as
    escapes (``\\n``), so a name can never split or forge a line of text output; accents stay as they are."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def real(path: Path) -> Path:
    """``path`` with every symlink resolved. ``os.path.realpath``, not ``Path.resolve``: on Python 3.11
    ``resolve()`` raises RuntimeError on a symlink loop."""
    return Path(os.path.realpath(path))


def within(path: Path, reach: Sequence[Path]) -> bool:
    """True when ``path`` resolves (symlinks followed) inside one of the ``reach`` folders (already resolved)."""
    resolved = real(path)
    return any(resolved.is_relative_to(folder) for folder in reach)


def walk_files(root: Path, skipped: list[Problem] | None = None) -> Iterator[tuple[str, Path]]:
    """(relative posix path, absolute path) of every visible file under ``root``; links are not followed.

    Symlinked files are yielded (``core.datasets.scan`` decides whether their target is inside the dataset);
    symlinked folders are never entered, so a link loop or a link to ``/`` cannot make a scan endless. When
    ``skipped`` is given, those folders are appended to it as problems, and so are folders named like an image
    (``photo.jpg/``), which are walked like any folder but would otherwise leave a user looking for a file.
    """
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        if skipped is not None:
            for d in sorted(d for d in dirs if not hidden(d)):
                rel = (base / d).relative_to(root).as_posix()
                if (base / d).is_symlink():
                    skipped.append(Problem(rel, "symlinked folder (not followed)"))
                elif is_image_name(d):
                    skipped.append(Problem(rel, "a folder named like an image, not an image"))
        dirs[:] = sorted(d for d in dirs if not hidden(d))
        for name in sorted(files):
            if not hidden(name):
                full = base / name
                yield full.relative_to(root).as_posix(), full


def hidden(name: str) -> bool:
    return name.startswith(".") or name in JUNK_NAMES


def list_folder(root: Path) -> tuple[list[Entry], list[Problem]]:
    """Every visible file under ``root``: an image entry (labelled by its class folder), or a problem.

    Files whose names do not say "image" are sniffed (16 bytes): a JPEG named ``.svg`` is an image, anything
    else is listed as "not an image", so no file is dropped without a word. A folder holding images only at its
    top level is a flat folder of unlabelled images.
    """
    entries: list[Entry] = []
    problems: list[Problem] = []
    split_layout = _has_split_folders(root)
    images = _image_files(walk_files(root, problems), problems)
    flat = bool(images) and all("/" not in rel for rel in images)
    for rel in images:
        parts = rel.split("/")
        split = SPLIT_ALIASES.get(parts[0].lower(), "") if split_layout else ""
        class_parts = parts[1:] if split else parts
        if flat:
            entries.append(Entry(rel, UNLABELLED, ""))
        elif len(class_parts) < 2:
            where = f"the {parts[0]} folder" if split else "the dataset folder"
            problems.append(Problem(rel, f"not inside a class folder (directly in {where}, beside class folders)"))
        else:
            entries.append(Entry(rel, class_parts[0], split))
    return entries, problems


def _image_files(files: Iterator[tuple[str, Path]], problems: list[Problem]) -> list[str]:
    """The relative paths that are images by name or by content; the other files become problems."""
    images = []
    for rel, full in files:
        if is_image_name(rel) or full.is_symlink() or not full.is_file() or not os.access(full, os.R_OK):
            images.append(rel)  # links, FIFOs and unreadable files get their reason from the scan
        elif sniff_image(full):
            images.append(rel)
        else:
            problems.append(Problem(rel, f"not an image ({_kind_of(rel)})"))
    return images


def _kind_of(rel: str) -> str:
    suffix = Path(rel).suffix.lower()
    return f"a {suffix} file" if suffix else "a file without an extension"


def _has_split_folders(root: Path) -> bool:
    """True when the top level holds train/val/test folders that themselves hold class folders."""
    tops = [p for p in root.iterdir() if p.is_dir() and not hidden(p.name)] if root.is_dir() else []
    splits = [p for p in tops if p.name.lower() in SPLIT_ALIASES]
    return bool(splits) and any(any(c.is_dir() for c in p.iterdir()) for p in splits)


def read_label_csv(path: Path) -> pd.DataFrame:
    """The CSV as a frame with columns ``image``, ``label`` and optional ``split``, as text.

    Raises:
        DatasetError: unreadable CSV, or no column that can hold the image names or the labels.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO named labels.csv would block the reader forever
            raise DatasetError(f"cannot read {path.name}: not a regular file")
        with path.open(errors="replace") as fh:
            sep = _sniff_delimiter(fh.read(8192))
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep, skipinitialspace=True)
    except OSError as exc:  # strerror only: the exception's own text repeats the server path
        raise DatasetError(f"cannot read {path.name}: {exc.strerror or type(exc).__name__}") from exc
    except (ValueError, csv.Error, pd.errors.ParserError) as exc:
        raise DatasetError(f"cannot read {path.name}: {exc}") from exc
    if raw.shape[1] < 2:
        raise DatasetError(f"{path.name} needs two columns (image, label); found {list(raw.columns)}")
    image_col, label_col = _pick_columns(raw, path.name)
    # A table the studio exported (``evaluate --predictions``) quotes formula-like cells for spreadsheets: unquoted.
    image, label = (raw[c].str.strip().map(from_spreadsheet) for c in (image_col, label_col))
    out = pd.DataFrame({"image": image, "label": label})
    split_col = _find_column(raw.columns, SPLIT_COLUMNS, exclude=(image_col, label_col))
    out["split"] = raw[split_col].str.strip().str.lower().map(lambda s: SPLIT_ALIASES.get(s, "")) if split_col else ""
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


def list_csv(root: Path, labels: Path, reach: Sequence[Path] = ()) -> tuple[list[Entry], list[Problem]]:
    """Entries of a CSV dataset. A CSV whose label column is empty on every row lists unlabelled images (a cleaned
    copy of a flat folder is written so); a row without a label among labelled ones is a problem. Names are never
    looked up through a folder that leads out of ``reach`` (default: ``root`` alone)."""
    reach = tuple(reach) or (real(root),)
    table = read_label_csv(labels)
    unlabelled = len(table) > 0 and not table["label"].astype(bool).any()
    entries: list[Entry] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for row_no, (image, label, split) in enumerate(table.itertuples(index=False), start=2):
        rel = csv_image_path(root, image, reach)
        if not image:
            problems.append(Problem(f"{labels.name}:{row_no}", "row without an image name"))
        elif climbs_out(image):
            problems.append(Problem(image, f"names a file outside the dataset folder ({labels.name}, row {row_no})"))
        elif rel is None:
            problems.append(Problem(image, f"listed in {labels.name} (row {row_no}) but no such file"))
        elif not label and not unlabelled:
            problems.append(Problem(rel, f"no label in {labels.name} (row {row_no})"))
        elif rel in seen:
            problems.append(Problem(rel, f"listed again in row {row_no} (row {seen[rel]} kept)"))
        else:
            seen[rel] = row_no
            entries.append(Entry(rel, label, split))
    return entries, problems


def climbs_out(image: str) -> bool:
    """True for a CSV image name that leads out of the dataset folder (``../../etc/x.png``)."""
    return posixpath.normpath(image.replace("\\", "/").lstrip("/")).split("/")[0] == ".."


def csv_image_path(root: Path, image: str, reach: Sequence[Path] = ()) -> str | None:
    """The image's path relative to ``root``, trying common extensions for names given without one.

    A name that climbs out of ``root`` (``../../etc/x.png``) gives None without being looked up, and a name
    inside a folder that links out of ``reach`` (default: ``root`` alone) is returned as written, unlooked-up,
    for the scan to refuse: so a CSV cannot be used to learn which files exist elsewhere. (A link to a file is
    found as a link without following it; ``core.datasets.scan`` refuses those that lead out.)
    """
    if not image or climbs_out(image):
        return None
    name = image.replace("\\", "/").lstrip("/")
    if not within((root / name).parent, tuple(reach) or (real(root),)):
        return name
    candidates = [name] if Path(name).suffix else [name + ext for ext in (".jpg", ".png", ".jpeg", ".webp", ".bmp")]
    return next((c for c in candidates if (root / c).is_file() or (root / c).is_symlink()), None)


def json_files(metadata: Path) -> list[Path]:
    return sorted(p for p in metadata.rglob("*.json") if not hidden(p.name))


def list_metadata(
    root: Path, metadata: Path, key: str, reach: Sequence[Path] = ()
) -> tuple[list[Entry], list[Problem]]:
    """Entries of a JSON-per-image dataset. A metadata file that links out of ``reach`` (default: ``root`` and
    ``metadata``) is a problem and is never opened; a file that is not a usable JSON object is a problem too."""
    reach = tuple(reach) or (real(root), real(metadata))
    by_stem: dict[str, str] = {}
    for rel, _ in walk_files(root):
        if is_image_name(rel):
            by_stem.setdefault(Path(rel).stem, rel)
    entries: list[Entry] = []
    problems: list[Problem] = []
    used: set[str] = set()
    for file in json_files(metadata):
        label, reason = _label_from_json(file, key, reach)
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


def read_metadata(file: Path, reach: Sequence[Path]) -> dict:
    """One metadata file's object, read only when it lies inside ``reach``.

    Raises:
        JsonFileError: it links out of ``reach``, or it is not a JSON object of a sane size and depth.
    """
    if not within(file, reach):
        raise JsonFileError(LINK_OUTSIDE, file.name)
    return read_json(file, file.name, expect=dict, max_bytes=METADATA_MAX_BYTES)


def _label_from_json(file: Path, key: str, reach: Sequence[Path]) -> tuple[str, str]:
    """(label, "") or ("", reason) for one metadata file."""
    try:
        value: object = read_metadata(file, reach)
    except JsonFileError as exc:
        return "", str(exc)
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return "", f"{file.name}: no {key!r} key"
        value = value[part]
    if isinstance(value, dict | list) or value is None or str(value).strip() == "":
        return "", f"{file.name}: {key!r} holds no single value"
    return label_text(value), ""


@dataclass(frozen=True)
class KeyInfo:
    key: str
    n_files: int
    n_distinct: int
    examples: tuple[str, ...]
    counts: tuple[tuple[str, int], ...] = ()  # the most common values and how many sampled files hold them


def metadata_keys(metadata: Path, *, sample: int = 200, reach: Sequence[Path] = ()) -> list[KeyInfo]:
    """Keys with a single value in the metadata files (nested keys dotted), most common first.

    Only keys present in at least half of the sampled files are offered: per-file keys (such as product
    ids nested under a dict) would otherwise flood the list. Files that link out of ``reach`` (default:
    ``metadata`` alone) are never opened, and files that are not usable JSON objects are passed over: neither
    counts among the files sampled.
    """
    reach = tuple(reach) or (real(metadata),)
    files = json_files(metadata)[:sample]
    values: dict[str, list[str]] = {}
    n_read = 0
    for file in files:
        try:
            doc = read_metadata(file, reach)
        except JsonFileError:
            continue
        n_read += 1
        for key, value in _scalar_items(doc):
            values.setdefault(key, []).append(label_text(value))
    keep = [(k, v) for k, v in values.items() if len(v) * 2 >= max(n_read, 1)]
    infos = [KeyInfo(k, len(v), len(set(v)), tuple(dict.fromkeys(v))[:5], tuple(Counter(v).most_common(12)))
             for k, v in keep]  # fmt: skip
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
