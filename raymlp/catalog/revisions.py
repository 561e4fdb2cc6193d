"""The catalog's schema revisions: Alembic scripts under migrations/, applied on open, newer stores refused."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, inspect

from raymlp.catalog.engine import WRITE_OPTION
from raymlp.catalog.errors import CatalogError
from raymlp.catalog.models import VERSION_TABLE, Base

#: Folder holding Alembic's env.py and the versions/ scripts (found relative to this file).
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_PG_MIGRATION_LOCK = 0x7261796D6C70  # "raymlp"; serialises concurrent first opens


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


def current_revision(connection: Connection) -> str | None:
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
        with bind.execution_options(**{WRITE_OPTION: True}).begin() as connection:
            return migrate(connection, revision)
    if not bind.in_transaction():
        with bind.begin():
            return migrate(bind, revision)
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    current = current_revision(bind)
    target = head_revision() if revision == "head" else revision
    if current == target:
        return current
    if current is None:
        _refuse_foreign_tables(bind)
    try:
        command.upgrade(_alembic_config(bind), revision)
    except CommandError as exc:
        raise CatalogError(f"cannot migrate the catalog from {current or 'empty'} to {revision}: {exc}") from exc
    return current_revision(bind)
