"""Foundations every stage uses: the error vocabulary, the workspace and its confinement check, the core
budget, natural ordering of labels, atomic writes and the per-file cache rule.

Imports nothing else from core. Light: no torch, no pandas at import time (``filecache`` imports pandas).
"""
