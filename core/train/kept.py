"""Per-image results kept over a whole pass (predictions, scores), in one growing buffer, not a tensor per batch.

Why: a small tensor kept from every batch lands in the holes the batch's large, short-lived tensors leave in the
C library's heap, so the next batch finds no hole large enough and takes fresh memory. In a thread other than the
main one (a training job runs in one) that memory was never used again: keeping the predictions of 30,000 test
images (LeNet, 64 px, batches of 128) grew the process by 1.7 GB; with one buffer that doubles when full, by
137 MB. One epoch of 200,000 images at 64 px (``bench.bench_scale``, whose test pass keeps 30,000) peaked at
3,105-3,425 MB before, 1,691-2,177 MB after.
"""

from __future__ import annotations

import torch

FIRST_ROWS = 4096


class KeptRows:
    """Rows (along dimension 0) of every batch, concatenated in order: ``add`` each batch's, then ``tensor()``."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None
        self._n = 0

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.detach().cpu()
        end = self._n + len(rows)
        if self._buffer is None or end > len(self._buffer):
            self._grow(rows, end)
        assert self._buffer is not None
        self._buffer[self._n : end] = rows
        self._n = end

    def _grow(self, rows: torch.Tensor, end: int) -> None:
        size = max(end, FIRST_ROWS, 2 * (len(self._buffer) if self._buffer is not None else 0))
        grown = torch.empty((size, *rows.shape[1:]), dtype=rows.dtype)
        if self._buffer is not None and self._n:
            grown[: self._n] = self._buffer[: self._n]
        self._buffer = grown

    def tensor(self) -> torch.Tensor | None:
        """Everything added, in order (a view of the buffer); None when nothing was."""
        return None if self._buffer is None else self._buffer[: self._n]
