"""Shuffled training batches from a Ray Data shard, drawn in torch on the training thread.

Ray Data's `local_shuffle_buffer_size` draws every batch out of its Arrow buffer on its prefetch
thread: about half a millisecond of Python per batch, which holds the GIL while the training step
wants it (a 20-feature MLP step on one core takes about 0.7 ms). Here Ray Data hands over whole
blocks in order and the same local shuffle is done with torch indexing on the training thread:
the same buffer generations, the same permutations (numpy's `default_rng(seed)`, drawn as Ray
draws them), so the same rows land in the same batches as with Ray's own local shuffle.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Ray Data's ShufflingBatcher constants: a new buffer generation when at most half the minimum
# is left; batches are held back until the buffer holds 1.5 times the minimum.
_YIELD_FRACTION = 0.5
_COMPACTION_RATIO = 1.5


def shuffled_batches(
    blocks: Any, batch_size: int, buffer_rows: int, seed: int | None, device: Any = None
) -> Iterator[dict[str, Any]]:
    """Batches of `batch_size` rows (the last one may be smaller) from `blocks`, an iterable of
    dicts of equally long tensors (`iter_torch_batches(batch_size=None)`), shuffled in a local
    buffer of at least `buffer_rows` rows exactly as `local_shuffle_buffer_size=buffer_rows,
    local_shuffle_seed=seed` shuffles them."""
    import numpy as np
    import torch

    minimum = max(buffer_rows, batch_size)
    yield_from = max(1, int(minimum * _YIELD_FRACTION))
    compact_from = int(minimum * _COMPACTION_RATIO)
    rng = np.random.default_rng(seed)
    pending: list[dict[str, Any]] = []
    pending_rows = 0
    pool: dict[str, Any] = {}
    order: Any = None
    head = 0

    def left() -> int:
        return 0 if order is None else len(order) - head

    def new_generation() -> None:
        nonlocal pool, order, head, pending, pending_rows
        parts = list(pending)
        if left():
            rest = order[head:]
            parts.append({name: column[rest] for name, column in pool.items()})
        pool = {
            name: parts[0][name] if len(parts) == 1 else torch.cat([part[name] for part in parts]) for name in parts[0]
        }
        order = torch.from_numpy(rng.permutation(len(next(iter(pool.values())))).astype(np.int64, copy=False))
        head, pending, pending_rows = 0, [], 0

    def take() -> dict[str, Any]:
        nonlocal head
        index = order[head : head + batch_size]
        head += len(index)
        return {name: column[index] if device is None else column[index].to(device) for name, column in pool.items()}

    for block in blocks:
        rows = len(next(iter(block.values()))) if block else 0
        if rows == 0:
            continue
        pending.append(block)
        pending_rows += rows
        while left() + pending_rows >= batch_size and (
            left() >= yield_from or left() + pending_rows - batch_size >= compact_from
        ):
            if pending_rows and left() <= yield_from:
                new_generation()
            yield take()
    while left() + pending_rows:
        if pending_rows:
            new_generation()
        yield take()
