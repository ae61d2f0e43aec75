"""core.train.kept: per-batch rows gathered into one growing buffer, in order, whatever the batch sizes."""

from __future__ import annotations

import torch

from core.train import kept
from core.train.kept import KeptRows


def test_rows_come_back_in_order_across_growth() -> None:
    rows = KeptRows()
    assert rows.tensor() is None
    batches = [torch.rand(n, 4) for n in (kept.FIRST_ROWS - 1, 3, 1, 2 * kept.FIRST_ROWS)]  # grows twice
    for batch in batches:
        rows.add(batch)
    torch.testing.assert_close(rows.tensor(), torch.cat(batches), rtol=0, atol=0)


def test_one_value_per_image_and_integer_rows() -> None:
    labels = KeptRows()
    for start in range(0, 10, 4):
        labels.add(torch.arange(start, min(start + 4, 10)))
    assert labels.tensor().tolist() == list(range(10))
    assert labels.tensor().dtype == torch.int64
