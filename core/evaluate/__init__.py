"""How good a trained model is, where it fails and why: metrics from a run's stored per-image predictions, the
leakage-honest score (test photos with a copy in train counted apart), the mistakes, and a report to hand over.

May import: core.common, core.images, core.datasets, core.store, core.dedup, core.train, core.explain.
"""
