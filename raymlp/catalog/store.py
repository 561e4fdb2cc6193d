"""The catalog: dataset versions, collections, runs, model lineage and preprocessing modules in one SQL database."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import random
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path, PurePath
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from raymlp import settings
from raymlp.catalog.models import (
    RUN_STATUSES,
    VERSION_TABLE,
    Base,
    Collection,
    Dataset,
    DatasetVersion,
    Module,
    ModelVersion,
    Run,
    utcnow,
)
from raymlp.errors import RaymlpError, UsageError

#: Folder holding Alembic's env.py and the versions/ scripts (found relative to this file).
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: How long a SQLite writer waits for another process's lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 30.0

_WRITE_OPTION = "raymlp_catalog_write"
_PG_MIGRATION_LOCK = 0x7261796D6C70  # "raymlp"; serialises concurrent first opens
_DRIVER_CHOICES = {  # for URLs naming no driver: (module, driver) in order of preference
    "postgresql": (("psycopg", "psycopg"), ("psycopg2", "psycopg2")),
    "mysql": (("MySQLdb", "mysqldb"), ("pymysql", "pymysql")),
}
_FINISHED_STATUSES = tuple(status for status in RUN_STATUSES if status != "running")
_SECRET_KEY = re.compile(
    r"^(password|passwd|pwd|secret|api_?key|access_token|auth_token|secret_key|private_key"
    r"|secret_access_key|aws_secret_access_key|.*_password|.*_secret)$",
    re.IGNORECASE,
)
_SECRET_QUERY_KEY = re.compile(r"pass|pwd|secret|token|api_?key|credential", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*):(?P<password>[^\s@/]*)@")
_REDACTED = "***"


class CatalogError(RaymlpError):
    """The catalog could not do what was asked; the message says what was found."""


class NotInCatalog(CatalogError, UsageError):
    """A name or version the caller gave is not in the catalog: bad usage (exit 2), like an unknown model."""


class DatasetVersionExists(CatalogError):
    """A dataset version with that name and number is already registered."""


@dataclass(frozen=True)
class DatasetRecord:
    """A named dataset."""

    name: str
    created_at: datetime


@dataclass(frozen=True)
class DatasetVersionRecord:
    """One registered, immutable dataset version."""

    id: int
    name: str
    version: int
    path: str
    row_count: int
    content_digest: str
    manifest: dict[str, Any]
    source: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class CollectionRecord:
    """One collection of a source into a database table (target_url without its password)."""

    id: int
    source_uri: str
    source_sha256: str | None
    target_url: str
    target_table: str
    mode: str
    row_count: int
    column_types: dict[str, Any]
    created_at: datetime
    rows_rejected: int = 0  # malformed records kept in `rejects_table`
    rejects_table: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """One execution of a job."""

    id: str
    job_name: str
    job_path: str
    job_sha256: str
    config: dict[str, Any]
    stages: list[str]
    status: str
    started_at: datetime
    finished_at: datetime | None
    summary: dict[str, Any] | None
    error: str | None


@dataclass(frozen=True)
class ModelVersionRecord:
    """One model version with the run and dataset version it was trained from."""

    id: int
    model_name: str
    model_version: str
    run_id: str | None
    mlflow_run_id: str | None
    dataset_name: str | None
    dataset_version: int | None
    dataset_digest: str | None
    package_uri: str | None
    framework: str
    metrics: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ModuleRecord:
    """One version of a registered preprocessing module.

    ``functions`` lists the public functions the source defines, each ``{name, line, signature, doc}``;
    ``filename`` is the file it was added from (for people; the source here is what runs).
    """

    id: int
    name: str
    version: int
    sha256: str
    source: str
    filename: str
    functions: list[dict[str, Any]]
    created_at: datetime

    @property
    def function_names(self) -> list[str]:
        return [function["name"] for function in self.functions]


@dataclass(frozen=True)
class ModuleAdded:
    """What ``add_module`` did: ``created`` is False when the source equals the latest version's."""

    record: ModuleRecord
    created: bool
    #: An earlier (not the latest) version with the same content, when there is one.
    same_as: int | None = None


# --------------------------------------------------------------------------- secrets


def redact_url(url: str) -> str:
    """``url`` with its password (and password-like query values) replaced by ``***``."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return _redact_text(url) if isinstance(url, str) else url
    secret_keys = [key for key in parsed.query if _SECRET_QUERY_KEY.search(key)]
    if parsed.password is None and not secret_keys:
        return url
    if secret_keys:
        parsed = parsed.update_query_dict({key: _REDACTED for key in secret_keys})
    return parsed.render_as_string(hide_password=True).replace("=%2A%2A%2A", f"={_REDACTED}")


def _redact_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced."""
    return _URL_USERINFO.sub(rf"\g<head>:{_REDACTED}@", text)


def _clean_json(value: Any, what: str, path: str = "", *, redact_keys: bool = True) -> Any:
    """A JSON-safe deep copy of ``value``: secrets redacted, NaN/inf as null, numpy values as Python ones."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return redact_url(str(value)) if "@" in value and "://" in value else value
    if isinstance(value, Mapping):
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CatalogError(
                    f"{what}{path} has key {key!r} of type {type(key).__name__}; keys must be strings"
                )
            if redact_keys and item is not None and _SECRET_KEY.match(key):
                cleaned[key] = _REDACTED
            else:
                cleaned[key] = _clean_json(item, what, f"{path}.{key}", redact_keys=redact_keys)
        return cleaned
    if isinstance(value, list | tuple):
        return [
            _clean_json(item, what, f"{path}[{index}]", redact_keys=redact_keys) for index, item in enumerate(value)
        ]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return _clean_json(value.tolist(), what, path, redact_keys=redact_keys)
    raise CatalogError(
        f"{what}{path} holds a {type(value).__name__}, which is not JSON "
        "(allowed: dict, list, str, int, float, bool, None, datetime, Path, numpy values)"
    )


# --------------------------------------------------------------------------- migrations


def _alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the packaged scripts; no alembic.ini, no reliance on the CWD."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def _scripts() -> ScriptDirectory:
    """The packaged migration scripts (read once per process)."""
    try:
        scripts = ScriptDirectory.from_config(_alembic_config())
        if scripts.get_current_head() is not None:
            return scripts
    except CommandError:
        pass
    raise CatalogError(f"no catalog migration scripts under {MIGRATIONS_DIR}; this raymlp installation is incomplete")


def head_revision() -> str:
    """The newest schema revision this raymlp knows."""
    return str(_scripts().get_current_head())


@cache
def _known_revisions() -> tuple[str, ...]:
    """Every schema revision this raymlp knows, oldest first."""
    return tuple(reversed([script.revision for script in _scripts().walk_revisions()]))


def _current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None when empty); refuses revisions this raymlp does not know."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    revision = context.get_current_revision()
    if revision is not None and revision not in _known_revisions():
        raise CatalogError(
            f"the catalog schema is at revision {revision!r}, which this raymlp does not know "
            f"(known: {', '.join(_known_revisions())}); open it with the raymlp that upgraded it, or newer"
        )
    return revision


def _refuse_foreign_tables(connection: Connection) -> None:
    """Refuse a database whose tables clash with the catalog's but were not made by it."""
    clashing = sorted(set(inspect(connection).get_table_names()) & set(Base.metadata.tables))
    if clashing:
        raise CatalogError(
            f"the database already has tables {', '.join(clashing)} that the raymlp catalog did not "
            "create (an MLflow store?); give the catalog a database of its own"
        )


def migrate(bind: Engine | Connection, revision: str = "head") -> str | None:
    """Upgrade the catalog schema to ``revision``: an Engine in its own transaction, a Connection in the caller's."""
    if revision != "head" and revision not in _known_revisions():
        raise CatalogError(f"unknown catalog revision {revision!r} (known: head, {', '.join(_known_revisions())})")
    if isinstance(bind, Engine):
        with bind.execution_options(**{_WRITE_OPTION: True}).begin() as connection:
            return migrate(connection, revision)
    if not bind.in_transaction():
        with bind.begin():
            return migrate(bind, revision)
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    current = _current_revision(bind)
    target = head_revision() if revision == "head" else revision
    if current == target:
        return current
    if current is None:
        _refuse_foreign_tables(bind)
    try:
        command.upgrade(_alembic_config(bind), revision)
    except CommandError as exc:
        raise CatalogError(f"cannot migrate the catalog from {current or 'empty'} to {revision}: {exc}") from exc
    return _current_revision(bind)


# --------------------------------------------------------------------------- engine


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
    write = connection.get_execution_options().get(_WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def with_installed_driver(url: URL) -> URL:
    """``url`` with a driver that is installed, where it names none (SQLAlchemy 2.1 defaults to psycopg 3)."""
    for module, driver in _DRIVER_CHOICES.get(url.drivername, ()):
        if importlib.util.find_spec(module) is not None:
            return url.set(drivername=f"{url.drivername}+{driver}")
    return url


def _create_engine(url: URL) -> Engine:
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


def _listing(items: Iterable[object], limit: int = 20) -> str:
    """``a, b, c`` (at most ``limit`` items, then how many more), or ``none``."""
    items = [str(item) for item in items]
    if not items:
        return "none"
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... ({len(items) - limit} more)"


def _positive_int(value: Any, what: str) -> int:
    """``value`` if it is a positive int, else a CatalogError saying what it was."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CatalogError(f"{what} must be a positive integer, got {value!r}")
    return value


def _name(value: Any, what: str) -> str:
    """``value`` if it is a non-empty string, else a CatalogError."""
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{what} must be a non-empty string, got {value!r}")
    return value


# --------------------------------------------------------------------------- records


def _dataset_version_record(row: DatasetVersion) -> DatasetVersionRecord:
    return DatasetVersionRecord(
        id=row.id,
        name=row.name,
        version=row.version,
        path=row.path,
        row_count=row.row_count,
        content_digest=row.content_digest,
        manifest=dict(row.manifest),
        source=dict(row.source),
        created_at=row.created_at,
    )


def _collection_record(row: Collection) -> CollectionRecord:
    return CollectionRecord(
        id=row.id,
        source_uri=row.source_uri,
        source_sha256=row.source_sha256,
        target_url=row.target_url,
        target_table=row.target_table,
        mode=row.mode,
        row_count=row.row_count,
        column_types=dict(row.column_types),
        created_at=row.created_at,
        rows_rejected=row.rows_rejected or 0,
        rejects_table=row.rejects_table,
    )


def _run_record(row: Run) -> RunRecord:
    return RunRecord(
        id=row.id,
        job_name=row.job_name,
        job_path=row.job_path,
        job_sha256=row.job_sha256,
        config=dict(row.config),
        stages=list(row.stages),
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        summary=None if row.summary is None else dict(row.summary),
        error=row.error,
    )


def _model_version_record(row: ModelVersion) -> ModelVersionRecord:
    return ModelVersionRecord(
        id=row.id,
        model_name=row.model_name,
        model_version=row.model_version,
        run_id=row.run_id,
        mlflow_run_id=row.mlflow_run_id,
        dataset_name=row.dataset_name,
        dataset_version=row.dataset_version,
        dataset_digest=row.dataset_digest,
        package_uri=row.package_uri,
        framework=row.framework,
        metrics=dict(row.metrics),
        created_at=row.created_at,
    )


def _module_record(row: Module) -> ModuleRecord:
    return ModuleRecord(
        id=row.id,
        name=row.name,
        version=row.version,
        sha256=row.sha256,
        source=row.source,
        filename=row.filename,
        functions=[dict(function) for function in row.functions],
        created_at=row.created_at,
    )


# --------------------------------------------------------------------------- the catalog


class Catalog:
    """Dataset versions, collections, runs, model lineage and modules in one SQL database (SQLite or PostgreSQL)."""

    def __init__(self, url: str | URL | None = None) -> None:
        """Open the catalog at ``url`` (default: a SQLite file under RAYMLP_HOME), upgrading its schema."""
        raw = default_url() if url is None else url
        try:
            parsed = make_url(raw)
        except ArgumentError as exc:
            raise CatalogError(
                f"catalog URL {redact_url(str(raw))!r} is not a database URL "
                "(allowed: sqlite:///path/catalog.db, postgresql://user@host/db, mysql+pymysql://user@host/db)"
            ) from exc
        self._engine = _create_engine(parsed)
        self._url = self._engine.url
        #: The catalog's URL without its password, safe to log.
        self.url = redact_url(self._url.render_as_string(hide_password=False))
        self._reading = sessionmaker(self._engine, expire_on_commit=False)
        self._writing = sessionmaker(self._engine.execution_options(**{_WRITE_OPTION: True}), expire_on_commit=False)
        self._closed = False
        try:
            self._open()
        except BaseException:
            self._engine.dispose()
            raise

    def _open(self) -> None:
        """Upgrade the schema to head unless it is there already (one cheap query when it is)."""
        try:
            with self._engine.connect() as connection:
                current = _current_revision(connection)
            if current != head_revision():
                migrate(self._engine)
        except DBAPIError as exc:
            raise CatalogError(f"cannot open the catalog at {self.url}: {_redact_text(str(exc.orig).strip())}") from exc

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _session(self, write: bool) -> Iterator[Session]:
        """A session in one transaction; database failures (other than integrity) become CatalogError."""
        if self._closed:
            raise CatalogError(f"the catalog at {self.url} is closed")
        factory = self._writing if write else self._reading
        try:
            with factory() as session, session.begin():
                yield session
        except IntegrityError:
            raise
        except DBAPIError as exc:
            raise CatalogError(f"catalog at {self.url}: {_redact_text(str(exc.orig).strip())}") from exc

    def revision(self) -> str | None:
        """The schema revision the database is at."""
        with self._session(write=False) as session:
            return _current_revision(session.connection())

    def close(self) -> None:
        """Release the database connections."""
        self._closed = True
        self._engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({self.url!r})"

    def __reduce__(self) -> tuple[type[Catalog], tuple[URL]]:
        """Pickle as the URL, so a catalog can be handed to Ray tasks, which reopen it."""
        return (Catalog, (self._url,))

    # ------------------------------------------------------------------ datasets

    @staticmethod
    def _ensure_dataset(session: Session, name: str) -> Dataset:
        """The dataset row for ``name``, created if missing (tolerating a concurrent creator)."""
        row = session.get(Dataset, name)
        if row is not None:
            return row
        try:
            with session.begin_nested():
                session.add(Dataset(name=name, created_at=utcnow()))
        except IntegrityError:
            pass
        row = session.get(Dataset, name)
        assert row is not None
        return row

    def ensure_dataset(self, name: str) -> DatasetRecord:
        """The dataset called ``name``, created if it does not exist yet."""
        _name(name, "dataset name")
        with self._session(write=True) as session:
            row = self._ensure_dataset(session, name)
            return DatasetRecord(name=row.name, created_at=row.created_at)

    def next_dataset_version(self, name: str) -> int:
        """The number the next version of ``name`` gets (1 for a new dataset)."""
        with self._session(write=False) as session:
            latest = session.scalar(select(func.max(DatasetVersion.version)).where(DatasetVersion.name == name))
        return 1 if latest is None else int(latest) + 1

    def register_dataset_version(
        self,
        name: str,
        version: int,
        path: str,
        manifest: dict[str, Any],
        row_count: int,
        content_digest: str,
        source: dict[str, Any],
    ) -> DatasetVersionRecord:
        """Record version ``version`` of dataset ``name``; DatasetVersionExists if it is taken."""
        _name(name, "dataset name")
        _positive_int(version, "dataset version")
        if isinstance(row_count, bool) or not isinstance(row_count, int) or row_count < 0:
            raise CatalogError(f"row_count must be a non-negative integer, got {row_count!r}")
        row = DatasetVersion(
            name=name,
            version=version,
            path=str(path),
            row_count=row_count,
            content_digest=_name(content_digest, "content_digest"),
            manifest=_clean_json(dict(manifest), "manifest"),
            source=_clean_json(dict(source), "source"),
            created_at=utcnow(),
        )
        try:
            with self._session(write=True) as session:
                self._ensure_dataset(session, name)
                session.add(row)
                session.flush()
                return _dataset_version_record(row)
        except IntegrityError as exc:
            versions = [record.version for record in self.list_dataset_versions(name)]
            if version in versions:
                raise DatasetVersionExists(
                    f"dataset {name!r} already has version {version} (versions: {_listing(versions)}); "
                    f"the next free one is {max(versions) + 1}"
                ) from exc
            raise CatalogError(
                f"cannot register version {version} of dataset {name!r}: {_redact_text(str(exc.orig))}"
            ) from exc

    def get_dataset_version(self, name: str, version: int | None = None) -> DatasetVersionRecord:
        """Version ``version`` of dataset ``name`` (None: the latest); CatalogError if there is none."""
        if version is not None:
            _positive_int(version, "dataset version")
        with self._session(write=False) as session:
            query = select(DatasetVersion).where(DatasetVersion.name == name)
            if version is None:
                query = query.order_by(DatasetVersion.version.desc()).limit(1)
            else:
                query = query.where(DatasetVersion.version == version)
            row = session.scalars(query).first()
            if row is not None:
                return _dataset_version_record(row)
            versions = session.scalars(
                select(DatasetVersion.version).where(DatasetVersion.name == name).order_by(DatasetVersion.version)
            ).all()
            if versions:
                raise NotInCatalog(f"dataset {name!r} has no version {version} (versions: {_listing(versions)})")
            if session.get(Dataset, name) is not None:
                raise NotInCatalog(f"dataset {name!r} has no versions yet")
            names = session.scalars(select(Dataset.name).order_by(Dataset.name)).all()
            raise NotInCatalog(f"no dataset named {name!r} (datasets: {_listing(names)})")

    def delete_dataset_version(self, name: str, version: int) -> None:
        """Forget version ``version`` of dataset ``name`` (its files are the caller's); CatalogError if there is none."""
        self.get_dataset_version(name, version)  # the usual error when it is not there
        with self._session(write=True) as session:
            session.execute(delete(DatasetVersion).where(DatasetVersion.name == name, DatasetVersion.version == version))

    def list_dataset_versions(self, name: str | None = None) -> list[DatasetVersionRecord]:
        """Every registered dataset version (of ``name`` only, if given), by name then version."""
        query = select(DatasetVersion).order_by(DatasetVersion.name, DatasetVersion.version)
        if name is not None:
            query = query.where(DatasetVersion.name == name)
        with self._session(write=False) as session:
            return [_dataset_version_record(row) for row in session.scalars(query)]

    # ------------------------------------------------------------------ collections

    def record_collection(
        self,
        source_uri: str,
        source_sha256: str | None,
        target_url: str,
        target_table: str,
        mode: str,
        row_count: int,
        column_types: dict[str, Any],
        rows_rejected: int = 0,
        rejects_table: str | None = None,
    ) -> CollectionRecord:
        """Record that ``source_uri`` was collected into ``target_table`` (``rows_rejected`` malformed
        records kept in ``rejects_table``); URLs are stored without passwords."""
        row = Collection(
            source_uri=redact_url(str(source_uri)),
            source_sha256=source_sha256,
            target_url=redact_url(str(target_url)),
            target_table=_name(target_table, "target_table"),
            mode=_name(mode, "mode"),
            row_count=int(row_count),
            column_types=_clean_json(dict(column_types), "column_types", redact_keys=False),
            created_at=utcnow(),
            rows_rejected=int(rows_rejected),
            rejects_table=None if rejects_table is None else _name(rejects_table, "rejects_table"),
        )
        with self._session(write=True) as session:
            session.add(row)
            session.flush()
            return _collection_record(row)

    def list_collections(self, target_table: str | None = None) -> list[CollectionRecord]:
        """Every recorded collection (into ``target_table`` only, if given), oldest first."""
        query = select(Collection).order_by(Collection.id)
        if target_table is not None:
            query = query.where(Collection.target_table == target_table)
        with self._session(write=False) as session:
            return [_collection_record(row) for row in session.scalars(query)]

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        job_name: str,
        job_path: str,
        job_sha256: str,
        config: dict[str, Any],
        stages: list[str],
    ) -> RunRecord:
        """Record a new run of ``job_name``, status ``running``."""
        if not isinstance(stages, list | tuple) or not all(isinstance(stage, str) for stage in stages):
            raise CatalogError(f"stages must be a list of stage names, got {stages!r}")
        row = Run(
            id=uuid.uuid4().hex,
            job_name=_name(job_name, "job_name"),
            job_path=str(job_path),
            job_sha256=job_sha256,
            config=_clean_json(dict(config), "config"),
            stages=list(stages),
            status="running",
            started_at=utcnow(),
        )
        with self._session(write=True) as session:
            session.add(row)
            session.flush()
            return _run_record(row)

    def finish_run(
        self,
        run_id: str,
        status: str,
        summary: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> RunRecord:
        """Mark a running run ``succeeded`` or ``failed``, with its summary or error."""
        if status not in _FINISHED_STATUSES:
            raise CatalogError(f"a run finishes as one of {', '.join(_FINISHED_STATUSES)}, not {status!r}")
        cleaned = None if summary is None else _clean_json(dict(summary), "summary")
        with self._session(write=True) as session:
            row = session.get(Run, run_id, with_for_update=True)
            if row is None:
                raise CatalogError(f"no run with id {run_id!r}")
            if row.status != "running":
                raise CatalogError(f"run {run_id} already finished as {row.status}; only a running run can be finished")
            row.status = status
            row.finished_at = utcnow()
            row.summary = cleaned
            row.error = None if error is None else _redact_text(str(error))
            session.flush()
            return _run_record(row)

    def reopen_run(self, run_id: str) -> RunRecord:
        """Mark a run that never finished (its driver died) or failed as ``running`` again, to resume it."""
        with self._session(write=True) as session:
            row = session.get(Run, run_id, with_for_update=True)
            if row is None:
                raise CatalogError(f"no run with id {run_id!r}")
            if row.status not in ("running", "failed"):
                raise CatalogError(f"run {run_id} {row.status}; only a run that failed or never finished can be resumed")
            row.status, row.finished_at, row.summary, row.error = "running", None, None, None
            session.flush()
            return _run_record(row)

    def get_run(self, run_id: str) -> RunRecord:
        """The run with id ``run_id``; CatalogError if there is none."""
        with self._session(write=False) as session:
            row = session.get(Run, run_id)
            if row is None:
                raise CatalogError(f"no run with id {run_id!r}")
            return _run_record(row)

    def list_runs(self, job_name: str | None = None, limit: int = 100) -> list[RunRecord]:
        """The ``limit`` newest runs (of ``job_name`` only, if given), newest first."""
        _positive_int(limit, "limit")
        query = select(Run).order_by(Run.started_at.desc(), Run.id.desc()).limit(limit)
        if job_name is not None:
            query = query.where(Run.job_name == job_name)
        with self._session(write=False) as session:
            return [_run_record(row) for row in session.scalars(query)]

    # ------------------------------------------------------------------ models

    def record_model_version(
        self,
        model_name: str,
        model_version: int | str,
        run_id: str | None,
        mlflow_run_id: str | None,
        dataset_name: str | None,
        dataset_version: int | None,
        dataset_digest: str | None,
        package_uri: str | None,
        framework: str,
        metrics: dict[str, Any],
    ) -> ModelVersionRecord:
        """Record a model version and its lineage (run, dataset version); versions are stored as strings."""
        if dataset_version is not None:
            _positive_int(dataset_version, "dataset_version")
        version = _name(str(model_version), "model_version")
        row = ModelVersion(
            model_name=_name(model_name, "model_name"),
            model_version=version,
            run_id=run_id,
            mlflow_run_id=mlflow_run_id,
            dataset_name=dataset_name,
            dataset_version=dataset_version,
            dataset_digest=dataset_digest,
            package_uri=None if package_uri is None else redact_url(str(package_uri)),
            framework=_name(framework, "framework"),
            metrics=_clean_json(dict(metrics), "metrics"),
            created_at=utcnow(),
        )
        try:
            with self._session(write=True) as session:
                if run_id is not None and session.get(Run, run_id) is None:
                    raise CatalogError(f"no run with id {run_id!r} to link model {model_name!r} version {version} to")
                session.add(row)
                session.flush()
                return _model_version_record(row)
        except IntegrityError as exc:
            taken = [record.model_version for record in self.list_model_versions(model_name)]
            if version in taken:
                raise CatalogError(
                    f"model {model_name!r} already has version {version} (versions: {_listing(taken)})"
                ) from exc
            raise CatalogError(
                f"cannot record model {model_name!r} version {version}: {_redact_text(str(exc.orig))}"
            ) from exc

    def list_model_versions(self, model_name: str | None = None) -> list[ModelVersionRecord]:
        """Every recorded model version (of ``model_name`` only, if given), by name then recording order."""
        query = select(ModelVersion).order_by(ModelVersion.model_name, ModelVersion.id)
        if model_name is not None:
            query = query.where(ModelVersion.model_name == model_name)
        with self._session(write=False) as session:
            return [_model_version_record(row) for row in session.scalars(query)]

    def delete_model_version(self, model_name: str, model_version: int | str) -> int:
        """Forget the lineage of a model version (after the registry deleted it); the rows removed."""
        with self._session(write=True) as session:
            result = session.execute(delete(ModelVersion).where(ModelVersion.model_name == model_name,
                                                                ModelVersion.model_version == str(model_version)))
            return int(result.rowcount or 0)

    def models_using_dataset(self, name: str, version: int | None = None) -> list[ModelVersionRecord]:
        """The model versions trained on dataset ``name`` (on ``version`` only, if given)."""
        query = (
            select(ModelVersion)
            .where(ModelVersion.dataset_name == name)
            .order_by(ModelVersion.model_name, ModelVersion.id)
        )
        if version is not None:
            query = query.where(ModelVersion.dataset_version == version)
        with self._session(write=False) as session:
            return [_model_version_record(row) for row in session.scalars(query)]

    # ------------------------------------------------------------------ preprocessing modules

    def add_module(
        self,
        name: str,
        source: str,
        filename: str,
        functions: list[dict[str, Any]],
    ) -> ModuleAdded:
        """Store ``source`` as the next version of module ``name``; nothing is stored when it equals the latest.

        A version is never overwritten: changed content always makes a new version, and content equal to an
        older (not the latest) version also makes a new one (``same_as`` names the older), so the latest is
        always what was added last.
        """
        from raymlp.config.schema import MODULE_NAME_PATTERN

        if not isinstance(name, str) or not re.match(MODULE_NAME_PATTERN, name):
            raise CatalogError(f"module name {name!r} is not a Python name (letters, digits and '_', not starting with a digit)")
        if not isinstance(source, str):
            raise CatalogError(f"module source must be text, got {type(source).__name__}")
        digest = hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()
        cleaned = _clean_json(list(functions), "functions", redact_keys=False)
        attempts = 50  # each conflict means another writer took a number; n writers need at most n - 1 retries
        for attempt in range(attempts):
            if attempt:
                time.sleep(random.uniform(0.001, 0.02))  # writers that collided try again apart
            try:
                with self._session(write=True) as session:
                    latest = session.scalars(
                        select(Module).where(Module.name == name).order_by(Module.version.desc()).limit(1)
                    ).first()
                    if latest is not None and latest.sha256 == digest:
                        return ModuleAdded(_module_record(latest), created=False)
                    same_as = session.scalar(
                        select(func.max(Module.version)).where(Module.name == name, Module.sha256 == digest)
                    )
                    row = Module(
                        name=name,
                        version=1 if latest is None else latest.version + 1,
                        sha256=digest,
                        source=source,
                        filename=str(filename),
                        functions=cleaned,
                        created_at=utcnow(),
                    )
                    session.add(row)
                    session.flush()
                    return ModuleAdded(_module_record(row), created=True, same_as=same_as)
            except IntegrityError as exc:  # a concurrent add took the number: count again
                if attempt == attempts - 1:
                    raise CatalogError(f"cannot add module {name!r}: {_redact_text(str(exc.orig))}") from exc
        raise AssertionError("unreachable")

    def get_module(self, name: str, version: int | None = None) -> ModuleRecord:
        """Version ``version`` of module ``name`` (None: the latest); CatalogError naming what exists."""
        if version is not None:
            _positive_int(version, "module version")
        with self._session(write=False) as session:
            query = select(Module).where(Module.name == name)
            if version is None:
                query = query.order_by(Module.version.desc()).limit(1)
            else:
                query = query.where(Module.version == version)
            row = session.scalars(query).first()
            if row is not None:
                return _module_record(row)
            versions = session.scalars(
                select(Module.version).where(Module.name == name).order_by(Module.version)
            ).all()
            if versions:
                raise NotInCatalog(f"module {name!r} has no version {version} (versions: {_listing(versions)})")
            names = session.scalars(select(Module.name).distinct().order_by(Module.name)).all()
            raise NotInCatalog(
                f"no module named {name!r} (modules: {_listing(names)}); add it with: raymlp data modules add FILE.py"
            )

    def list_modules(self, name: str | None = None) -> list[ModuleRecord]:
        """Every version of every module (of ``name`` only, if given), by name then version."""
        query = select(Module).order_by(Module.name, Module.version)
        if name is not None:
            query = query.where(Module.name == name)
        with self._session(write=False) as session:
            return [_module_record(row) for row in session.scalars(query)]
