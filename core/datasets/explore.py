"""Facts about a scanned dataset for the Datasets page: class balance, sizes, modes, file types.

Pure functions over the manifest (``core.datasets.scan``), so the page only draws what they return.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.common.naming import natural_key

# The whale report oversampled classes with fewer than 10 images: below that a class is barely learnable.
RARE_CLASS_MIN = 10
IMBALANCE_RATIO_WARN = 3.0


@dataclass(frozen=True)
class Balance:
    """How even the classes are. ``warnings`` are sentences for a user, empty when all is well."""

    n_classes: int
    largest: tuple[str, int]
    smallest: tuple[str, int]
    ratio: float  # largest / smallest class
    rare: tuple[str, ...]  # classes with fewer than RARE_CLASS_MIN images
    warnings: tuple[str, ...]


def class_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per (label, split), labels in natural order: the data of the class balance chart."""
    split = manifest["split"].replace("", "unsplit")
    table = manifest.assign(split=split).groupby(["label", "split"]).size().rename("images").reset_index()
    return table.sort_values("label", key=lambda s: s.map(natural_key), kind="stable").reset_index(drop=True)


def balance(manifest: pd.DataFrame) -> Balance:
    """Largest and smallest class, their ratio, and plain-language warnings about imbalance."""
    counts = manifest["label"].value_counts()
    if counts.empty:
        return Balance(0, ("", 0), ("", 0), 0.0, (), ("The dataset holds no usable images.",))
    if set(counts.index) == {""}:  # a plain folder of photos: balance has no meaning, training needs classes
        return Balance(
            0,
            ("", 0),
            ("", 0),
            0.0,
            (),
            (
                f"These {int(counts.iloc[0]):,} images have no labels (they lie in one folder, not one folder per "
                "class): duplicates and quality checks work on them; to train, sort them into a folder per class.",
            ),
        )
    largest = (str(counts.index[0]), int(counts.iloc[0]))
    smallest = (str(counts.index[-1]), int(counts.iloc[-1]))
    ratio = largest[1] / smallest[1]
    rare = tuple(str(label) for label, n in counts.items() if n < RARE_CLASS_MIN)
    warnings = []
    if len(counts) == 1:
        warnings.append("Only one class: a classifier needs at least two.")
    if ratio >= IMBALANCE_RATIO_WARN:
        warnings.append(
            f"Imbalanced: '{largest[0]}' has {ratio:.1f}x the images of '{smallest[0]}' "
            f"({largest[1]} vs {smallest[1]}). Consider oversampling rare classes when training."
        )
    if rare:
        shown = ", ".join(rare[:8]) + (f" and {len(rare) - 8} more" if len(rare) > 8 else "")
        classes = "1 class has" if len(rare) == 1 else f"{len(rare)} classes have"
        warnings.append(f"{classes} fewer than {RARE_CLASS_MIN} images: {shown}.")
    return Balance(len(counts), largest, smallest, ratio, rare, tuple(warnings))


def value_table(manifest: pd.DataFrame, column: str) -> pd.DataFrame:
    """Count of images per value of ``column`` (mode, format), most common first."""
    return manifest[column].value_counts().rename_axis(column).rename("images").reset_index()


def size_summary(manifest: pd.DataFrame) -> dict[str, object]:
    """Smallest, median and largest width/height, how many distinct sizes there are and the (up to) 3 most common
    with their counts."""
    if manifest.empty:
        return {"distinct_sizes": 0}
    sizes = manifest[["width", "height"]]
    common = sizes.value_counts().head(3)  # the most frequent sizes, so "2 different sizes" says which
    return {
        "distinct_sizes": int(sizes.drop_duplicates().shape[0]),
        "common": [(f"{int(w)}x{int(h)}", int(n)) for (w, h), n in common.items()],
        "min": f"{int(sizes.width.min())}x{int(sizes.height.min())}",
        "median": f"{int(sizes.width.median())}x{int(sizes.height.median())}",
        "max": f"{int(sizes.width.max())}x{int(sizes.height.max())}",
        "total_mb": round(float(manifest["bytes"].sum()) / 2**20, 1),
    }


def page_of(frame: pd.DataFrame, page: int, per_page: int) -> pd.DataFrame:
    """Rows of one page (0-based), clamped to the last page."""
    if frame.empty:
        return frame
    last = (len(frame) - 1) // per_page
    start = min(max(page, 0), last) * per_page
    return frame.iloc[start : start + per_page]
