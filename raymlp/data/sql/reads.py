"""Reading a table or query into one Arrow table: COPY on PostgreSQL, the driver's rows elsewhere, shards when asked."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .columns import declared_types, table_from_rows
from .engine import engine_for, raw_quote, read_errors
from .postgres_copy import read_postgres_copy
from .shards import read_shards


def read_sql(
    url: str,
    *,
    query: str | None = None,
    table: str | None = None,
    shard_key: str | None = None,
    shards: int = 1,
    where: str = "data.source.sql",
) -> pa.Table:
    """Every row of a query or table; with `shard_key`, read as parallel key ranges (`iter_sql_shards`).

    `where` is the job key the source came from, named in errors.
    """
    if shard_key is not None:
        pieces = sorted(
            read_shards(url, query=query, table=table, shard_key=shard_key, shards=shards, where=where),
            key=lambda piece: piece[0],
        )
        return pa.concat_tables([piece for _, piece in pieces], promote_options="permissive")
    import sqlalchemy as sa

    engine = engine_for(url)
    try:
        with read_errors(url, table, engine), engine.connect() as connection:
            declared: dict[str, Any] = {}
            selectable: Any
            raw_select: Any
            if table is not None:
                declared = declared_types(connection, table)
                # Plain SQL, not a reflected Table: the driver's own values (floats stay floats).
                selectable = sa.text(f"SELECT * FROM {engine.dialect.identifier_preparer.quote(table)}")
                raw_select = f"SELECT * FROM {raw_quote(engine.dialect, table)}"
            else:
                selectable = raw_select = query  # sent as written: a ':name' in a literal is text, not a parameter
            if engine.dialect.name == "postgresql":
                fast = read_postgres_copy(connection, str(raw_select))
                if fast is not None:
                    return fast
            if table is not None:
                result = connection.execute(selectable)
                names, rows = list(result.keys()), result.fetchall()
            else:  # the driver's own cursor, no parameters: nothing in the text is taken for one
                cursor = connection.connection.dbapi_connection.cursor()
                try:
                    cursor.execute(selectable)
                    names, rows = [column[0] for column in cursor.description], cursor.fetchall()
                finally:
                    cursor.close()
    finally:
        engine.dispose()
    return table_from_rows(names, rows, declared)
