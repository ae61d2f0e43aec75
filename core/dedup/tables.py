"""What the Duplicates page and ``python -m core dedup`` both show beyond the groups: every grouped image as CSV
rows (``--csv``, the page's download), and the borderline pairs counted by distance (``--json``'s ``borderline``,
the page's Borderline tab): how many pairs one or two bits more or less would group or drop.

Both work on a result's frames (``DedupResult.groups``/``members``/``borderline``), so ``core.dedup.groups`` can put
them in its summary without an import circle.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.common.untrusted import spreadsheet_safe

GROUP_CSV_COLUMNS = ["group", "kind", "size", "conflict", "leak", "max_distance", "path", "label", "split", "width",
                     "height"]  # fmt: skip
# The page's words for the per-distance table. "copies on the pixels": pairs that passed the pixel check (verified);
# never "look alike", the Groups tab's word for the pairs that are NOT copies.
BY_DISTANCE_COLUMNS = {"distance": "bits", "pairs": "candidate pairs", "verified": "copies on the pixels",
                       "grouped_now": "grouped now"}  # fmt: skip


def groups_csv(groups: pd.DataFrame, members: pd.DataFrame) -> str:
    """One row per image in a group, with its group's description, groups numbered from 1 as on the page.

    Safe to open in a spreadsheet: labels and file names come from whoever made the dataset and may start with
    "=" (``core.common.untrusted.spreadsheet_safe``)."""
    if groups.empty:
        return ",".join(GROUP_CSV_COLUMNS) + "\n"
    described = groups.rename(columns={"distance": "max_distance"})[
        ["group", "kind", "size", "conflict", "leak", "max_distance"]
    ]
    rows = members.merge(described, on="group")
    rows["group"] = rows["group"] + 1
    return spreadsheet_safe(rows[GROUP_CSV_COLUMNS]).to_csv(index=False, lineterminator="\n")


@dataclass(frozen=True)
class Borderline:
    """The candidate pairs within ``margin`` bits of ``threshold``: each verified on pixels (``verified``: they
    are copies on the pixels, so a threshold at or above their distance groups them) and ``counted`` when grouped now."""

    threshold: int
    margin: int
    pairs: pd.DataFrame  # DedupResult.borderline: path_a, path_b, label_a, label_b, distance, ..., verified, counted

    @property
    def low(self) -> int:
        return max(self.threshold - self.margin, 0)

    @property
    def high(self) -> int:
        return self.threshold + self.margin

    def change(self, threshold: int) -> int:
        """Pairs grouped at ``threshold`` minus those grouped now (within the margin): +n added, -n dropped."""
        alike = self.pairs["verified"].to_numpy(bool)
        dist = self.pairs["distance"].to_numpy(int)
        if threshold >= self.threshold:
            return int((alike & (dist > self.threshold) & (dist <= threshold)).sum())
        return -int((alike & (dist > threshold) & (dist <= self.threshold)).sum())

    def changes(self) -> dict[int, int]:
        """One bit less (when the threshold is above 0), one and two bits more: the page's three numbers."""
        steps = ([self.threshold - 1] if self.threshold > 0 else []) + [self.threshold + 1, self.threshold + 2]
        return {t: self.change(t) for t in steps}

    def by_distance(self) -> pd.DataFrame:
        """Per distance: candidate pairs, those that are copies on the pixels, those grouped now (columns in words)."""
        table = (
            self.pairs.assign(alike=self.pairs["verified"].astype(bool), counted=self.pairs["counted"].astype(bool))
            .groupby("distance")
            .agg(pairs=("alike", "size"), verified=("alike", "sum"), grouped_now=("counted", "sum"))
            .reset_index()
        )
        return table.astype(int).rename(columns=BY_DISTANCE_COLUMNS)

    def grouped(self) -> pd.DataFrame:
        """Grouped now, farthest first: the first to drop out with fewer bits."""
        return self.pairs[self.pairs["counted"].astype(bool)].sort_values("distance", ascending=False, kind="stable")

    def outside(self) -> pd.DataFrame:
        """Alike on pixels but not grouped, nearest first: the first that more bits would add."""
        alike = self.pairs["verified"].astype(bool) & ~self.pairs["counted"].astype(bool)
        return self.pairs[alike].sort_values("distance", kind="stable")

    def to_dict(self) -> dict[str, object]:
        """The ``borderline`` object of ``dedup --json``."""
        return {
            "threshold": self.threshold,
            "low": self.low,
            "high": self.high,
            "changes": [{"threshold": t, "pairs": n} for t, n in self.changes().items()],
            "by_distance": [
                {"bits": int(r[0]), "candidate_pairs": int(r[1]), "verified": int(r[2]), "grouped_now": int(r[3])}
                for r in self.by_distance().itertuples(index=False)
            ],
            "pairs": [
                {
                    "files": [r.path_a, r.path_b],
                    "labels": [r.label_a, r.label_b],
                    "distance": int(r.distance),
                    "correlation": round(float(r.correlation), 3),
                    "verified": bool(r.verified),
                    "grouped_now": bool(r.counted),
                }
                for r in self.pairs.itertuples()
            ],  # fmt: skip
        }

    def text_line(self) -> str:
        """One line for the command line: what one bit less and one or two bits more would change."""
        if self.pairs.empty:
            return f"borderline: no pair within {self.margin} bits of the threshold ({self.threshold})"
        changes = ", ".join(f"at {t} bits {n:+d} pair{'s' * (abs(n) != 1)}" for t, n in self.changes().items())
        return f"borderline ({len(self.pairs)} pairs {self.low} to {self.high} bits apart): {changes}"
