"""PostgreSQL's fast path out: `COPY ... TO STDOUT` in CSV, read whole or streamed as chunks of whole records."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa

from raymlp.errors import WorkFailed

from .columns import declared_types
from .engine import engine_for, raw_quote, read_errors

#: PostgreSQL type OIDs that COPY's CSV text turns back into the same values through pyarrow
#: (bytea, 17, arrives as `\x` + hex text and is decoded after the read).
_POSTGRES_ARROW_TYPES = {
    16: pa.bool_(),
    17: pa.string(),
    20: pa.int64(),
    21: pa.int64(),
    23: pa.int64(),
    700: pa.float64(),
    701: pa.float64(),
    25: pa.string(),
    1042: pa.string(),
    1043: pa.string(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
}
_BYTEA = 17


def read_postgres_copy(connection, select: str) -> pa.Table | None:
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
        binary = [column[0] for column in cursor.description if column[1] == _BYTEA]
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
    table = pacsv.read_csv(
        buffer,
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
        # A one-column row holding NULL is an empty line: a row, not a gap.
        parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(
            column_types=dict(columns),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    for name in binary:
        index = table.column_names.index(name)
        decoded = [None if text is None else bytes.fromhex(text[2:]) for text in table.column(index).to_pylist()]
        table = table.set_column(index, name, pa.array(decoded, pa.binary()))
    return table


@dataclass
class CopyStream:
    """A PostgreSQL `COPY ... TO STDOUT` in CSV, as whole-record chunks while it arrives."""

    names: list[str]
    column_types: dict[str, pa.DataType]
    chunks: Iterator[bytes]


#: CSV spellings of PostgreSQL's booleans in COPY output.
POSTGRES_BOOLEANS = (["t"], ["f"])


@contextmanager
def postgres_copy_stream(
    url: str, *, table: str | None = None, query: str | None = None, chunk_bytes: int = 16 << 20
) -> Iterator[CopyStream | None]:
    """The rows of a table or query as CSV chunks of whole records (no header), received on a
    thread while the caller works on earlier chunks; None when this path cannot carry the rows
    exactly (not PostgreSQL, a type without an exact CSV form, bytea, or a single column, whose
    NULL rows are empty lines).

    psycopg2 hands COPY's output to `write` once per row. The rows go into an OS pipe through a
    buffered file, which is C all the way (a Python `write` per row cost a fifth of the convert,
    and its thread fought the parsers for the GIL); the caller's side reads the pipe in chunks
    and cuts each after its last whole record. The pipe and its buffers bound memory.
    """
    import threading

    engine = engine_for(url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        yield None
        return
    connection = cursor = producer = reader = None
    failure: list[BaseException] = []
    try:
        with read_errors(url, table, engine):  # the caller's own work below is not "reading" failures
            connection = engine.connect()
            if table is not None:
                declared_types(connection, table)
                select = f"SELECT * FROM {raw_quote(engine.dialect, table)}"
            else:
                select = str(query).strip().rstrip(";")
            cursor = connection.connection.dbapi_connection.cursor()
            cursor.execute(f"SELECT * FROM ({select}) AS raymlp_source LIMIT 0")
            columns = [(column[0], _POSTGRES_ARROW_TYPES.get(column[1])) for column in cursor.description]
        names = [name for name, _ in columns]
        exact = all(kind is not None for _, kind in columns) and all(
            column[1] != _BYTEA for column in cursor.description
        )  # bytea arrives as hex text
        if not exact or len(names) < 2 or len(set(names)) != len(names) or not hasattr(cursor, "copy_expert"):
            yield None
            return
        reader, writer = _pipe()

        def produce() -> None:
            try:
                with writer:
                    cursor.copy_expert(f"COPY ({select}) TO STDOUT WITH (FORMAT csv)", writer, size=1 << 20)
            except BaseException as error:  # handed to the consumer, which raises it
                failure.append(error)

        producer = threading.Thread(target=produce, name="raymlp-copy-out", daemon=True)
        producer.start()
        yield CopyStream(
            names=names, column_types=dict(columns), chunks=_whole_records(reader, chunk_bytes, failure, producer, url)
        )
    finally:
        if reader is not None:
            reader.close()  # a COPY still writing gets a broken pipe and stops
        if producer is not None:
            producer.join()
        if cursor is not None:
            cursor.close()
        if connection is not None:
            connection.close()
        engine.dispose()


def _pipe():
    """An OS pipe as (reader, writer) files, the pipe itself grown to 1 MiB where Linux allows."""
    import fcntl
    import os

    read_end, write_end = os.pipe()
    grow = getattr(fcntl, "F_SETPIPE_SZ", None)
    if grow is not None:
        try:
            fcntl.fcntl(write_end, grow, 1 << 20)
        except OSError:  # above /proc/sys/fs/pipe-max-size: keep the default
            pass
    return open(read_end, "rb", buffering=1 << 20), open(write_end, "wb", buffering=1 << 20)


def _whole_records(reader, chunk_bytes: int, failure: list[BaseException], producer, url: str) -> Iterator[bytes]:
    """About `chunk_bytes` at a time from the pipe, each cut after its last whole record; the
    COPY's failure raised here, in the consumer, once the pipe is drained."""
    from raymlp.catalog import redact_url

    carried = b""
    while True:
        block = reader.read(chunk_bytes)
        data = carried + block if carried else block
        if not block:
            break
        cut = _after_last_record(data)
        if cut:
            yield data[:cut]
        carried = data[cut:]
    producer.join()
    if failure:
        error = failure[0]
        if isinstance(error, WorkFailed) or not isinstance(error, Exception):
            raise error
        raise WorkFailed(f"reading from {redact_url(url)} failed: {type(error).__name__}: {error}".strip())
    if data:
        yield data  # a last record without a newline


def _after_last_record(data: bytes) -> int:
    """Where the last whole CSV record in `data` ends (0: none does). `data` starts at a record;
    a newline ends a record when an even number of quote characters stands before it."""
    end = data.rfind(b"\n")
    if end < 0:
        return 0
    odd = data.count(b'"', 0, end) % 2
    while odd:
        earlier = data.rfind(b"\n", 0, end)
        if earlier < 0:
            return 0
        odd ^= data.count(b'"', earlier, end) % 2
        end = earlier
    return end + 1
