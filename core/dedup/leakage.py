"""Copies across train/val/test: which images of a later split have a copy in an earlier one.

``leakage_from_members`` reads the duplicate groups (``core.dedup.groups``); ``LeakageReport`` is what pages and
the command line show. A look-alike (a different picture that merely resembles another) is never in a group, so
it never counts as a leak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.common.words import SPLITS

if TYPE_CHECKING:
    from core.dedup.fingerprints import HashTable

SPLIT_ORDER = SPLITS  # train, val, test: an image of a later split with a copy in an earlier one leaks
SPLIT_PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))


@dataclass
class LeakageReport:
    """Copies across splits. ``pairs``: split_a, split_b, path_a, path_b, label_a, label_b, distance (hash bits)."""

    pairs: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)  # "train-val" -> images of val with a copy in train

    def to_dict(self) -> dict[str, dict[str, object]]:
        """Per split pair: how many images of the later split have a copy in the earlier one, and the pairs."""
        out: dict[str, dict[str, object]] = {}
        for a, b in SPLIT_PAIRS:
            key = f"{a}-{b}"
            rows = self.pairs[(self.pairs["split_a"] == a) & (self.pairs["split_b"] == b)]
            out[key] = {"n_images": self.counts.get(key, 0), "pairs": rows[["path_a", "path_b"]].values.tolist()}
        return out

    @property
    def table(self) -> pd.DataFrame:
        """One row per split pair: split_a, split_b, n_images, n_pairs."""
        rows = [{"split_a": a, "split_b": b, "n_images": self.counts.get(f"{a}-{b}", 0),
                 "n_pairs": int(((self.pairs["split_a"] == a) & (self.pairs["split_b"] == b)).sum())}
                for a, b in SPLIT_PAIRS]  # fmt: skip
        return pd.DataFrame(rows)


def leakage_from_members(members: pd.DataFrame, hashes: HashTable) -> LeakageReport:
    """Pairs of copies in different splits (from the groups), and per split pair the later split's leaked images."""
    hash_of = dict(zip(hashes.table["path"], hashes.hashes, strict=True))
    rows, counts = [], {}
    for a, b in SPLIT_PAIRS:
        left = members.loc[members["split"] == a, ["group", "path", "label"]]
        right = members.loc[members["split"] == b, ["group", "path", "label"]]
        both = left.merge(right, on="group", suffixes=("_a", "_b"))
        counts[f"{a}-{b}"] = int(both["path_b"].nunique())
        for r in both.itertuples():
            dist = int(np.bitwise_count(hash_of[r.path_a] ^ hash_of[r.path_b]))
            rows.append({"split_a": a, "split_b": b, "path_a": r.path_a, "path_b": r.path_b,
                         "label_a": r.label_a, "label_b": r.label_b, "distance": dist})  # fmt: skip
    columns = ["split_a", "split_b", "path_a", "path_b", "label_a", "label_b", "distance"]
    return LeakageReport(pd.DataFrame(rows, columns=columns), counts)
