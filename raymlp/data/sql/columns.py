"""Column types between a database and Arrow: the types a table declares, rows as a typed Arrow table, the SQL type of an Arrow type."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from raymlp.errors import UsageError


def declared_types(connection, table: str) -> dict[str, Any]:
    """Column name -> SQLAlchemy type of an existing table (NoSuchTableError when it is missing)."""
    import sqlalchemy as sa

    inspector = sa.inspect(connection)
    if not inspector.has_table(table):
        raise sa.exc.NoSuchTableError(table)
    return {column["name"]: column["type"] for column in inspector.get_columns(table)}


def table_from_rows(names: list[str], rows: list, declared: dict[str, Any]) -> pa.Table:
    """Rows fetched through the driver as an Arrow table, typed as the database declares them."""
    columns = {}
    for index, name in enumerate(names):
        values = [row[index] for row in rows]
        if any(isinstance(value, memoryview) for value in values):  # psycopg2 returns bytea as memoryview
            values = [bytes(value) if isinstance(value, memoryview) else value for value in values]
        columns[name] = values
    result = pa.table(columns) if rows else pa.table({name: pa.array([], pa.null()) for name in names})
    return _restore_declared_types(result, declared)


def is_boolean(kind: Any) -> bool:
    """A boolean column, including MySQL/MariaDB's BOOLEAN, which is TINYINT(1)."""
    import sqlalchemy as sa

    return isinstance(kind, sa.Boolean) or (
        type(kind).__name__ == "TINYINT" and getattr(kind, "display_width", None) == 1
    )


def _restore_declared_types(table: pa.Table, declared: dict[str, Any]) -> pa.Table:
    """Cast columns back to the type the database declares where the driver returned text or 0/1
    (SQLite keeps dates as text; MySQL has no boolean)."""
    import sqlalchemy as sa

    for index, name in enumerate(table.column_names):
        kind = declared.get(name)
        column = table.column(index)
        target = None
        if isinstance(kind, sa.DateTime) and not pa.types.is_timestamp(column.type):
            target = pa.timestamp("us")
        elif isinstance(kind, sa.Date) and not isinstance(kind, sa.DateTime) and not pa.types.is_date(column.type):
            target = pa.date32()
        elif is_boolean(kind) and not pa.types.is_boolean(column.type):
            target = pa.bool_()
        if target is not None and not pa.types.is_null(column.type):
            table = table.set_column(index, name, column.cast(target))
    return table


def sql_column_type(arrow_type: pa.DataType):
    import sqlalchemy as sa

    if pa.types.is_boolean(arrow_type):
        return sa.Boolean()
    if pa.types.is_integer(arrow_type):
        return sa.BigInteger()
    if pa.types.is_floating(arrow_type):
        return sa.Double()
    if pa.types.is_date(arrow_type):
        return sa.Date()
    if pa.types.is_timestamp(arrow_type):
        from sqlalchemy.dialects import mysql

        # MySQL/MariaDB DATETIME keeps whole seconds unless asked for microseconds.
        return sa.DateTime(timezone=arrow_type.tz is not None).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    if pa.types.is_decimal(arrow_type):
        return sa.Numeric(arrow_type.precision, arrow_type.scale)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_null(arrow_type):
        return sa.Text()
    if is_binary(arrow_type):
        from sqlalchemy.dialects import mysql

        # BYTEA, BLOB; MySQL/MariaDB's BLOB stops at 64 KiB, LONGBLOB at 4 GiB.
        return sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
    raise UsageError(
        f"cannot store Arrow type {arrow_type} in a database column; "
        "supported: bool, int, float, date, timestamp, decimal, string, binary"
    )


def is_binary(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_fixed_size_binary(arrow_type)
    )
