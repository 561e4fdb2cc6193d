"""File hashes and the order-independent content digest of a table."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

_CHUNK = 4 * 1024 * 1024
_ROW_HASH_KEYS = ("raymlp-digest-k1", "raymlp-digest-k2")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read without ever opening it for writing."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_sha256(paths: list[Path]) -> dict[str, str]:
    """sha256 of each file, keyed by path."""
    return {str(path): file_sha256(path) for path in paths}


def schema_fingerprint(schema: pa.Schema) -> str:
    """Column names and types in order, as text."""
    return ";".join(f"{field.name}:{field.type}" for field in schema)


def _canonical_type(arrow_type: pa.DataType) -> pa.DataType:
    """One spelling per kind of value, so the same rows digest alike in files and databases."""
    if pa.types.is_dictionary(arrow_type):
        return _canonical_type(arrow_type.value_type)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return pa.string()
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return pa.binary()
    if pa.types.is_integer(arrow_type):
        return pa.int64()
    if pa.types.is_floating(arrow_type):
        return pa.float64()
    if pa.types.is_timestamp(arrow_type):
        return pa.timestamp("us", tz=arrow_type.tz)
    if pa.types.is_date(arrow_type):
        return pa.date32()
    return arrow_type


def canonical(table: pa.Table) -> pa.Table:
    """`table` with canonical column types (see `_canonical_type`)."""
    schema = pa.schema([field.with_type(_canonical_type(field.type)) for field in table.schema])
    return table if schema.equals(table.schema) else table.cast(schema)


def _row_hash_sum(table: pa.Table) -> int:
    """Sum, mod 2**128, of each row's 128-bit hash (two keyed 64-bit pandas hashes of its values)."""
    import pandas as pd

    if not table.num_columns or not table.num_rows:
        return 0
    frame = table.to_pandas(integer_object_nulls=True, date_as_object=True)
    frame.columns = [str(index) for index in range(len(frame.columns))]
    total = 0
    for position, key in enumerate(_ROW_HASH_KEYS):
        hashes = pd.util.hash_pandas_object(frame, index=False, hash_key=key).to_numpy(dtype=np.uint64)
        low, high = hashes & np.uint64(0xFFFFFFFF), hashes >> np.uint64(32)
        # 32-bit limbs summed in 64 bits cannot overflow below 2**32 rows; Python ints do the carries.
        total += (int(low.sum(dtype=np.uint64)) + (int(high.sum(dtype=np.uint64)) << 32)) << (64 * position)
    return total % (1 << 128)


class ContentDigest:
    """An order-independent digest built chunk by chunk: `add` tables in any order and split."""

    def __init__(self, schema: pa.Schema):
        self.schema = pa.schema([field.with_type(_canonical_type(field.type)) for field in schema])
        self.rows = 0
        self._sum = 0

    def add(self, table: pa.Table) -> None:
        table = canonical(table)
        self.rows += table.num_rows
        self._sum = (self._sum + _row_hash_sum(table)) % (1 << 128)

    def hexdigest(self) -> str:
        digest = hashlib.sha256()
        digest.update(schema_fingerprint(self.schema).encode())
        digest.update(self.rows.to_bytes(8, "little"))
        digest.update(self._sum.to_bytes(16, "little"))
        return "sha256:" + digest.hexdigest()


def content_digest(table: pa.Table) -> str:
    """Digest of the rows of `table` that ignores row order, file boundaries and type spelling.

    sha256 over the canonical schema, the row count and the sum (mod 2**128) of 128-bit row
    hashes: a multiset digest (a duplicated row changes it) that `ContentDigest` can build from
    chunks or shards in any order.
    """
    digest = ContentDigest(table.schema)
    digest.add(table)
    return digest.hexdigest()
