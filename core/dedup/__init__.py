"""Duplicates and data quality: fingerprints per image (cached), the Hamming search, pixel-verified groups
with label conflicts and train/val/test leakage, cleaning policies that write a cleaned copy, quality checks.

May import: core.common, core.images, core.datasets.
"""
