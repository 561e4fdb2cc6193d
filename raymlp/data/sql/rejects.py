"""A collect's malformed records: the `<table>__rejects` table beside the table, its columns and rows, and reading it back."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .engine import engine_for, read_errors

#: A collect's malformed records live in `<table>__rejects`, written in the same transaction as the table.
REJECTS_SUFFIX = "__rejects"
#: The rejects table's columns, and the quarantine columns they hold (file, line, reason, text, raw bytes).
REJECTS_COLUMNS = {
    "file": "_raymlp_source",
    "line": "_raymlp_row",
    "reason": "_raymlp_reason",
    "text": "_raymlp_text",
    "raw": "_raymlp_raw",
}


def rejects_table_name(table: str) -> str:
    return table + REJECTS_SUFFIX


def rejects_columns():
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    long_text = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")  # MySQL's TEXT stops at 64 KiB
    return [
        sa.Column("file", long_text),
        sa.Column("line", sa.BigInteger()),
        sa.Column("reason", long_text),
        sa.Column("text", long_text),
        sa.Column("raw", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")),
    ]


def rejects_rows(malformed: pa.Table) -> pa.Table:
    """Quarantine rows of malformed records as the rejects table's rows (PostgreSQL text cannot hold NUL)."""
    import pyarrow.compute as pc

    columns = []
    for name, quarantine_name in REJECTS_COLUMNS.items():
        kind = {"line": pa.int64(), "raw": pa.binary()}.get(name, pa.string())
        column = (
            malformed.column(quarantine_name).cast(kind)
            if quarantine_name in malformed.column_names
            else pa.nulls(malformed.num_rows, kind)
        )
        if name == "text":
            column = pc.replace_substring(column, "\x00", "\ufffd")
        columns.append(column)
    return pa.table(columns, names=list(REJECTS_COLUMNS))


def read_rejects(url: str, table: str) -> pa.Table | None:
    """The malformed records a collect kept beside `table` (as quarantine rows, in file and line
    order), or None when the table has no rejects table."""
    import sqlalchemy as sa

    name = rejects_table_name(table)
    engine = engine_for(url)
    try:
        with read_errors(url, name, engine), engine.connect() as connection:
            if not sa.inspect(connection).has_table(name):
                return None
            quote = engine.dialect.identifier_preparer.quote
            file, line, reason, text, raw = (quote(column) for column in REJECTS_COLUMNS)
            result = connection.execute(
                sa.text(f"SELECT {file}, {line}, {reason}, {text}, {raw} FROM {quote(name)} ORDER BY {file}, {line}")
            )
            rows = result.fetchall()
    finally:
        engine.dispose()
    values: list[Any] = list(zip(*rows)) or [()] * len(REJECTS_COLUMNS)
    kinds = [pa.string(), pa.int64(), pa.string(), pa.string(), pa.binary()]
    values[4] = [None if value is None else bytes(value) for value in values[4]]  # memoryview from some drivers
    return pa.table(
        [pa.array(list(column), kind) for column, kind in zip(values, kinds)], names=list(REJECTS_COLUMNS.values())
    )
