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


def content_digest(table: pa.Table) -> str:
    """Digest of the rows of `table` that ignores row order, file boundaries and type spelling.

    Each row gets a 128-bit hash (two keyed 64-bit hashes of its values); the sorted row hashes,
    the row count and the canonical schema are hashed with sha256.
    """
    import pandas as pd

    table = canonical(table)
    frame = table.to_pandas(types_mapper=None, integer_object_nulls=True, date_as_object=True)
    if len(frame.columns):
        frame.columns = [str(index) for index in range(len(frame.columns))]
        halves = [
            pd.util.hash_pandas_object(frame, index=False, hash_key=key).to_numpy(dtype=np.uint64)
            for key in _ROW_HASH_KEYS
        ]
        order = np.lexsort((halves[1], halves[0]))
        rows = np.stack([halves[0][order], halves[1][order]], axis=1)
    else:
        rows = np.zeros((table.num_rows, 2), dtype=np.uint64)
    digest = hashlib.sha256()
    digest.update(schema_fingerprint(table.schema).encode())
    digest.update(table.num_rows.to_bytes(8, "little"))
    digest.update(np.ascontiguousarray(rows).tobytes())
    return "sha256:" + digest.hexdigest()
