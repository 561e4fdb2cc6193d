"""A materialised Ray Dataset's blocks handed to training workers by reference.

Each worker reads its share of the train split (and all of the validation split) straight from
Ray's object store once, when its training function starts, and keeps it for every epoch: no
per-epoch execution and no split coordinator between the worker and its rows. The torch backend
uses it instead of `get_dataset_shard` (why: DESIGN.md, "Feeding the torch workers").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SharedBlocks:
    """The Arrow blocks of a materialised dataset (`refs`, in order) and their row counts."""

    refs: tuple[Any, ...]
    rows: tuple[int, ...]

    @classmethod
    def of(cls, dataset: Any) -> SharedBlocks:
        """The blocks of a materialised Ray Dataset of Arrow blocks (no task runs: the references are
        the dataset's own; counting rows maps the local blocks without copying them)."""
        import ray

        refs = tuple(dataset.to_arrow_refs())
        return cls(refs=refs, rows=tuple(int(table.num_rows) for table in ray.get(list(refs))))

    @property
    def total_rows(self) -> int:
        return sum(self.rows)

    def shard(self, rank: int, world: int) -> list[Any]:
        """Worker `rank`'s equal share of `world`: rows [rank × n, (rank + 1) × n) of the blocks in
        order, n = total // world, as Arrow tables (slices of the blocks, not copies). The rows left
        over are left out, as Ray Data's `streaming_split(equal=True)` leaves them out, so every
        worker takes the same number of steps an epoch (DDP needs that)."""
        each = self.total_rows // world
        return self._rows_between(rank * each, (rank + 1) * each)

    def whole(self) -> list[Any]:
        return self._rows_between(0, self.total_rows)

    def _rows_between(self, start: int, end: int) -> list[Any]:
        import ray

        tables, offset = [], 0
        for ref, rows in zip(self.refs, self.rows):
            low, high = max(start, offset), min(end, offset + rows)
            if low < high:
                tables.append(ray.get(ref).slice(low - offset, high - low))
            offset += rows
        return tables


def torch_columns(table: Any, dtypes: dict[str, Any]) -> dict[str, Any]:
    """The `dtypes` columns of an Arrow block as CPU tensors, converted as Ray Data's
    `iter_torch_batches` converts them (tensor columns become [rows, ...] tensors); zero-copy where
    the dtype already matches, so the tensors share the object store's read-only memory (nothing
    here writes to them: batches are gathered into new tensors)."""
    import warnings

    import torch
    from ray.data.block import BlockAccessor

    batch = BlockAccessor.for_block(table).to_batch_format("numpy")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return {name: torch.as_tensor(batch[name], dtype=dtype) for name, dtype in dtypes.items()}
