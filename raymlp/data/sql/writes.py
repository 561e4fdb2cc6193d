"""Writing Arrow into a database table atomically: a staging table, widened while pieces stream in, renamed into place with its rejects."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from raymlp.errors import WorkFailed

from .columns import sql_column_type
from .engine import engine_for, raw_quote
from .loaders import LoadPiece, bulk_load
from .rejects import rejects_columns, rejects_rows, rejects_table_name


@dataclass(frozen=True)
class WrittenTable:
    """A table written by `write_table`."""

    table: str
    rows: int
    column_types: dict[str, str]
    method: str = ""  # how the rows went in: COPY FROM STDIN, LOAD DATA LOCAL INFILE, ...
    rejected: int = 0  # malformed records kept in `rejects_table`
    rejects_table: str | None = None  # written (created, replaced or appended to) with the table


class TypesWidened(Exception):
    """A later piece of a streamed load needs a column type that the rows already loaded cannot
    take in place (their values would change): the caller loads the source whole instead."""


def write_table(url: str, name: str, table: pa.Table, mode: str, batch_rows: int = 50_000) -> WrittenTable:
    """Write `table` into database table `name` so that it appears complete or not at all."""
    return write_tables(url, name, [LoadPiece(table)], mode, batch_rows)


def write_tables(
    url: str, name: str, pieces: Iterable[LoadPiece], mode: str, batch_rows: int = 50_000, keep_rejects: bool = False
) -> WrittenTable:
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
            raise WorkFailed(
                f"table '{name}' already exists in {redact_url(url)}; set data.collect.mode to append or replace"
            )
        if rejects_exist and mode == "fail":
            raise WorkFailed(
                f"table '{rejects_name}' already exists in {redact_url(url)} (malformed records of an "
                f"earlier collect into '{name}'); drop it, or set data.collect.mode to append or replace"
            )
        if exists and mode == "append" and existing != first.schema.names:
            raise WorkFailed(
                f"cannot append to '{name}': its columns are {existing}, the source has {first.schema.names}"
            )
        # MariaDB/MySQL commit DDL implicitly: the staging tables are dropped by hand if anything fails.
        with engine.begin() as connection:
            staging = sa.Table(
                staging_name,
                sa.MetaData(),
                *[sa.Column(field.name, sql_column_type(field.type), nullable=True) for field in first.schema],
            )
            staging.create(connection)
            rejects_staging = None
            if keep_rejects:
                rejects_staging = sa.Table(rejects_staging_name, sa.MetaData(), *rejects_columns())
                rejects_staging.create(connection)
                if mode == "append" and not rejects_exist:
                    sa.Table(rejects_name, sa.MetaData(), *rejects_columns()).create(connection)
                    created_rejects = rejects_exist = True
            loaded = _LoadedColumns(first.schema)
            rows, rejected, methods = 0, 0, []
            for piece in itertools.chain([first_piece], pieces):
                if not piece.table.schema.equals(loaded.schema):
                    staging = _widen(connection, staging, staging_sql, loaded, piece.table.schema)
                methods.append(bulk_load(connection, staging, staging_sql, piece, batch_rows))
                loaded.add(piece.table)
                rows += piece.table.num_rows
                if piece.rejects is not None and piece.rejects.num_rows:
                    if rejects_staging is None:
                        raise ValueError("a piece has malformed records but write_tables was not asked to keep them")
                    kept = LoadPiece(rejects_rows(piece.rejects))
                    bulk_load(connection, rejects_staging, rejects_staging_sql, kept, batch_rows)
                    rejected += piece.rejects.num_rows
            if exists and mode == "append" and existing != loaded.schema.names:
                raise WorkFailed(
                    f"cannot append to '{name}': its columns are {existing}, the source has {loaded.schema.names}"
                )
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
            raise WorkFailed(
                f"writing table '{name}' to {redact_url(url)} failed: {error.__class__.__name__}: "
                f"{getattr(error, 'orig', None) or error}"
            ) from None
        raise
    finally:
        if hasattr(pieces, "close"):  # a generator: stop its readers now, not when it is collected
            pieces.close()
        engine.dispose()
    column_types = {column.name: str(column.type.compile(dialect=engine.dialect)) for column in staging.columns}
    method = " + ".join(dict.fromkeys(methods)) + (f" ({len(methods)} pieces)" if len(methods) > 1 else "")
    return WrittenTable(
        table=name,
        rows=rows,
        column_types=column_types,
        method=method,
        rejected=rejected,
        rejects_table=rejects_name if keep_rejects else None,
    )


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
            changes.append(
                f"ADD COLUMN {raw_quote(dialect, field.name)} {sql_column_type(field.type).compile(dialect=dialect)}"
            )
            continue
        before = loaded.schema.field(field.name).type
        if before == field.type:
            continue
        keeps_values = not loaded.holds_values[field.name] or (
            pa.types.is_integer(before) and pa.types.is_floating(field.type)
        )
        if not keeps_values:
            raise TypesWidened(f"column '{field.name}' was loaded as {before} and now needs {field.type}")
        sql_type = sql_column_type(field.type).compile(dialect=dialect)
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
    return sa.Table(
        staging.name,
        sa.MetaData(),
        *[sa.Column(field.name, sql_column_type(field.type), nullable=True) for field in schema],
    )


def _drop_quietly(engine, quoted_table: str) -> None:
    import sqlalchemy as sa

    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {quoted_table}"))
    except sa.exc.SQLAlchemyError:
        pass
