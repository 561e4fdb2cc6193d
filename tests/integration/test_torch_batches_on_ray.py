"""The torch backend's local shuffle draws exactly the batches Ray Data's own local shuffle buffer
draws from the same blocks: the change is where the work runs, not what training sees."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

pytestmark = [pytest.mark.integration]


@pytest.mark.parametrize(
    "sizes, batch_size, buffer_rows, seed",
    [
        ([1000, 7, 300, 2500, 1, 64], 16, 128, 3),
        ([5000, 5000], 100, 800, 1),
        ([30] * 50, 8, 1024, 5),
        ([100_000], 512, 4096, 7),
    ],
)
def test_same_batches_as_ray_datas_local_shuffle(ray_4_cpus, sizes, batch_size, buffer_rows, seed):
    import ray.data
    import torch

    from raymlp.train.torch_batches import shuffled_batches

    starts = np.cumsum([0, *sizes])
    blocks = [pa.table({"y": np.arange(start, start + size)}) for start, size in zip(starts, sizes)]
    dataset = (
        ray.data.from_arrow(blocks)
        .map_batches(
            lambda batch: {"x": np.repeat(batch["y"].astype(np.float32)[:, None], 3, axis=1), "y": batch["y"]},
            batch_size=None,
        )
        .materialize()
    )
    theirs = list(
        dataset.iter_torch_batches(
            batch_size=batch_size, local_shuffle_buffer_size=buffer_rows, local_shuffle_seed=seed
        )
    )
    ours = list(shuffled_batches(dataset.iter_torch_batches(batch_size=None), batch_size, buffer_rows, seed))
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs):
        assert torch.equal(mine["y"], reference["y"]) and torch.equal(mine["x"], reference["x"])
