"""The summed-area table the cascade reads every crop and pyramid level from: exact box sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.detection.summed_area import ROW_BLOCK, SummedArea, as_tensor


@pytest.mark.parametrize("height", [1, ROW_BLOCK - 2, ROW_BLOCK - 1, ROW_BLOCK, 2 * ROW_BLOCK + 5])
def test_the_table_is_the_cumulative_sum_down_and_across(height: int) -> None:
    """Rows are summed in blocks with a carry: block edges must not show in the table."""
    rng = np.random.default_rng(height)
    image = rng.integers(0, 256, size=(height, 37, 3), dtype=np.uint8)
    table = SummedArea(as_tensor(image))._table
    expected = np.zeros((height + 1, 38, 3), dtype=np.int64)
    expected[1:, 1:] = image.astype(np.int64).cumsum(0).cumsum(1)
    assert torch.equal(table.to(torch.int64), torch.from_numpy(expected))
