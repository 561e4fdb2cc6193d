"""Tables in SQL databases: read them into Arrow, write Arrow into them atomically."""

from __future__ import annotations

import datetime
import itertools
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
import dataclasses
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from raymlp.errors import UsageError, WorkFailed


def engine_for(url: str, *, bulk_load: bool = False, **options: Any):
    """A SQLAlchemy engine; a clear error (without the password) for a bad URL or missing driver.

    `bulk_load` lets a MySQL/MariaDB client send `LOAD DATA LOCAL INFILE` files (only engines
    that write a staging table ask for it: with it, the server may ask the client for a file).
    """
    import sqlalchemy as sa
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from raymlp.catalog import redact_url, with_installed_driver

    try:
        parsed = with_installed_driver(sa.engine.make_url(url))
        if bulk_load and parsed.get_backend_name() in ("mysql", "mariadb"):
            options = {**options, "connect_args": {**options.get("connect_args", {}), "local_infile": True}}
        engine = sa.create_engine(parsed, **options)
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
        pieces = sorted(_read_shards(url, query=query, table=table, shard_key=shard_key, shards=shards, where=where),
                        key=lambda piece: piece[0])
        return pa.concat_tables([piece for _, piece in pieces], promote_options="permissive")
    import sqlalchemy as sa

    engine = engine_for(url)
    try:
        with _read_errors(url, table, engine), engine.connect() as connection:
            declared: dict[str, Any] = {}
            if table is not None:
                declared = _declared_types(connection, table)
                # Plain SQL, not a reflected Table: the driver's own values (floats stay floats).
                selectable = sa.text(f"SELECT * FROM {engine.dialect.identifier_preparer.quote(table)}")
                raw_select = f"SELECT * FROM {raw_quote(engine.dialect, table)}"
            else:
                selectable = raw_select = query  # sent as written: a ':name' in a literal is text, not a parameter
            if engine.dialect.name == "postgresql":
                fast = _read_postgres_copy(connection, str(raw_select))
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
    return _table_from_rows(names, rows, declared)


@contextmanager
def _read_errors(url: str, table: str | None, engine) -> Iterator[None]:
    """Failures while reading `url` as one WorkFailed naming the (redacted) URL: SQLAlchemy's, and
    those the driver's own cursor raises (queries, COPY)."""
    import sqlalchemy as sa

    from raymlp.catalog import redact_url

    try:
        yield
    except sa.exc.NoSuchTableError:
        raise WorkFailed(f"table '{table}' does not exist in {redact_url(url)}") from None
    except sa.exc.SQLAlchemyError as error:
        raise WorkFailed(f"reading from {redact_url(url)} failed: {error.__class__.__name__}: {error.orig or error}") from None
    except engine.dialect.loaded_dbapi.Error as error:
        raise WorkFailed(f"reading from {redact_url(url)} failed: {type(error).__name__}: {error}".strip()) from None


def raw_quote(dialect, name: str) -> str:
    """`name` quoted for a statement the driver sends as it is (COPY on a raw cursor).

    The dialect's identifier preparer doubles % for drivers that %-format every statement
    SQLAlchemy hands them (psycopg, pymysql); a raw statement must have them single.
    """
    quoted = dialect.identifier_preparer.quote(name)
    return quoted.replace("%%", "%") if dialect.paramstyle in ("format", "pyformat") else quoted


def _declared_types(connection, table: str) -> dict[str, Any]:
    """Column name -> SQLAlchemy type of an existing table (NoSuchTableError when it is missing)."""
    import sqlalchemy as sa

    inspector = sa.inspect(connection)
    if not inspector.has_table(table):
        raise sa.exc.NoSuchTableError(table)
    return {column["name"]: column["type"] for column in inspector.get_columns(table)}


def _table_from_rows(names: list[str], rows: list, declared: dict[str, Any]) -> pa.Table:
    """Rows fetched through the driver as an Arrow table, typed as the database declares them."""
    columns = {}
    for index, name in enumerate(names):
        values = [row[index] for row in rows]
        if any(isinstance(value, memoryview) for value in values):  # psycopg2 returns bytea as memoryview
            values = [bytes(value) if isinstance(value, memoryview) else value for value in values]
        columns[name] = values
    result = pa.table(columns) if rows else pa.table({name: pa.array([], pa.null()) for name in names})
    return _restore_declared_types(result, declared)


#: PostgreSQL type OIDs that COPY's CSV text turns back into the same values through pyarrow
#: (bytea, 17, arrives as `\x` + hex text and is decoded after the read).
_POSTGRES_ARROW_TYPES = {
    16: pa.bool_(), 17: pa.string(), 20: pa.int64(), 21: pa.int64(), 23: pa.int64(), 700: pa.float64(),
    701: pa.float64(), 25: pa.string(), 1042: pa.string(), 1043: pa.string(), 1082: pa.date32(),
    1114: pa.timestamp("us"),
}
_BYTEA = 17


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
            column_types=dict(columns), strings_can_be_null=True, quoted_strings_can_be_null=False,
            true_values=["t"], false_values=["f"],
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
def postgres_copy_stream(url: str, *, table: str | None = None, query: str | None = None,
                         chunk_bytes: int = 16 << 20) -> Iterator[CopyStream | None]:
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
        with _read_errors(url, table, engine):  # the caller's own work below is not "reading" failures
            connection = engine.connect()
            if table is not None:
                _declared_types(connection, table)
                select = f"SELECT * FROM {raw_quote(engine.dialect, table)}"
            else:
                select = str(query).strip().rstrip(";")
            cursor = connection.connection.dbapi_connection.cursor()
            cursor.execute(f"SELECT * FROM ({select}) AS raymlp_source LIMIT 0")
            columns = [(column[0], _POSTGRES_ARROW_TYPES.get(column[1])) for column in cursor.description]
        names = [name for name, _ in columns]
        exact = all(kind is not None for _, kind in columns) and all(
            column[1] != _BYTEA for column in cursor.description)  # bytea arrives as hex text
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
        yield CopyStream(names=names, column_types=dict(columns),
                         chunks=_whole_records(reader, chunk_bytes, failure, producer, url))
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


# --- sharded reads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """One part of a sharded read: keys in [low, high) (None: unbounded on that side), or the NULL keys."""

    index: int
    low: Any = None
    high: Any = None
    nulls: bool = False

    def describe(self) -> str:
        if self.nulls:
            return "NULL keys"
        return f"[{'-inf' if self.low is None else self.low}, {'+inf' if self.high is None else self.high})"


def split_points(low: Any, high: Any, count: int) -> list[Any]:
    """Values v with low < v <= high that cut [low, high] into `count` ranges of about equal width.

    Integers, floats and decimals by value, dates by day, timestamps by microsecond; duplicates
    (more ranges than distinct values) collapse, and an infinite or NaN bound gives no cut.
    """
    import math
    from decimal import Decimal, localcontext

    if count <= 1 or low is None or high is None or not low < high:
        return []
    steps = range(1, count)
    if isinstance(low, datetime.datetime):
        width = (high - low) // datetime.timedelta(microseconds=1)
        points = [low + datetime.timedelta(microseconds=width * step // count) for step in steps]
    elif isinstance(low, datetime.date):
        first, last = low.toordinal(), high.toordinal()
        points = [datetime.date.fromordinal(first + (last - first) * step // count) for step in steps]
    elif isinstance(low, int) and isinstance(high, int):  # fewer values than shards: one value per shard
        points = list(range(low + 1, high + 1)) if high - low < count else [low + (high - low) * step // count for step in steps]
    elif isinstance(low, Decimal) or isinstance(high, Decimal):
        with localcontext() as context:
            context.prec = 60
            first, last = Decimal(low), Decimal(high)
            points = [first + (last - first) * step / count for step in steps]
    else:
        first, last = float(low), float(high)
        if not (math.isfinite(first) and math.isfinite(last)):
            return []
        width = last - first
        points = [first + width * (step / count) if math.isfinite(width) else first * (1 - step / count) + last * (step / count)
                  for step in steps]
    return sorted({point for point in points if low < point <= high})


def _shardable(kind: Any) -> bool:
    import sqlalchemy as sa

    return isinstance(kind, (sa.Integer, sa.Numeric, sa.Float, sa.Date, sa.DateTime)) and not _is_boolean(kind)


_KEY_KINDS = "an integer, float, decimal, date or timestamp column"


def _parse_text_time(text: str) -> datetime.date | None:
    """A date or timestamp that SQLite keeps as ISO text; None when `text` is not one."""
    try:
        return datetime.date.fromisoformat(text) if len(text) == 10 else datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def _cut_points(low: Any, high: Any, count: int, where: str, key: str) -> list[Any]:
    """Interior shard boundaries for keys from `low` to `high`, in the database's own order."""
    import numbers

    if low is None:
        return []
    if isinstance(low, str) and isinstance(high, str):  # SQLite keeps dates and timestamps as text
        first, last = _parse_text_time(low), _parse_text_time(high)
        if first is None or last is None or type(first) is not type(last):
            raise UsageError(f"{where}.shard_key: column '{key}' holds text values ({low!r} .. {high!r}); "
                             f"a shard key must be {_KEY_KINDS}")
        as_text = (lambda value: value.isoformat()) if type(first) is datetime.date else (
            lambda value: value.strftime("%Y-%m-%d %H:%M:%S.%f"))
        return sorted({text for text in map(as_text, split_points(first, last, count)) if low < text <= high})
    numeric = all(isinstance(value, numbers.Number) and not isinstance(value, bool) for value in (low, high))
    temporal = all(isinstance(value, datetime.date) for value in (low, high)) and (
        isinstance(low, datetime.datetime) == isinstance(high, datetime.datetime))
    if not (numeric or temporal):
        raise UsageError(f"{where}.shard_key: column '{key}' holds {type(low).__name__} values "
                         f"({low!r} .. {high!r}); a shard key must be {_KEY_KINDS}")
    return split_points(low, high, count)


@dataclass
class _ShardPlan:
    source_from: str  # the FROM clause, a quoted table or the query as a derived table, as exec_driver_sql takes it
    key_sql: str
    shards: list[Shard]
    rows: int  # COUNT(*) seen when the plan was made
    declared: dict[str, Any]
    snapshot: str | None  # PostgreSQL: the exported snapshot every shard reads


def _plan_shards(connection, *, query: str | None, table: str | None, key: str, count: int, where: str) -> _ShardPlan:
    """MIN/MAX/COUNT of the key, and the shards: half-open ranges, the outer two unbounded, plus NULL keys."""
    dialect = connection.dialect
    preparer = dialect.identifier_preparer
    declared: dict[str, Any] = {}
    if table is not None:
        declared = _declared_types(connection, table)
        if key not in declared:
            raise UsageError(f"{where}.shard_key: column '{key}' is not in table '{table}' "
                             f"(its columns: {', '.join(declared)})")
        if not _shardable(declared[key]):
            raise UsageError(f"{where}.shard_key: column '{key}' of table '{table}' is "
                             f"{declared[key].compile(dialect=dialect)}; a shard key must be {_KEY_KINDS}")
        source_from = preparer.quote(table)
    else:
        source_from = f"({_driver_text(dialect, query.strip().rstrip(';'))}) AS raymlp_source"  # type: ignore[union-attr]
        names = list(connection.exec_driver_sql(f"SELECT * FROM {source_from} WHERE 1 = 0").keys())
        if key not in names:
            raise UsageError(f"{where}.shard_key: column '{key}' is not in the query's result "
                             f"(its columns: {', '.join(names)})")
    snapshot = None
    if dialect.name == "postgresql":
        snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
    key_sql = preparer.quote(key)
    low, high, rows, keyed = connection.exec_driver_sql(
        f"SELECT MIN({key_sql}), MAX({key_sql}), COUNT(*), COUNT({key_sql}) FROM {source_from}").one()
    points = _cut_points(low, high, count, where, key)
    shards = []
    if keyed:
        bounds = [None, *points, None]
        shards = [Shard(index, bounds[index], bounds[index + 1]) for index in range(len(bounds) - 1)]
    if rows > keyed or not shards:  # NULL keys; an empty source still yields one (empty) table
        shards.append(Shard(len(shards), nulls=True))
    return _ShardPlan(source_from, key_sql, shards, rows, declared, snapshot)


def _driver_text(dialect, sql: str) -> str:
    """User SQL for `exec_driver_sql`: format-style drivers (psycopg, pymysql) get every % doubled,
    since SQLAlchemy always hands them parameters (an empty set at least). Names quoted by the
    dialect's identifier preparer come doubled already."""
    return sql.replace("%", "%%") if dialect.paramstyle in ("format", "pyformat") else sql


def _shard_statement(dialect, plan: _ShardPlan, shard: Shard) -> tuple[str, Any]:
    """The SELECT of one shard and its parameters, in the driver's own parameter style."""
    params = [value for value in (shard.low, shard.high) if value is not None]
    style = dialect.paramstyle
    marks = iter({"qmark": ["?", "?"], "numeric": [":1", ":2"], "named": [":low", ":high"]}.get(style, ["%s", "%s"]))
    key = plan.key_sql
    if shard.nulls:
        condition = f"{key} IS NULL"
    elif not params:
        condition = f"{key} IS NOT NULL"
    else:
        parts = []
        if shard.low is not None:
            parts.append(f"{key} >= {next(marks)}")
        if shard.high is not None:
            parts.append(f"{key} < {next(marks)}")
        condition = " AND ".join(parts)
    statement = f"SELECT * FROM {plan.source_from} WHERE {condition}"
    if style == "named":
        names = [name for name, value in (("low", shard.low), ("high", shard.high)) if value is not None]
        return statement, dict(zip(names, params))
    return statement, tuple(params)


def _read_shard(engine, plan: _ShardPlan, shard: Shard) -> pa.Table:
    """One shard's rows, on its own connection (inside the plan's snapshot on PostgreSQL)."""
    statement, params = _shard_statement(engine.dialect, plan, shard)
    with engine.connect() as connection:
        if plan.snapshot is not None:
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            if plan.snapshot is not None:
                connection.exec_driver_sql("SET TRANSACTION SNAPSHOT %s", (plan.snapshot,))
                cursor = connection.connection.dbapi_connection.cursor()
                literal = None
                if hasattr(cursor, "mogrify"):  # psycopg2: parameters inlined exactly (and %% undone), for COPY
                    literal = cursor.mogrify(statement, params).decode()
                cursor.close()
                fast = _read_postgres_copy(connection, literal) if literal is not None else None
                if fast is not None:
                    return fast
            result = connection.exec_driver_sql(statement, params)
            names = list(result.keys())
            return _table_from_rows(names, result.fetchall(), plan.declared)


def _read_shards(url: str, *, query: str | None, table: str | None, shard_key: str, shards: int,
                 where: str) -> Iterator[tuple[int, pa.Table]]:
    """(shard index, rows) as each shard completes; see `iter_sql_shards`."""
    import sqlalchemy as sa
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from raymlp.catalog import redact_url

    if (query is None) == (table is None):
        raise UsageError(f"{where}: give exactly one of 'query' or 'table'")
    workers = max(1, min(shards, 64))
    parsed = sa.engine.make_url(url)
    in_memory = parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")
    engine = engine_for(url, **({} if in_memory else {"pool_size": workers + 1, "max_overflow": 0}))
    errors: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError,)
    if getattr(engine.dialect, "dbapi", None) is not None:
        errors += (engine.dialect.dbapi.Error,)  # raw cursors (COPY) raise the driver's own errors
    coordinator = engine.connect()
    executor = None
    futures: list = []
    try:
        try:
            if engine.dialect.name == "postgresql":  # one snapshot for every shard: a consistent read
                coordinator = coordinator.execution_options(isolation_level="REPEATABLE READ")
            coordinator.begin()
            plan = _plan_shards(coordinator, query=query, table=table, key=shard_key, count=shards, where=where)
        except sa.exc.NoSuchTableError:
            raise WorkFailed(f"table '{table}' does not exist in {redact_url(url)}") from None
        except errors as error:
            raise WorkFailed(f"planning the sharded read of {redact_url(url)} failed: "
                             f"{error.__class__.__name__}: {getattr(error, 'orig', None) or error}") from None
        executor = ThreadPoolExecutor(max_workers=min(workers, len(plan.shards)), thread_name_prefix="raymlp-shard")
        futures = [executor.submit(_read_shard, engine, plan, shard) for shard in plan.shards]
        position = {future: shard for future, shard in zip(futures, plan.shards)}
        total = 0
        for future in as_completed(futures):
            shard = position[future]
            try:
                piece = future.result()
            except errors as error:
                raise WorkFailed(f"reading shard {shard.describe()} of {redact_url(url)} failed: "
                                 f"{error.__class__.__name__}: {getattr(error, 'orig', None) or error}") from None
            total += piece.num_rows
            yield shard.index, piece
        if total != plan.rows:
            raise WorkFailed(f"the source in {redact_url(url)} changed while it was read in shards: {plan.rows} rows "
                             f"when the shards were planned, {total} in the shards; read it again when nothing writes to it")
    finally:
        for future in futures:
            future.cancel()
        if executor is not None:
            executor.shutdown(wait=True)
        coordinator.close()
        engine.dispose()


def iter_sql_shards(url: str, *, query: str | None = None, table: str | None = None, shard_key: str, shards: int,
                    where: str = "data.source.sql") -> Iterator[pa.Table]:
    """The rows of a table or query as one Arrow table per shard, in the order the shards complete.

    Shards are key ranges cut at equal widths between MIN and MAX of `shard_key` (integer, float,
    decimal, date or timestamp): `key < b1`, `b1 <= key < b2`, ..., `key >= bN`, plus one shard
    for NULL keys, so every row is in exactly one. They are read in parallel, each on its own
    connection; on PostgreSQL all in one exported snapshot. The rows read must add up to the
    COUNT(*) taken when the shards were planned, else WorkFailed (the source changed meanwhile).
    Column types are what an unsharded read gives; a shard whose values of a column are all NULL
    may carry that column as Arrow's null type (unify with `promote_options="permissive"`).
    """
    from contextlib import closing

    with closing(_read_shards(url, query=query, table=table, shard_key=shard_key, shards=shards, where=where)) as pieces:
        for _, piece in pieces:
            yield piece


@dataclass(frozen=True)
class WrittenTable:
    """A table written by `write_table`."""

    table: str
    rows: int
    column_types: dict[str, str]
    method: str = ""  # how the rows went in: COPY FROM STDIN, LOAD DATA LOCAL INFILE, ...
    rejected: int = 0  # malformed records kept in `rejects_table`
    rejects_table: str | None = None  # written (created, replaced or appended to) with the table


#: A collect's malformed records live in `<table>__rejects`, written in the same transaction as the table.
REJECTS_SUFFIX = "__rejects"
#: The rejects table's columns, and the quarantine columns they hold (file, line, reason, text, raw bytes).
REJECTS_COLUMNS = {"file": "_raymlp_source", "line": "_raymlp_row", "reason": "_raymlp_reason",
                   "text": "_raymlp_text", "raw": "_raymlp_raw"}


def rejects_table_name(table: str) -> str:
    return table + REJECTS_SUFFIX


def _rejects_columns():
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    long_text = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")  # MySQL's TEXT stops at 64 KiB
    return [sa.Column("file", long_text), sa.Column("line", sa.BigInteger()), sa.Column("reason", long_text),
            sa.Column("text", long_text),
            sa.Column("raw", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"))]


def _rejects_rows(malformed: pa.Table) -> pa.Table:
    """Quarantine rows of malformed records as the rejects table's rows (PostgreSQL text cannot hold NUL)."""
    import pyarrow.compute as pc

    columns = []
    for name, quarantine_name in REJECTS_COLUMNS.items():
        kind = {"line": pa.int64(), "raw": pa.binary()}.get(name, pa.string())
        column = malformed.column(quarantine_name).cast(kind) if quarantine_name in malformed.column_names \
            else pa.nulls(malformed.num_rows, kind)
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
        with _read_errors(url, name, engine), engine.connect() as connection:
            if not sa.inspect(connection).has_table(name):
                return None
            quote = engine.dialect.identifier_preparer.quote
            file, line, reason, text, raw = (quote(column) for column in REJECTS_COLUMNS)
            result = connection.execute(sa.text(f"SELECT {file}, {line}, {reason}, {text}, {raw} FROM {quote(name)} "
                                                f"ORDER BY {file}, {line}"))
            rows = result.fetchall()
    finally:
        engine.dispose()
    values = list(zip(*rows)) or [()] * len(REJECTS_COLUMNS)
    kinds = [pa.string(), pa.int64(), pa.string(), pa.string(), pa.binary()]
    values[4] = [None if value is None else bytes(value) for value in values[4]]  # memoryview from some drivers
    return pa.table([pa.array(list(column), kind) for column, kind in zip(values, kinds)],
                    names=list(REJECTS_COLUMNS.values()))


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
    if _is_binary(arrow_type):
        from sqlalchemy.dialects import mysql

        # BYTEA, BLOB; MySQL/MariaDB's BLOB stops at 64 KiB, LONGBLOB at 4 GiB.
        return sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
    raise UsageError(f"cannot store Arrow type {arrow_type} in a database column; "
                     "supported: bool, int, float, date, timestamp, decimal, string, binary")


def _is_binary(arrow_type: pa.DataType) -> bool:
    return pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type) or pa.types.is_fixed_size_binary(arrow_type)


def _hex(column, prefix: str = "") -> pa.Array:
    """Binary values as hex text (`prefix` first); nulls stay null."""
    values = column.to_pylist()
    return pa.array([None if value is None else prefix + value.hex() for value in values], pa.string())


def _postgres_csv_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Binary columns as bytea's hex input (`\\x...`); everything else as pyarrow writes it."""
    if not any(_is_binary(field.type) for field in batch.schema):
        return batch
    columns = [_hex(column, "\\x") if _is_binary(column.type) else column for column in batch.columns]
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


class TypesWidened(Exception):
    """A later piece of a streamed load needs a column type that the rows already loaded cannot
    take in place (their values would change): the caller loads the source whole instead."""


def write_table(url: str, name: str, table: pa.Table, mode: str, batch_rows: int = 50_000) -> WrittenTable:
    """Write `table` into database table `name` so that it appears complete or not at all."""
    return write_tables(url, name, [LoadPiece(table)], mode, batch_rows)


def write_tables(url: str, name: str, pieces: Iterable[LoadPiece], mode: str, batch_rows: int = 50_000,
                 keep_rejects: bool = False) -> WrittenTable:
    """Write the rows of `pieces`, loaded one after the other as they come, into database table
    `name` so that it appears complete or not at all.

    Rows go into a staging table created from the first table's types; in one transaction the
    staging table then replaces the target (replace), is appended to it (append), or becomes it
    (fail, when it does not exist). A later table whose types are wider (see `_widen`) widens the
    staging table in place on PostgreSQL; where that cannot keep the loaded values, or on another
    database, `TypesWidened` is raised and nothing is written.

    With `keep_rejects`, the pieces' malformed records go into `<name>__rejects` (file, line,
    reason, text, raw) the same way and in the same step: replaced, appended to or created with
    the table, even when there are none (a replaced table's old rejects go with it). Without it,
    replace drops an existing rejects table, whose records belonged to the rows replaced.
    """
    import sqlalchemy as sa

    from raymlp.catalog import redact_url

    engine = engine_for(url, bulk_load=True)
    staging_name = f"_raymlp_stage_{uuid.uuid4().hex[:12]}"
    rejects_name = rejects_table_name(name)
    preparer = engine.dialect.identifier_preparer
    target_sql, staging_sql = preparer.quote(name), preparer.quote(staging_name)
    rejects_sql = preparer.quote(rejects_name)
    rejects_staging_name = f"_raymlp_stage_{uuid.uuid4().hex[:12]}"
    rejects_staging_sql = preparer.quote(rejects_staging_name)
    mysql = engine.dialect.name in ("mysql", "mariadb")
    pieces = iter(pieces)
    first_piece = next(pieces, None)
    if first_piece is None:
        raise ValueError("write_tables needs at least one piece (its schema creates the staging table)")
    first = first_piece.table
    created_rejects = False  # an empty rejects table made up front for an append (dropped by hand on failure)
    try:
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            exists = inspector.has_table(name)
            existing = [column["name"] for column in inspector.get_columns(name)] if exists else []
            rejects_exist = inspector.has_table(rejects_name)
        if exists and mode == "fail":
            raise WorkFailed(f"table '{name}' already exists in {redact_url(url)}; set data.collect.mode to append or replace")
        if rejects_exist and mode == "fail":
            raise WorkFailed(f"table '{rejects_name}' already exists in {redact_url(url)} (malformed records of an "
                             f"earlier collect into '{name}'); drop it, or set data.collect.mode to append or replace")
        if exists and mode == "append" and existing != first.schema.names:
            raise WorkFailed(f"cannot append to '{name}': its columns are {existing}, the source has {first.schema.names}")
        # MariaDB/MySQL commit DDL implicitly: the staging tables are dropped by hand if anything fails.
        with engine.begin() as connection:
            staging = sa.Table(staging_name, sa.MetaData(),
                               *[sa.Column(field.name, _sql_type(field.type), nullable=True) for field in first.schema])
            staging.create(connection)
            rejects_staging = None
            if keep_rejects:
                rejects_staging = sa.Table(rejects_staging_name, sa.MetaData(), *_rejects_columns())
                rejects_staging.create(connection)
                if mode == "append" and not rejects_exist:
                    sa.Table(rejects_name, sa.MetaData(), *_rejects_columns()).create(connection)
                    created_rejects = rejects_exist = True
            loaded = _LoadedColumns(first.schema)
            rows, rejected, methods = 0, 0, []
            for piece in itertools.chain([first_piece], pieces):
                if not piece.table.schema.equals(loaded.schema):
                    staging = _widen(connection, staging, staging_sql, loaded, piece.table.schema)
                methods.append(_bulk_load(connection, staging, staging_sql, piece, batch_rows))
                loaded.add(piece.table)
                rows += piece.table.num_rows
                if piece.rejects is not None and piece.rejects.num_rows:
                    if rejects_staging is None:
                        raise ValueError("a piece has malformed records but write_tables was not asked to keep them")
                    kept = LoadPiece(_rejects_rows(piece.rejects))
                    _bulk_load(connection, rejects_staging, rejects_staging_sql, kept, batch_rows)
                    rejected += piece.rejects.num_rows
            if exists and mode == "append" and existing != loaded.schema.names:
                raise WorkFailed(f"cannot append to '{name}': its columns are {existing}, the source has {loaded.schema.names}")
            renames: list[tuple[str, str]] = []  # done in one step: one RENAME TABLE on MariaDB/MySQL
            retired: list[str] = []
            if exists and mode == "append":
                connection.execute(sa.text(f"INSERT INTO {target_sql} SELECT * FROM {staging_sql}"))
                retired.append(staging_sql)
            else:
                if exists:
                    retired.append(preparer.quote(f"_raymlp_old_{uuid.uuid4().hex[:12]}"))
                    renames.append((target_sql, retired[-1]))
                renames.append((staging_sql, target_sql))
            if keep_rejects and rejects_exist and mode == "append":
                connection.execute(sa.text(f"INSERT INTO {rejects_sql} SELECT * FROM {rejects_staging_sql}"))
                retired.append(rejects_staging_sql)
            else:
                if rejects_exist and mode == "replace":
                    retired.append(preparer.quote(f"_raymlp_old_{uuid.uuid4().hex[:12]}"))
                    renames.append((rejects_sql, retired[-1]))
                if keep_rejects:
                    renames.append((rejects_staging_sql, rejects_sql))
            if mysql and renames:
                connection.execute(sa.text("RENAME TABLE " + ", ".join(f"{old} TO {new}" for old, new in renames)))
            else:
                for old, new in renames:
                    connection.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))
            for quoted in retired:
                connection.execute(sa.text(f"DROP TABLE {quoted}"))
    except BaseException as error:
        _drop_quietly(engine, staging_sql)
        _drop_quietly(engine, rejects_staging_sql)
        if created_rejects and mysql:
            _drop_quietly(engine, rejects_sql)
        if isinstance(error, sa.exc.SQLAlchemyError):
            raise WorkFailed(f"writing table '{name}' to {redact_url(url)} failed: {error.__class__.__name__}: "
                             f"{getattr(error, 'orig', None) or error}") from None
        raise
    finally:
        if hasattr(pieces, "close"):  # a generator: stop its readers now, not when it is collected
            pieces.close()
        engine.dispose()
    column_types = {column.name: str(column.type.compile(dialect=engine.dialect)) for column in staging.columns}
    method = " + ".join(dict.fromkeys(methods)) + (f" ({len(methods)} pieces)" if len(methods) > 1 else "")
    return WrittenTable(table=name, rows=rows, column_types=column_types, method=method, rejected=rejected,
                        rejects_table=rejects_name if keep_rejects else None)


class _LoadedColumns:
    """The staging table's Arrow schema, and which of its columns hold a value yet."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.holds_values = {field.name: False for field in schema}

    def add(self, table: pa.Table) -> None:
        for column_name in table.column_names:
            column = table.column(column_name)
            if column.null_count < len(column):
                self.holds_values[column_name] = True


def _widen(connection, staging, staging_sql: str, loaded: _LoadedColumns, schema: pa.Schema):
    """The staging table altered to `schema`'s types, where every loaded value keeps its value: a
    column that holds only nulls so far, int -> float, a new column (PostgreSQL only; DDL there
    is transactional). Returns the staging table's new description."""
    import sqlalchemy as sa

    dialect = connection.dialect
    changes: list[str] = []
    for field in schema:
        if field.name not in loaded.schema.names:
            changes.append(f"ADD COLUMN {raw_quote(dialect, field.name)} {_sql_type(field.type).compile(dialect=dialect)}")
            continue
        before = loaded.schema.field(field.name).type
        if before == field.type:
            continue
        keeps_values = not loaded.holds_values[field.name] or (pa.types.is_integer(before) and pa.types.is_floating(field.type))
        if not keeps_values:
            raise TypesWidened(f"column '{field.name}' was loaded as {before} and now needs {field.type}")
        sql_type = _sql_type(field.type).compile(dialect=dialect)
        quoted = raw_quote(dialect, field.name)
        changes.append(f"ALTER COLUMN {quoted} TYPE {sql_type} USING {quoted}::{sql_type}")
    missing = [name for name in loaded.schema.names if name not in schema.names]
    if missing:
        raise TypesWidened(f"columns {missing} are missing from a later piece")
    if changes:
        if dialect.name != "postgresql":
            raise TypesWidened(f"the staging table would need ALTER TABLE on {dialect.name}")
        connection.exec_driver_sql(f"ALTER TABLE {staging_sql} " + ", ".join(changes))
    loaded.schema = schema
    for field in schema:
        loaded.holds_values.setdefault(field.name, False)
    return sa.Table(staging.name, sa.MetaData(),
                    *[sa.Column(field.name, _sql_type(field.type), nullable=True) for field in schema])


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


def _bulk_load(connection, staging, staging_sql: str, piece: LoadPiece, batch_rows: int) -> str:
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
        stream = io.BytesIO(piece.csv_text) if text else _CsvStream(table, batch_rows)
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
            columns = [_driver_values(column, processor, dialect.name) for column, processor in zip(batch.columns, processors)]
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
            if _is_binary(field.type):
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
                        writer = pacsv.CSVWriter(sink, text.schema, write_options=pacsv.WriteOptions(include_header=False))
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
            raise WorkFailed(f"LOAD DATA reported {warnings} warning(s) (values the table cannot hold exactly); first: {shown}")
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
        elif _is_binary(kind):
            text = _hex(column)
        elif pa.types.is_null(kind):
            text = pa.nulls(len(column), pa.string())
        else:  # integers, decimals, dates: Arrow's text is MySQL's
            text = column.cast(pa.string())
        columns.append(text.fill_null(null))
    return pa.RecordBatch.from_arrays(columns, names=[f"c{index}" for index in range(len(columns))])
