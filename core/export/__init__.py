"""Taking a trained run out of the studio: ONNX and TorchScript files with the studio's own preprocessing written
down, golden images that prove the copy answers like the studio, a standalone ``predict.py`` and a demo page that
classifies in a browser without Python.

May import: core.common, core.images, core.datasets, core.store, core.train, core.explain, core.evaluate.
"""
