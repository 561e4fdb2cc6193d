"""Sharded reads: a table or query cut into key ranges, planned in one transaction (one snapshot on PostgreSQL) and read in parallel."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from raymlp.errors import UsageError, WorkFailed

from .columns import declared_types, is_boolean, table_from_rows
from .engine import engine_for
from .postgres_copy import read_postgres_copy


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
    points: list[Any]
    first: Any
    last: Any
    if isinstance(low, datetime.datetime):
        width = (high - low) // datetime.timedelta(microseconds=1)
        points = [low + datetime.timedelta(microseconds=width * step // count) for step in steps]
    elif isinstance(low, datetime.date):
        first, last = low.toordinal(), high.toordinal()
        points = [datetime.date.fromordinal(first + (last - first) * step // count) for step in steps]
    elif isinstance(low, int) and isinstance(high, int):  # fewer values than shards: one value per shard
        points = (
            list(range(low + 1, high + 1))
            if high - low < count
            else [low + (high - low) * step // count for step in steps]
        )
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
        points = [
            first + width * (step / count)
            if math.isfinite(width)
            else first * (1 - step / count) + last * (step / count)
            for step in steps
        ]
    return sorted({point for point in points if low < point <= high})


def _shardable(kind: Any) -> bool:
    import sqlalchemy as sa

    return isinstance(kind, (sa.Integer, sa.Numeric, sa.Float, sa.Date, sa.DateTime)) and not is_boolean(kind)


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
            raise UsageError(
                f"{where}.shard_key: column '{key}' holds text values ({low!r} .. {high!r}); "
                f"a shard key must be {_KEY_KINDS}"
            )
        as_text = (
            (lambda value: value.isoformat())
            if type(first) is datetime.date
            else (lambda value: value.strftime("%Y-%m-%d %H:%M:%S.%f"))
        )
        return sorted({text for text in map(as_text, split_points(first, last, count)) if low < text <= high})
    numeric = all(isinstance(value, numbers.Number) and not isinstance(value, bool) for value in (low, high))
    temporal = all(isinstance(value, datetime.date) for value in (low, high)) and (
        isinstance(low, datetime.datetime) == isinstance(high, datetime.datetime)
    )
    if not (numeric or temporal):
        raise UsageError(
            f"{where}.shard_key: column '{key}' holds {type(low).__name__} values "
            f"({low!r} .. {high!r}); a shard key must be {_KEY_KINDS}"
        )
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
        declared = declared_types(connection, table)
        if key not in declared:
            raise UsageError(
                f"{where}.shard_key: column '{key}' is not in table '{table}' (its columns: {', '.join(declared)})"
            )
        if not _shardable(declared[key]):
            raise UsageError(
                f"{where}.shard_key: column '{key}' of table '{table}' is "
                f"{declared[key].compile(dialect=dialect)}; a shard key must be {_KEY_KINDS}"
            )
        source_from = preparer.quote(table)
    else:
        source_from = f"({_driver_text(dialect, query.strip().rstrip(';'))}) AS raymlp_source"  # type: ignore[union-attr]
        names = list(connection.exec_driver_sql(f"SELECT * FROM {source_from} WHERE 1 = 0").keys())
        if key not in names:
            raise UsageError(
                f"{where}.shard_key: column '{key}' is not in the query's result (its columns: {', '.join(names)})"
            )
    snapshot = None
    if dialect.name == "postgresql":
        snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
    key_sql = preparer.quote(key)
    low, high, rows, keyed = connection.exec_driver_sql(
        f"SELECT MIN({key_sql}), MAX({key_sql}), COUNT(*), COUNT({key_sql}) FROM {source_from}"
    ).one()
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
                fast = read_postgres_copy(connection, literal) if literal is not None else None
                if fast is not None:
                    return fast
            result = connection.exec_driver_sql(statement, params)
            names = list(result.keys())
            return table_from_rows(names, result.fetchall(), plan.declared)


def read_shards(
    url: str, *, query: str | None, table: str | None, shard_key: str, shards: int, where: str
) -> Iterator[tuple[int, pa.Table]]:
    """(shard index, rows) as each shard completes; see `iter_sql_shards`."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    import sqlalchemy as sa

    from raymlp.catalog import redact_url

    if (query is None) == (table is None):
        raise UsageError(f"{where}: give exactly one of 'query' or 'table'")
    workers = max(1, min(shards, 64))
    parsed = sa.engine.make_url(url)
    in_memory = parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")
    pool: dict[str, Any] = {} if in_memory else {"pool_size": workers + 1, "max_overflow": 0}
    engine = engine_for(url, **pool)
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
            raise WorkFailed(
                f"planning the sharded read of {redact_url(url)} failed: "
                f"{error.__class__.__name__}: {getattr(error, 'orig', None) or error}"
            ) from None
        executor = ThreadPoolExecutor(max_workers=min(workers, len(plan.shards)), thread_name_prefix="raymlp-shard")
        futures = [executor.submit(_read_shard, engine, plan, shard) for shard in plan.shards]
        position = {future: shard for future, shard in zip(futures, plan.shards)}
        total = 0
        for future in as_completed(futures):
            shard = position[future]
            try:
                piece = future.result()
            except errors as error:
                raise WorkFailed(
                    f"reading shard {shard.describe()} of {redact_url(url)} failed: "
                    f"{error.__class__.__name__}: {getattr(error, 'orig', None) or error}"
                ) from None
            total += piece.num_rows
            yield shard.index, piece
        if total != plan.rows:
            raise WorkFailed(
                f"the source in {redact_url(url)} changed while it was read in shards: {plan.rows} rows "
                f"when the shards were planned, {total} in the shards; read it again when nothing writes to it"
            )
    finally:
        for future in futures:
            future.cancel()
        if executor is not None:
            executor.shutdown(wait=True)
        coordinator.close()
        engine.dispose()


def iter_sql_shards(
    url: str,
    *,
    query: str | None = None,
    table: str | None = None,
    shard_key: str,
    shards: int,
    where: str = "data.source.sql",
) -> Iterator[pa.Table]:
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

    with closing(
        read_shards(  # type: ignore[type-var]  # a generator has close()
            url, query=query, table=table, shard_key=shard_key, shards=shards, where=where
        )
    ) as pieces:
        for _, piece in pieces:
            yield piece
