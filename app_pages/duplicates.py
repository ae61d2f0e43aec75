"""Duplicates (planned): exact and near-duplicate groups, label conflicts, train/val/test leakage."""

from ui.common import placeholder

placeholder("Duplicates", "issue 4", [
    "Exact duplicates (same pixels) and near duplicates (perceptual hashes: pHash, dHash, wHash, aHash).",
    "Groups shown side by side with labels, splits and distance; label conflicts and train/val/test leaks flagged.",
    "Resolution policies (keep one, prefer the known label, drop conflicts, move leaks) that write a cleaned copy.",
    "Data quality: very dark or bright, blurry, almost one colour, odd sizes and aspect ratios.",
])  # fmt: skip
