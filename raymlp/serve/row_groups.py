"""Local Parquet files read by Ray Data in tasks of whole row groups (or slices of one).

Ray Data's own Parquet reader makes one read task per file and splits its output into blocks
afterwards: that task keeps its CPU until the scoring downstream has taken every block, so on a
small machine a one-file input was scored on one CPU while the read held the other. Reading row
groups in separate tasks instead lets Ray Data fuse each read with its scoring (one task reads a
slice and scores it) and spread the slices over every CPU. Imported only where Ray Data is.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

#: Most files planned this way; more go to Ray Data's own reader (their footers would be read
#: one by one here, in the driver).
MAX_FILES = 64


@dataclass(frozen=True)
class Slice:
    """Rows [start, stop) of the row groups `groups` of `path`, read together (a slice of one group
    where `groups` has one and the group holds more rows)."""

    path: str
    groups: tuple[int, ...]
    start: int
    stop: int
    size_bytes: int


def plan_slices(files: list[str], rows_per_read: int, reads_wanted: int) -> list[Slice] | None:
    """Reads of about `rows_per_read` rows each, never spanning files: consecutive whole row groups,
    or slices of a row group where there are fewer groups than `reads_wanted`. None where the
    footers cannot be read (Ray Data's reader then says why) or there are no rows."""
    try:
        footers = [(path, pq.ParquetFile(path).metadata) for path in files]
    except Exception:  # not Parquet after all, or unreadable
        return None
    groups = [
        (path, index, meta.row_group(index).num_rows, meta.row_group(index).total_byte_size)
        for path, meta in footers
        for index in range(meta.num_row_groups)
    ]
    groups = [group for group in groups if group[2] > 0]
    if not groups:
        return None
    slices: list[Slice] = []
    if len(groups) < reads_wanted:
        pieces = math.ceil(reads_wanted / len(groups))
        for path, index, rows, size in groups:
            step = max(math.ceil(rows / pieces), 1)
            slices += [
                Slice(path, (index,), start, min(rows, start + step), size * min(step, rows - start) // rows)
                for start in range(0, rows, step)
            ]
        return slices
    pending: list[tuple[str, int, int, int]] = []

    def close() -> None:
        if pending:
            rows = sum(group[2] for group in pending)
            slices.append(
                Slice(pending[0][0], tuple(group[1] for group in pending), 0, rows, sum(group[3] for group in pending))
            )
            pending.clear()

    for group in groups:
        if pending and (group[0] != pending[0][0] or sum(g[2] for g in pending) + group[2] > rows_per_read):
            close()
        pending.append(group)
    close()
    return slices


def _read(slice_: Slice) -> Iterable[pa.Table]:
    table = pq.ParquetFile(slice_.path).read_row_groups(list(slice_.groups))
    yield table.slice(slice_.start, slice_.stop - slice_.start)  # zero-copy; all of it for whole groups


class RowGroupDatasource(Datasource):
    """One read task per planned `Slice`, in order."""

    def __init__(self, slices: list[Slice]):
        self._slices = slices
        self._schema = pq.read_schema(slices[0].path)

    def estimate_inmemory_data_size(self) -> int:
        return sum(slice_.size_bytes for slice_ in self._slices)

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context=None
    ) -> list[ReadTask]:
        return [
            ReadTask(
                functools.partial(_read, slice_),
                BlockMetadata(
                    num_rows=slice_.stop - slice_.start,
                    size_bytes=int(slice_.size_bytes),
                    exec_stats=None,
                    input_files=(slice_.path,),
                ),
                schema=self._schema,
                per_task_row_limit=per_task_row_limit,
            )
            for slice_ in self._slices
        ]

    def get_name(self) -> str:
        return "ParquetRowGroups"
