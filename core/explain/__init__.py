"""What a model sees and says: CAM heat maps (fast path), overlays, prediction for images and the HTTP
endpoint.

May import: core.common, core.images, core.datasets, core.store, core.train.
"""
