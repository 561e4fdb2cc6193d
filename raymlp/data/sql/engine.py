"""Engines for the databases raymlp reads and writes: a clear error for a bad URL, SQLite's DDL in transactions, read failures as WorkFailed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


@contextmanager
def read_errors(url: str, table: str | None, engine) -> Iterator[None]:
    """Failures while reading `url` as one WorkFailed naming the (redacted) URL: SQLAlchemy's, and
    those the driver's own cursor raises (queries, COPY)."""
    import sqlalchemy as sa

    from raymlp.catalog import redact_url

    try:
        yield
    except sa.exc.NoSuchTableError:
        raise WorkFailed(f"table '{table}' does not exist in {redact_url(url)}") from None
    except sa.exc.SQLAlchemyError as error:
        raise WorkFailed(
            f"reading from {redact_url(url)} failed: {error.__class__.__name__}: {error.orig or error}"  # type: ignore[attr-defined]
        ) from None
    except engine.dialect.loaded_dbapi.Error as error:
        raise WorkFailed(f"reading from {redact_url(url)} failed: {type(error).__name__}: {error}".strip()) from None


def raw_quote(dialect, name: str) -> str:
    """`name` quoted for a statement the driver sends as it is (COPY on a raw cursor).

    The dialect's identifier preparer doubles % for drivers that %-format every statement
    SQLAlchemy hands them (psycopg, pymysql); a raw statement must have them single.
    """
    quoted = dialect.identifier_preparer.quote(name)
    return quoted.replace("%%", "%") if dialect.paramstyle in ("format", "pyformat") else quoted
