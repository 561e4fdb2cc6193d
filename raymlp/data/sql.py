"""Tables in SQL databases: read them into Arrow, write Arrow into them atomically."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
import pyarrow as pa

from raymlp.errors import UsageError, WorkFailed


def engine_for(url: str):
    """A SQLAlchemy engine; a clear error (without the password) for a bad URL or missing driver."""
    import sqlalchemy as sa
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from raymlp.catalog import redact_url, with_installed_driver

    try:
        engine = sa.create_engine(with_installed_driver(sa.engine.make_url(url)))
    except (ArgumentError, NoSuchModuleError, ImportError) as error:
        raise UsageError(f"database URL {redact_url(url)} is not usable: {error}") from None
    if engine.dialect.name == "sqlite":
        _make_sqlite_ddl_transactional(engine)
    return engine


def _make_sqlite_ddl_transactional(engine) -> None:
    """pysqlite commits before DDL on its own; begin transactions ourselves (SQLAlchemy's documented recipe)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN")


def read_sql(url: str, *, query: str | None = None, table: str | None = None) -> pa.Table:
    """Every row of a query or table."""
    import sqlalchemy as sa

    from raymlp.catalog import redact_url

    engine = engine_for(url)
    try:
        with engine.connect() as connection:
            declared: dict[str, Any] = {}
            if table is not None:
                if not sa.inspect(connection).has_table(table):
                    raise sa.exc.NoSuchTableError(table)
                declared = {column["name"]: column["type"] for column in sa.inspect(connection).get_columns(table)}
                # Plain SQL, not a reflected Table: the driver's own values (floats stay floats).
                selectable = sa.text(f"SELECT * FROM {engine.dialect.identifier_preparer.quote(table)}")
            else:
                selectable = sa.text(query)
            if engine.dialect.name == "postgresql":
                fast = _read_postgres_copy(connection, str(selectable))
                if fast is not None:
                    return fast
            result = connection.execute(selectable)
            names = list(result.keys())
            rows = result.fetchall()
    except sa.exc.NoSuchTableError:
        raise WorkFailed(f"table '{table}' does not exist in {redact_url(url)}") from None
    except sa.exc.SQLAlchemyError as error:
        raise WorkFailed(f"reading from {redact_url(url)} failed: {error.__class__.__name__}: {error.orig or error}") from None
    finally:
        engine.dispose()
    columns = {name: [row[index] for row in rows] for index, name in enumerate(names)}
    result = pa.table(columns) if rows else pa.table({name: pa.array([], pa.null()) for name in names})
    return _restore_declared_types(result, declared)


#: PostgreSQL type OIDs that COPY's CSV text turns back into the same values through pyarrow.
_POSTGRES_ARROW_TYPES = {
    16: pa.bool_(), 20: pa.int64(), 21: pa.int64(), 23: pa.int64(), 700: pa.float64(), 701: pa.float64(),
    25: pa.string(), 1042: pa.string(), 1043: pa.string(), 1082: pa.date32(), 1114: pa.timestamp("us"),
}


def _read_postgres_copy(connection, select: str) -> pa.Table | None:
    """Rows of `select` through one `COPY (...) TO STDOUT` in CSV, typed by the result's column
    types; None when a column has a type this path does not carry exactly (the caller then
    fetches rows through the driver)."""
    import io

    import pyarrow.csv as pacsv

    select = select.strip().rstrip(";")
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(f"SELECT * FROM ({select}) AS raymlp_source LIMIT 0")
        columns = [(column[0], _POSTGRES_ARROW_TYPES.get(column[1])) for column in cursor.description]
        names = [name for name, _ in columns]
        if any(kind is None for _, kind in columns) or len(set(names)) != len(names):
            return None
        buffer = io.BytesIO()
        statement = f"COPY ({select}) TO STDOUT WITH (FORMAT csv, HEADER)"
        if hasattr(cursor, "copy_expert"):  # psycopg2
            cursor.copy_expert(statement, buffer, size=1 << 20)
        else:  # psycopg 3
            with cursor.copy(statement) as copy:
                for chunk in copy:
                    buffer.write(chunk)
    finally:
        cursor.close()
    buffer.seek(0)
    return pacsv.read_csv(
        buffer,
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
        convert_options=pacsv.ConvertOptions(
            column_types=dict(columns), strings_can_be_null=True, quoted_strings_can_be_null=False,
            true_values=["t"], false_values=["f"],
        ),
    )


def _is_boolean(kind: Any) -> bool:
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
        elif _is_boolean(kind) and not pa.types.is_boolean(column.type):
            target = pa.bool_()
        if target is not None and not pa.types.is_null(column.type):
            table = table.set_column(index, name, column.cast(target))
    return table


@dataclass(frozen=True)
class WrittenTable:
    """A table written by `write_table`."""

    table: str
    rows: int
    column_types: dict[str, str]


def _sql_type(arrow_type: pa.DataType):
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
    raise UsageError(f"cannot store Arrow type {arrow_type} in a database column; supported: bool, int, float, date, timestamp, decimal, string")


def write_table(url: str, name: str, table: pa.Table, mode: str, batch_rows: int = 50_000) -> WrittenTable:
    """Write `table` into database table `name` so that it appears complete or not at all.

    Rows go into a staging table; in one transaction the staging table then replaces the
    target (replace), is appended to it (append), or becomes it (fail, when it does not exist).
    """
    import sqlalchemy as sa

    from raymlp.catalog import redact_url

    engine = engine_for(url)
    staging_name = f"_raymlp_stage_{uuid.uuid4().hex[:12]}"
    metadata = sa.MetaData()
    columns = [sa.Column(field.name, _sql_type(field.type), nullable=True) for field in table.schema]
    staging = sa.Table(staging_name, metadata, *columns)
    column_types = {column.name: str(column.type.compile(dialect=engine.dialect)) for column in columns}
    preparer = engine.dialect.identifier_preparer
    target_sql, staging_sql = preparer.quote(name), preparer.quote(staging_name)
    try:
        with engine.connect() as connection:
            exists = sa.inspect(connection).has_table(name)
            existing = [column["name"] for column in sa.inspect(connection).get_columns(name)] if exists else []
        if exists and mode == "fail":
            raise WorkFailed(f"table '{name}' already exists in {redact_url(url)}; set data.collect.mode to append or replace")
        if exists and mode == "append" and existing != table.schema.names:
            raise WorkFailed(f"cannot append to '{name}': its columns are {existing}, the source has {table.schema.names}")
        # MariaDB/MySQL commit DDL implicitly: the staging table is dropped by hand if anything fails.
        with engine.begin() as connection:
            staging.create(connection)
            _bulk_load(connection, staging, staging_sql, table, batch_rows)
            if exists and mode == "append":
                connection.execute(sa.text(f"INSERT INTO {target_sql} SELECT * FROM {staging_sql}"))
                connection.execute(sa.text(f"DROP TABLE {staging_sql}"))
            elif exists and engine.dialect.name in ("mysql", "mariadb"):
                retired = preparer.quote(f"_raymlp_old_{uuid.uuid4().hex[:12]}")
                connection.execute(sa.text(f"RENAME TABLE {target_sql} TO {retired}, {staging_sql} TO {target_sql}"))
                connection.execute(sa.text(f"DROP TABLE {retired}"))
            else:
                if exists:
                    connection.execute(sa.text(f"DROP TABLE {target_sql}"))
                connection.execute(sa.text(f"ALTER TABLE {staging_sql} RENAME TO {target_sql}"))
    except sa.exc.SQLAlchemyError as error:
        _drop_quietly(engine, staging_sql)
        raise WorkFailed(f"writing table '{name}' to {redact_url(url)} failed: {error.__class__.__name__}: {getattr(error, 'orig', None) or error}") from None
    except BaseException:
        _drop_quietly(engine, staging_sql)
        raise
    finally:
        engine.dispose()
    return WrittenTable(table=name, rows=table.num_rows, column_types=column_types)




def _drop_quietly(engine, quoted_table: str) -> None:
    import sqlalchemy as sa

    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {quoted_table}"))
    except sa.exc.SQLAlchemyError:
        pass


class _CsvStream:
    """A read-only file of CSV bytes for COPY ... FROM STDIN, serialised from Arrow batches on a
    producer thread (pyarrow releases the GIL) while the database consumes the previous chunk.
    The queue is bounded, so memory stays at a few chunks whatever the table's size."""

    def __init__(self, table: pa.Table, batch_rows: int, depth: int = 4):
        import queue
        import threading

        self._chunks: queue.Queue = queue.Queue(maxsize=depth)
        self._buffer = memoryview(b"")
        self._error: BaseException | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(table, batch_rows), daemon=True)
        self._thread.start()

    def _produce(self, table: pa.Table, batch_rows: int) -> None:
        import io

        import pyarrow.csv as pacsv

        try:
            for batch in table.to_batches(max_chunksize=batch_rows):
                if self._stopped.is_set():
                    return
                sink = io.BytesIO()
                pacsv.write_csv(batch, sink, pacsv.WriteOptions(include_header=False))
                self._chunks.put(sink.getvalue())
        except BaseException as error:  # handed to the reading side
            self._error = error
        finally:
            self._chunks.put(None)

    def read(self, size: int = -1) -> bytes:
        while not self._buffer:
            chunk = self._chunks.get()
            if chunk is None:
                self._chunks.put(None)
                if self._error is not None:
                    raise self._error
                return b""
            self._buffer = memoryview(chunk)
        size = len(self._buffer) if size is None or size < 0 else size
        piece, self._buffer = self._buffer[:size], self._buffer[size:]
        return bytes(piece)

    def close(self) -> None:
        self._stopped.set()
        while self._thread.is_alive():
            try:
                self._chunks.get_nowait()
            except Exception:  # empty: the producer is between chunks
                self._thread.join(timeout=0.05)


def _bulk_load(connection, staging, staging_sql: str, table: pa.Table, batch_rows: int) -> None:
    """Rows into the staging table by the database's fast path, inside the caller's transaction.

    PostgreSQL: one COPY ... FROM STDIN in CSV, streamed (pyarrow writes null as an empty field
    and an empty string as ""; exactly COPY's CSV rules). Others: executemany of parameterised
    INSERTs.
    """
    if connection.dialect.name == "postgresql":
        columns = ", ".join(connection.dialect.identifier_preparer.quote(name) for name in table.column_names)
        statement = f"COPY {staging_sql} ({columns}) FROM STDIN WITH (FORMAT csv)"
        stream = _CsvStream(table, batch_rows)
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            if hasattr(cursor, "copy_expert"):  # psycopg2
                cursor.copy_expert(statement, stream, size=1 << 20)
            else:  # psycopg 3
                with cursor.copy(statement) as copy:
                    while chunk := stream.read(1 << 20):
                        copy.write(chunk)
        finally:
            cursor.close()
            stream.close()
        return
    for batch in table.to_batches(max_chunksize=batch_rows):
        records = batch.to_pylist()
        if records:
            connection.execute(staging.insert(), records)
