"""Pieces of JSON-lines files parsed so that no record is lost: a line that is not a JSON object
becomes a quarantine row with its line and the reason."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from .csvfile import ParsedCsv, malformed_records, physical_lines


def _read(data: bytes, column_types: dict[str, pa.DataType] | None) -> pa.Table:
    from pyarrow import json as pajson

    schema = pa.schema(list(column_types.items())) if column_types else None
    return pajson.read_json(
        pa.BufferReader(data),
        read_options=pajson.ReadOptions(use_threads=False, block_size=min(max(len(data) + 1, 1 << 20), 1 << 30)),
        parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
    )


def _read_typed_else_inferred(data: bytes, column_types: dict[str, pa.DataType] | None) -> pa.Table:
    if column_types:
        try:
            return _read(data, column_types)
        except pa.ArrowInvalid:
            pass
    return _read(data, None)


def parse_json_range(
    data: bytes, source: str, column_types: dict[str, pa.DataType] | None = None, lines: int | None = None
) -> ParsedCsv:
    """Every line of `data` (whole lines of a JSON-lines file) as a good row or a malformed one.
    Lines are counted from 1 at the start of `data`; blank lines hold no record."""
    try:
        table = _read_typed_else_inferred(data, column_types)
    except pa.ArrowInvalid:
        table = None
    if table is not None and (physical_lines(data) if lines is None else lines) == table.num_rows:
        return ParsedCsv(table=table, lines=np.arange(1, table.num_rows + 1), malformed=None)
    good: list[bytes] = []
    good_lines: list[int] = []  # (`lines`, the parameter, is the count)
    bad_lines: list[int] = []
    reasons: list[str] = []
    texts: list[str] = []
    raws: list[bytes] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        reason = None
        try:
            value = json.loads(line)
            if not isinstance(value, dict):
                reason = f"a JSON {type(value).__name__}, not an object"
        except UnicodeDecodeError:
            reason = "not valid UTF-8"
        except ValueError as error:
            reason = f"not valid JSON: {error}"
        if reason:
            bad_lines.append(number)
            reasons.append(reason)
            texts.append(line.decode("utf-8", "replace"))
            raws.append(line)
        else:
            good.append(line)
            good_lines.append(number)
    table = _read_typed_else_inferred(b"\n".join(good) + b"\n", column_types) if good else pa.table({})
    return ParsedCsv(
        table=table,
        lines=np.asarray(good_lines, dtype=np.int64),
        malformed=malformed_records(source, bad_lines, reasons, texts, raws),
    )
