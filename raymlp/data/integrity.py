"""File hashes and the order-independent content digest of a table."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

_ROW_HASH_KEYS = ("raymlp-digest-k1", "raymlp-digest-k2")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (local or in a bucket), read without ever opening it for writing."""
    from raymlp.storage import files

    return files.sha256_of(path)


def files_sha256(paths: list[str] | list[Path]) -> dict[str, str]:
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


# A null's word is 0, its mixed word then flipped by a different tag in each half of the row hash:
# no value can match a null in both halves.
_NULL_TAGS = (np.uint64(0x6E756C6C6E756C6C), np.uint64(0x4E554C4C4E554C4C))
_CANONICAL_NAN = np.float64("nan").view(np.uint64)
_MASK64 = (1 << 64) - 1


def _mix(words: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, in place (`scratch` is a same-sized buffer): every input bit
    affects every output bit."""
    for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        np.right_shift(words, np.uint64(shift), out=scratch)
        words ^= scratch
        words *= np.uint64(multiplier)
    np.right_shift(words, np.uint64(31), out=scratch)
    words ^= scratch
    return words


def _value_words(column: pa.Array) -> np.ndarray:
    """One 64-bit word per value that depends only on the value (never on the array's layout),
    except that floats are their raw bits here. May be a read-only view of the column."""
    import pandas as pd
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = column.type
    if pa.types.is_null(kind):  # no values at all: every word is a null's
        return np.zeros(len(column), dtype=np.uint64)
    if pa.types.is_decimal(kind):
        column, kind = column.cast(pa.string()), pa.string()
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        encoded = pc.dictionary_encode(column)
        indices = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)
        tag = b"s:" if pa.types.is_string(kind) else b"b:"
        values = np.array(
            [
                tag + (value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value)
                for value in encoded.dictionary.to_numpy(zero_copy_only=False)
            ],
            dtype=object,
        )
        if not len(values):  # every value is null
            return np.zeros(len(column), dtype=np.uint64)
        return pd.util.hash_array(values, hash_key=_ROW_HASH_KEYS[0], categorize=False)[indices]
    if pa.types.is_boolean(kind):
        return column.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint64)
    if pa.types.is_floating(kind):  # bits of float64; `row_hash_sum` folds -0.0 and NaNs
        column = column.cast(pa.float64())
    elif pa.types.is_integer(kind):
        column = column.cast(pa.int64())
    elif pa.types.is_temporal(kind):  # days, or units since the epoch (the unit is in the schema)
        column = column.view(pa.int32() if kind.bit_width == 32 else pa.int64()).cast(pa.int64())
    else:
        column = None
    if column is not None:
        if column.null_count:
            column = column.fill_null(0)
        return column.to_numpy(zero_copy_only=False).view(np.uint64)
    # lists, structs, ...: pandas hashes their Python values
    frame = pa.table({"v": column}).to_pandas(integer_object_nulls=True, date_as_object=True)
    return pd.util.hash_pandas_object(frame, index=False, hash_key=_ROW_HASH_KEYS[0]).to_numpy(dtype=np.uint64).copy()


_BLOCK_ROWS = 32768  # rows hashed at a time: the working arrays stay in the CPU cache


def row_hash_sum(table: pa.Table) -> int:
    """Sum, mod 2**128, of each row's 128-bit hash.

    Each value becomes a mixed 64-bit word keyed by its column's position (so equal values in
    swapped columns hash apart); a row's two 64-bit halves are two different combinations of its
    words (a sum and a weighted sum), each mixed again.
    """
    if not table.num_columns or not table.num_rows:
        return 0
    columns = []
    for position, chunked in enumerate(table.columns):
        column = chunked.combine_chunks()
        words = _value_words(column)
        nulls = None
        if column.null_count:
            nulls = ~column.is_valid().to_numpy(zero_copy_only=False)
            words = np.where(nulls, np.uint64(0), words)  # whatever stood in a null's slot, its word is 0
        columns.append(
            (
                words,
                nulls,
                pa.types.is_floating(column.type),
                np.uint64(((position + 1) * 0x9E3779B97F4A7C15) & _MASK64),
                np.uint64((2 * position + 1) * 0x100000001B3 & _MASK64),
            )
        )
    block = min(_BLOCK_ROWS, table.num_rows)
    plain, weighted, word, scratch = (np.empty(block, dtype=np.uint64) for _ in range(4))
    numbers = word.view(np.float64)
    lane_keys = (np.uint64(0xE7037ED1A0B428DB), np.uint64(0xA0761D6478BD642F))
    low_sums, high_sums = [0, 0], [0, 0]
    for start in range(0, table.num_rows, block):
        size = min(block, table.num_rows - start)
        plain_view, weighted_view, word_view, scratch_view = plain[:size], weighted[:size], word[:size], scratch[:size]
        plain_view.fill(0)
        weighted_view.fill(0)
        for words, nulls, is_float, key, weight in columns:
            if is_float:  # one word for 0.0 and -0.0, and one for every NaN (null words are not NaN)
                numbers_view = numbers[:size]
                np.add(words[start : start + size].view(np.float64), 0.0, out=numbers_view)
                numbers_view[np.isnan(numbers_view)] = _CANONICAL_NAN.view(np.float64)
                word_view ^= key
            else:
                np.bitwise_xor(words[start : start + size], key, out=word_view)
            _mix(word_view, scratch_view)
            null_view = None if nulls is None else nulls[start : start + size]
            if null_view is not None:
                word_view[null_view] ^= _NULL_TAGS[0]
            plain_view += word_view
            if null_view is not None:
                word_view[null_view] ^= _NULL_TAGS[0] ^ _NULL_TAGS[1]
            np.multiply(word_view, weight, out=scratch_view)
            weighted_view += scratch_view
        for lane, row_hashes in enumerate((plain_view, weighted_view)):
            row_hashes ^= lane_keys[lane]
            _mix(row_hashes, scratch_view)
            np.bitwise_and(row_hashes, np.uint64(0xFFFFFFFF), out=scratch_view)
            low_sums[lane] += int(scratch_view.sum(dtype=np.uint64))
            np.right_shift(row_hashes, np.uint64(32), out=scratch_view)
            high_sums[lane] += int(scratch_view.sum(dtype=np.uint64))
    # 32-bit limbs summed per block cannot overflow; Python ints do the carries.
    total = sum((low_sums[lane] + (high_sums[lane] << 32)) << (64 * lane) for lane in range(2))
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
        self._sum = (self._sum + row_hash_sum(table)) % (1 << 128)

    def add_sum(self, rows: int, hash_sum: int) -> None:
        """Fold in a piece digested elsewhere: its row count and `row_hash_sum` (of canonical types)."""
        self.rows += rows
        self._sum = (self._sum + hash_sum) % (1 << 128)

    def hexdigest(self) -> str:
        digest = hashlib.sha256()
        digest.update(schema_fingerprint(self.schema).encode())
        digest.update(self.rows.to_bytes(8, "little"))
        digest.update(self._sum.to_bytes(16, "little"))
        return "sha256:" + digest.hexdigest()


def plain_types(table: pa.Table) -> pa.Table:
    """Large string and dictionary columns stored as plain strings, so versions compare by content."""
    fields = []
    for field in table.schema:
        if pa.types.is_large_string(field.type) or pa.types.is_dictionary(field.type):
            fields.append(field.with_type(pa.string()))
        else:
            fields.append(field)
    schema = pa.schema(fields)
    return table if schema.equals(table.schema) else table.cast(schema)


def content_digest(table: pa.Table) -> str:
    """Digest of the rows of `table` that ignores row order, file boundaries and type spelling.

    sha256 over the canonical schema, the row count and the sum (mod 2**128) of 128-bit row
    hashes: a multiset digest (a duplicated row changes it) that `ContentDigest` can build from
    chunks or shards in any order.
    """
    digest = ContentDigest(table.schema)
    digest.add(table)
    return digest.hexdigest()
