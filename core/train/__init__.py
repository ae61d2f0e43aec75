"""Training: the configuration and its validation, architectures and weights, data preparation (splits,
the decoded tensor cache, batches), optimizers and schedules, the epoch loop, the resumable run and its
checkpoints, the background job registry, and a training run end to end in the run store.

May import: core.common, core.images, core.datasets, core.store.
"""
