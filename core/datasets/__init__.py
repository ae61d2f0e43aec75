"""Datasets as the studio sees them: which dataset a user means (``DatasetRef``, every format and the
built-in samples), listing its files, the scan into a manifest with its cache, and what the Datasets page
shows of it (balance, sizes, thumbnails, PCA/t-SNE maps).

May import: core.common, core.images.
"""
