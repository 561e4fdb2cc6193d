"""Collect's bulk paths: COPY, LOAD DATA LOCAL INFILE (or multi-row INSERT), SQLite executemany."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from raymlp.data.integrity import content_digest
from raymlp.data.sql import engine_for, read_sql, write_table
from raymlp.errors import WorkFailed

from .test_data import MYSQL_URL, awkward_table, database_url, require_service  # noqa: F401  (fixture)

METHODS = {"sqlite": "executemany", "postgresql": "COPY FROM STDIN", "mysql": "LOAD DATA LOCAL INFILE"}


def binary_table() -> pa.Table:
    """Bytes a text path would mangle: every byte value, NUL, quotes, backslashes, newlines, empty, null."""
    return pa.table(
        {
            "blob": pa.array([bytes(range(256)), b"", None, b'\\N,"\n\r\\', b"\x00" * 70_000], pa.binary()),
            "text": ["all bytes", "empty", None, "escapes", "over 64 KiB"],
        }
    )


def staging_left(url: str) -> set[str]:
    import sqlalchemy as sa

    engine = engine_for(url)
    with engine.connect() as connection:
        names = {t for t in sa.inspect(connection).get_table_names() if t.startswith("_raymlp_")}
    engine.dispose()
    return names


def drop(url: str, name: str) -> None:
    engine = engine_for(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {engine.dialect.identifier_preparer.quote(name)}")
    engine.dispose()


def test_binary_and_awkward_values_round_trip_by_the_fast_path(database_url):  # noqa: F811
    name, other = (f"raymlp_bl_{uuid.uuid4().hex[:10]}" for _ in range(2))
    try:
        written = write_table(database_url, name, binary_table(), "fail")
        kind = database_url.split(":")[0]
        assert written.method == METHODS[kind]
        assert written.column_types["blob"] == {"sqlite": "BLOB", "postgresql": "BYTEA", "mysql": "LONGBLOB"}[kind]
        back = read_sql(database_url, table=name)
        assert back.schema.field("blob").type == pa.binary()
        assert sorted(back.to_pylist(), key=str) == sorted(binary_table().to_pylist(), key=str)
        assert content_digest(back) == content_digest(binary_table())
        awkward = awkward_table().append_column("back\\slash %s", pa.array(["\\N", "a\\b", "\\", None, "N"]))
        write_table(database_url, other, awkward, "fail")
        assert content_digest(read_sql(database_url, table=other).select(awkward.column_names)) == content_digest(
            awkward
        )
    finally:
        drop(database_url, name)
        drop(database_url, other)


def test_mariadb_falls_back_to_multi_row_inserts_when_local_infile_is_off(monkeypatch):
    """The server's answer is replaced; the INSERT path then runs for real."""
    import raymlp.data.sql.loaders as sql

    require_service(MYSQL_URL, "mariadb")
    monkeypatch.setattr(sql, "_server_allows_local_infile", lambda cursor: False)
    name = f"raymlp_bl_{uuid.uuid4().hex[:10]}"
    table = pa.concat_tables([awkward_table()] * 3)
    try:
        written = write_table(MYSQL_URL, name, table, "fail", batch_rows=4)
        assert written.method == "multi-row INSERT (LOAD DATA LOCAL INFILE refused: the server has local_infile=OFF)"
        assert content_digest(read_sql(MYSQL_URL, table=name).select(table.column_names)) == content_digest(table)
        write_table(MYSQL_URL, name, binary_table().select(["blob"]).rename_columns(["text"]), "replace")
        assert read_sql(MYSQL_URL, table=name).column("text").to_pylist() == binary_table().column("blob").to_pylist()
    finally:
        drop(MYSQL_URL, name)


def test_a_value_mariadb_cannot_hold_fails_the_load_and_leaves_nothing():
    """LOAD DATA LOCAL turns errors into warnings; a warning must fail the collect, not truncate."""
    require_service(MYSQL_URL, "mariadb")
    name = f"raymlp_bl_{uuid.uuid4().hex[:10]}"
    before = staging_left(MYSQL_URL)
    table = pa.table({"x": [1.0, float("nan"), 2.0]})
    try:
        with pytest.raises(
            WorkFailed, match=r"LOAD DATA reported 1 warning\(s\) \(values the table cannot hold exactly\); first: "
        ):
            write_table(MYSQL_URL, name, table, "fail")
        assert staging_left(MYSQL_URL) == before
        import sqlalchemy as sa

        engine = engine_for(MYSQL_URL)
        with engine.connect() as connection:
            assert not sa.inspect(connection).has_table(name)
        engine.dispose()
    finally:
        drop(MYSQL_URL, name)
