"""Scaling: honest workers-vs-time tables from stored runs (speedup, efficiency, serial fraction, an Amdahl
fit), and the sweeps that fill the run store with their points.

May import: core.common, core.images, core.datasets, core.store, core.dedup, core.train.
"""
