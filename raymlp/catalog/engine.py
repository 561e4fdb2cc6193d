"""The catalog's database engine: the default URL, an installed driver, SQLite's WAL and write locks."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.exc import NoSuchModuleError

from raymlp import settings
from raymlp.catalog.errors import CatalogError
from raymlp.catalog.redact import redact_url

#: How long a SQLite writer waits for another process's lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 30.0

#: Execution option of the connections that write: SQLite takes its write lock at BEGIN for them.
WRITE_OPTION = "raymlp_catalog_write"

_DRIVER_CHOICES = {  # for URLs naming no driver: (module, driver) in order of preference
    "postgresql": (("psycopg", "psycopg"), ("psycopg2", "psycopg2")),
    "mysql": (("MySQLdb", "mysqldb"), ("pymysql", "pymysql")),
}


def default_url() -> str:
    """The default catalog: a SQLite file under RAYMLP_HOME."""
    return f"sqlite:///{settings.home() / 'catalog.db'}"


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL and a busy timeout so processes share the file; foreign keys on; SQLAlchemy emits BEGIN."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        _enable_wal(cursor)
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (it stays so); SQLite does not wait out the busy timeout for this, so retry."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() not in ("wal", "memory"):
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_on_begin(connection: Connection) -> None:
    """Writers take SQLite's write lock up front, so they queue instead of failing mid-transaction."""
    write = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def with_installed_driver(url: URL) -> URL:
    """``url`` with a driver that is installed, where it names none (SQLAlchemy 2.1 defaults to psycopg 3)."""
    for module, driver in _DRIVER_CHOICES.get(url.drivername, ()):
        if importlib.util.find_spec(module) is not None:
            return url.set(drivername=f"{url.drivername}+{driver}")
    return url


def create_catalog_engine(url: URL) -> Engine:
    """An engine for ``url``; SQLite files get their folder created and an absolute path."""
    url = with_installed_driver(url)
    try:
        if url.get_backend_name() != "sqlite":
            return create_engine(url, pool_pre_ping=True)
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(os.path.abspath(Path(database).expanduser()))
            path.parent.mkdir(parents=True, exist_ok=True)
            url = url.set(database=str(path))
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    except NoSuchModuleError as exc:
        raise CatalogError(
            f"catalog URL {redact_url(url.render_as_string())!r} names an unknown database kind "
            "(allowed: sqlite, postgresql, mysql+pymysql)"
        ) from exc
    except ModuleNotFoundError as exc:
        raise CatalogError(
            f"catalog URL {redact_url(url.render_as_string())!r} needs the Python driver {exc.name!r}, "
            "which is not installed (pip install 'raymlp[postgres]' or 'raymlp[mysql]')"
        ) from exc
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine
