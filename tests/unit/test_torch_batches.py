"""The torch backend's local shuffle (no Ray): every row once per pass, full batches, seeded order."""

from __future__ import annotations

import pytest
import torch

from raymlp.train.torch_batches import shuffled_batches


def _blocks(sizes: list[int]) -> list[dict]:
    blocks, start = [], 0
    for size in sizes:
        rows = torch.arange(start, start + size)
        blocks.append({"x": rows.float().unsqueeze(1).repeat(1, 3), "y": rows})
        start += size
    return blocks


@pytest.mark.parametrize(
    "sizes, batch_size, buffer_rows",
    [
        ([1000, 7, 0, 300, 2500, 1], 16, 128),
        ([400], 512, 4096),
        ([30] * 50, 8, 1024),
        ([3, 3, 3], 4, 1024),
    ],
)
def test_every_row_once_in_full_batches_but_the_last(sizes, batch_size, buffer_rows):
    batches = list(shuffled_batches(_blocks(sizes), batch_size, buffer_rows, seed=3))
    rows = torch.cat([batch["y"] for batch in batches])
    assert sorted(rows.tolist()) == list(range(sum(sizes)))
    assert [len(batch["y"]) for batch in batches[:-1]] == [batch_size] * (len(batches) - 1)
    assert len(batches) == -(-sum(sizes) // batch_size)
    for batch in batches:  # columns stay aligned row by row
        assert torch.equal(batch["x"][:, 0], batch["y"].float())


def test_the_seed_fixes_the_order_and_rows_mix_across_blocks():
    def order(seed):
        return torch.cat([batch["y"] for batch in shuffled_batches(_blocks([100] * 10), 10, 200, seed)]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)
    first = next(iter(shuffled_batches(_blocks([100] * 10), 50, 200, seed=1)))["y"]
    assert len({int(row) // 100 for row in first}) > 1  # the buffer spans blocks before the first batch


def test_no_blocks_no_batches():
    assert list(shuffled_batches(iter([]), 8, 64, seed=0)) == []
