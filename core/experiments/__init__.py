"""Experiments over many runs: comparing them side by side, searching training settings (grid or random, with
successive halving, on Optuna), and the tables and records that tie a search's trials together.

May import: core.common, core.images, core.datasets, core.store, core.dedup, core.train, core.explain, core.evaluate.
"""
