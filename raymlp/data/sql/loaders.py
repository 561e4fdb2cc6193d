"""Rows into a staging table by each database's fast path: PostgreSQL COPY FROM STDIN, MySQL/MariaDB LOAD DATA LOCAL INFILE, executemany elsewhere."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pyarrow as pa

from raymlp.errors import WorkFailed

from .columns import is_binary
from .engine import raw_quote


def _hex(column, prefix: str = "") -> pa.Array:
    """Binary values as hex text (`prefix` first); nulls stay null."""
    values = column.to_pylist()
    return pa.array([None if value is None else prefix + value.hex() for value in values], pa.string())


def _postgres_csv_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Binary columns as bytea's hex input (`\\x...`); everything else as pyarrow writes it."""
    if not any(is_binary(field.type) for field in batch.schema):
        return batch
    columns = [_hex(column, "\\x") if is_binary(column.type) else column for column in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


@dataclass
class LoadPiece:
    """Rows to load into a table; with `csv_text`, the CSV lines they were parsed from (fields in
    the order of `csv_columns`), one record per line, which COPY may read as they are instead
    of the rows being written out as CSV again."""

    table: pa.Table
    csv_text: bytes | None = None
    csv_columns: list[str] = dataclasses.field(default_factory=list)
    delimiter: str = ","
    rejects: pa.Table | None = None  # malformed records of the same source piece (quarantine columns)


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
                pacsv.write_csv(_postgres_csv_batch(batch), sink, pacsv.WriteOptions(include_header=False))
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


def bulk_load(connection, staging, staging_sql: str, piece: LoadPiece, batch_rows: int) -> str:
    """Rows into the staging table by the database's fast path, inside the caller's transaction;
    returns the path taken.

    PostgreSQL: one COPY ... FROM STDIN in CSV, of the piece's own CSV text where it has one, else
    streamed (pyarrow writes null as an empty field and an empty string as ""; exactly COPY's CSV
    rules; bytea as hex). MySQL/MariaDB: one LOAD DATA LOCAL INFILE from a temporary CSV when the
    server allows it, else multi-row INSERTs. SQLite and others: executemany of one prepared
    INSERT over large batches of plain tuples.
    """
    import io

    table = piece.table
    name = connection.dialect.name
    if name == "postgresql":
        text = piece.csv_text is not None
        names = piece.csv_columns if text else table.column_names
        columns = ", ".join(raw_quote(connection.dialect, column) for column in names)
        delimiter = "'" + piece.delimiter.replace("'", "''") + "'"
        statement = f"COPY {staging_sql} ({columns}) FROM STDIN WITH (FORMAT csv, DELIMITER {delimiter})"
        stream = io.BytesIO(piece.csv_text) if piece.csv_text is not None else _CsvStream(table, batch_rows)
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
        return "COPY FROM STDIN" + (" of the source's CSV lines" if text else "")
    if name in ("mysql", "mariadb"):
        refused = _mysql_load_data(connection, staging_sql, table, batch_rows)
        if refused is None:
            return "LOAD DATA LOCAL INFILE"
        _insert_rows(connection, staging, staging_sql, table, batch_rows)
        return f"multi-row INSERT (LOAD DATA LOCAL INFILE refused: {refused})"
    _insert_rows(connection, staging, staging_sql, table, max(batch_rows, 100_000))
    return "executemany"


def _insert_rows(connection, staging, staging_sql: str, table: pa.Table, batch_rows: int) -> None:
    """executemany of one INSERT over batches of tuples built column by column (no per-row dicts).

    pymysql and mysqlclient turn it into multi-row INSERT statements; sqlite3 reuses one prepared
    statement. Values are what SQLAlchemy's bind processors would send (SQLite dates and
    timestamps as its ISO text, formatted by Arrow).
    """
    dialect = connection.dialect
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
    if mark is None:  # a driver with another parameter style: SQLAlchemy's own executemany
        for batch in table.to_batches(max_chunksize=batch_rows):
            if batch.num_rows:
                connection.execute(staging.insert(), batch.to_pylist())
        return
    statement = f"INSERT INTO {staging_sql} VALUES ({', '.join([mark] * table.num_columns)})"
    processors = [column.type.dialect_impl(dialect).bind_processor(dialect) for column in staging.columns]
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        for batch in table.to_batches(max_chunksize=batch_rows):
            if not batch.num_rows:
                continue
            columns = [
                _driver_values(column, processor, dialect.name) for column, processor in zip(batch.columns, processors)
            ]
            cursor.executemany(statement, list(zip(*columns)))
    finally:
        cursor.close()


def _driver_values(column: pa.Array, processor, dialect_name: str) -> list:
    """One column as the Python values the driver is given."""
    import pyarrow.compute as pc

    if dialect_name == "sqlite":  # SQLAlchemy's SQLite storage formats, computed by Arrow
        if pa.types.is_date(column.type):
            return pc.strftime(column, format="%Y-%m-%d").to_pylist()
        if pa.types.is_timestamp(column.type) and column.type.unit == "us":
            return pc.strftime(column, format="%Y-%m-%d %H:%M:%S").to_pylist()  # %S carries the microseconds
        if pa.types.is_boolean(column.type) or pa.types.is_floating(column.type):
            return column.to_pylist()  # sqlite3 stores bool as 1/0 and floats as they are
    values = column.to_pylist()
    if processor is not None:
        values = [processor(value) for value in values]
    return values


#: Errors of a server or client that does not allow LOAD DATA LOCAL INFILE.
_LOCAL_INFILE_REFUSED = {1148, 2068, 3948, 3950}


def _mysql_load_data(connection, staging_sql: str, table: pa.Table, batch_rows: int) -> str | None:
    """LOAD DATA LOCAL INFILE of a temporary CSV into the staging table; None when done, else why
    the server or client refused it (nothing was loaded; the caller inserts instead).

    Every value is written as quoted text: strings with each backslash doubled, NULL as `\\N`
    (read as NULL also when quoted), booleans as 1/0, binary as hex loaded through UNHEX. The
    server turns a value it cannot store exactly into a warning (LOCAL makes errors warnings),
    so any warning, or a row count that differs, fails the load.
    """
    import os
    import tempfile

    import pyarrow.csv as pacsv

    cursor = connection.connection.dbapi_connection.cursor()
    try:
        if not _server_allows_local_infile(cursor):
            return "the server has local_infile=OFF"
        preparer = connection.dialect.identifier_preparer  # doubles %: the statement below is %-formatted
        targets, assignments = [], []
        for index, field in enumerate(table.schema):
            if is_binary(field.type):
                targets.append(f"@raymlp_{index}")
                assignments.append(f"{preparer.quote(field.name)} = UNHEX(@raymlp_{index})")
            else:
                targets.append(preparer.quote(field.name))
        handle, path = tempfile.mkstemp(prefix="raymlp-load-", suffix=".csv")
        try:
            with os.fdopen(handle, "wb") as sink:
                writer = None
                for batch in table.to_batches(max_chunksize=batch_rows):
                    text = _mysql_text_batch(batch)
                    if writer is None:
                        writer = pacsv.CSVWriter(
                            sink, text.schema, write_options=pacsv.WriteOptions(include_header=False)
                        )
                    writer.write_batch(text)
                if writer is not None:
                    writer.close()
            statement = (
                f"LOAD DATA LOCAL INFILE %s INTO TABLE {staging_sql} CHARACTER SET utf8mb4 "
                "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
                f"({', '.join(targets)})" + (f" SET {', '.join(assignments)}" if assignments else "")
            )
            try:
                cursor.execute(statement, (path,))
            except connection.dialect.dbapi.OperationalError as error:
                code = error.args[0] if error.args else None
                if code in _LOCAL_INFILE_REFUSED:
                    return f"{code}: {error.args[1] if len(error.args) > 1 else error}"
                raise
            loaded = cursor.rowcount
        finally:
            os.unlink(path)
        cursor.execute("SELECT @@warning_count")
        warnings = int(cursor.fetchone()[0] or 0)
        if warnings:
            cursor.execute("SHOW WARNINGS LIMIT 5")
            shown = "; ".join(f"{row[2]}" for row in cursor.fetchall())
            raise WorkFailed(
                f"LOAD DATA reported {warnings} warning(s) (values the table cannot hold exactly); first: {shown}"
            )
        if loaded != table.num_rows:
            raise WorkFailed(f"LOAD DATA loaded {loaded} rows of {table.num_rows}")
        return None
    finally:
        cursor.close()


def _server_allows_local_infile(cursor) -> bool:
    cursor.execute("SELECT @@GLOBAL.local_infile")
    return bool(int(cursor.fetchone()[0] or 0))


def _mysql_text_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Every column as the text LOAD DATA reads back exactly (see `_mysql_load_data`)."""
    import pyarrow.compute as pc

    null = "\\N"
    columns = []
    for column in batch.columns:
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            text = pc.replace_substring(column.cast(pa.string()), "\\", "\\\\")
        elif pa.types.is_boolean(kind):
            text = pc.if_else(column, "1", "0")
        elif pa.types.is_floating(kind):
            text = column.cast(pa.float64()).cast(pa.string())  # shortest text that reads back the same double
        elif pa.types.is_timestamp(kind):
            text = pc.strftime(column, format="%Y-%m-%d %H:%M:%S")  # %S carries the fraction of the unit
        elif is_binary(kind):
            text = _hex(column)
        elif pa.types.is_null(kind):
            text = pa.nulls(len(column), pa.string())
        else:  # integers, decimals, dates: Arrow's text is MySQL's
            text = column.cast(pa.string())
        columns.append(text.fill_null(null))
    return pa.RecordBatch.from_arrays(columns, names=[f"c{index}" for index in range(len(columns))])
