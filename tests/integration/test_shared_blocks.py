"""SharedBlocks: the torch workers' equal shares of a materialised dataset's blocks."""

from __future__ import annotations

import numpy as np
import pytest


def _dataset(sizes: list[int]):
    import ray.data
    from ray.data.block import BlockAccessor

    start, tables = 0, []
    for size in sizes:
        rows = np.arange(start, start + size)
        tables.append(
            BlockAccessor.batch_to_block(
                {"__features__": np.stack([rows, -rows], axis=1).astype(np.float32), "__label__": rows.astype(np.int64)}
            )
        )
        start += size
    return ray.data.from_arrow(tables)


@pytest.mark.parametrize("sizes", [[10], [3, 7, 5], [4, 4], [1, 0, 9, 2]])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_worker_gets_the_same_number_of_rows_in_order_and_none_twice(ray_4_cpus, sizes, world):
    import torch

    from raymlp.train.shared_blocks import SharedBlocks, torch_columns

    blocks = SharedBlocks.of(_dataset(sizes))
    assert blocks.total_rows == sum(sizes)
    each = sum(sizes) // world
    seen = []
    for rank in range(world):
        tensors = [
            torch_columns(table, {"__features__": torch.float32, "__label__": torch.long})
            for table in blocks.shard(rank, world)
        ]
        labels = torch.cat([part["__label__"] for part in tensors]).tolist()
        features = torch.cat([part["__features__"] for part in tensors])
        assert labels == list(range(rank * each, (rank + 1) * each))  # consecutive rows, equal counts
        assert (
            features.shape == (each, 2)
            and features[:, 0].tolist() == labels
            and features[:, 1].tolist() == [-x for x in labels]
        )
        seen += labels
    assert len(set(seen)) == len(seen) == each * world  # the remainder (fewer than `world` rows) is left out
    assert [int(x) for part in blocks.whole() for x in part.column("__label__").to_pylist()] == list(range(sum(sizes)))
