"""Foundations every stage uses: the error vocabulary, the workspace and its confinement check, the core
budget and torch thread count, natural ordering of labels, atomic writes and the per-file cache rule.

May import: nothing else from core. Light at import time: no torch (``cpu.set_torch_threads`` imports it
when called).
"""
