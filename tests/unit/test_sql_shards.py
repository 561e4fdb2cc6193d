"""Sharded reads of tables and queries: every row exactly once, on all three databases."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

import pyarrow as pa
import pytest

from raymlp.data.integrity import content_digest
from raymlp.data.sql import engine_for, iter_sql_shards, read_sql, split_points, write_table
from raymlp.errors import UsageError, WorkFailed

from .test_data import DATABASES, database_url  # noqa: F401  (fixture)

# --- boundaries (no database) ---------------------------------------------------------------------


def test_split_points_cut_equal_widths_inside_the_range_without_duplicates():
    assert split_points(0, 99, 4) == [24, 49, 74]
    assert split_points(5, 7, 8) == [6, 7]  # more shards than values: duplicates collapse
    assert split_points(3, 3, 4) == [] and split_points(None, None, 4) == [] and split_points(0, 10, 1) == []
    assert split_points(-1.0, 1.0, 4) == [-0.5, 0.0, 0.5]
    assert split_points(-1e308, 1e308, 2) == [0.0]  # the width overflows a double; the cut does not
    assert split_points(0.0, float("inf"), 4) == [] and split_points(float("nan"), 1.0, 4) == []
    assert split_points(Decimal("0.00"), Decimal("1.00"), 4) == [Decimal("0.25"), Decimal("0.5"), Decimal("0.75")]
    assert split_points(datetime.date(2024, 1, 1), datetime.date(2024, 1, 5), 2) == [datetime.date(2024, 1, 3)]
    start = datetime.datetime(2024, 1, 1)
    assert split_points(start, start + datetime.timedelta(microseconds=3), 3) == [
        start + datetime.timedelta(microseconds=1),
        start + datetime.timedelta(microseconds=2),
    ]


# --- real databases -------------------------------------------------------------------------------


def keyed_table() -> pa.Table:
    """Keys of every kind, with NULLs, many duplicates on the cut points and text with % and quotes."""
    rows = 600
    cuts = {24, 49, 74}  # split_points(0, 99, 4): rows on the boundaries must land in one shard
    return pa.table(
        {
            "id": pa.array([None if i % 17 == 0 else (24 if i % 5 == 0 else i % 100) for i in range(rows)], pa.int64()),
            "amount": [None if i % 13 == 0 else (0.5 if i % 4 == 0 else (i % 97) / 7 - 3) for i in range(rows)],
            "day": [
                None if i % 11 == 0 else datetime.date(2020, 1, 1) + datetime.timedelta(days=(i * 7) % 60)
                for i in range(rows)
            ],
            "at": [
                None
                if i % 7 == 0
                else datetime.datetime(2021, 3, 4) + datetime.timedelta(minutes=i % 90, microseconds=i)
                for i in range(rows)
            ],
            "note": [f'row {i}: 50% "quoted"' if i in cuts else f"row {i}" for i in range(rows)],
        }
    )


@pytest.fixture
def keyed(database_url):  # noqa: F811
    """(url, a fresh table holding `keyed_table()`, the rows)."""
    name = f"raymlp_sh_{uuid.uuid4().hex[:10]}"
    table = keyed_table()
    write_table(database_url, name, table, "fail")
    yield database_url, name, table
    drop(database_url, name)


def drop(url: str, *names: str) -> None:
    import sqlalchemy as sa

    engine = engine_for(url)
    with engine.begin() as connection:
        for name in names:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {engine.dialect.identifier_preparer.quote(name)}"))
    engine.dispose()


@pytest.mark.parametrize("key", ["id", "amount", "day", "at"])
def test_sharded_read_of_a_table_equals_the_unsharded_read(keyed, key):
    url, name, table = keyed
    whole = read_sql(url, table=name)
    pieces = list(iter_sql_shards(url, table=name, shard_key=key, shards=4))
    assert len(pieces) == 5, "4 key ranges and one shard of NULL keys"
    assert all(piece.column_names == whole.column_names for piece in pieces)
    nulls = table.column(key).null_count
    assert sorted(piece.num_rows for piece in pieces).count(nulls) >= 1
    sharded = pa.concat_tables(pieces, promote_options="permissive")
    assert sharded.num_rows == whole.num_rows == table.num_rows
    assert content_digest(sharded) == content_digest(whole) == content_digest(table)
    assert content_digest(read_sql(url, table=name, shard_key=key, shards=4)) == content_digest(whole)


def test_sharded_query_with_percent_signs_and_more_shards_than_values(keyed):
    url, name, _ = keyed
    query = f"SELECT id, note FROM {name} WHERE note LIKE '%\"quoted\"%' OR id < 3"
    whole = read_sql(url, query=query)
    assert whole.num_rows > 3
    for shards in (2, 64):
        sharded = read_sql(url, query=query, shard_key="id", shards=shards)
        assert content_digest(sharded) == content_digest(whole)


def test_single_row_empty_and_all_null_tables(database_url):  # noqa: F811
    single, empty, nulls = (f"raymlp_sh_{uuid.uuid4().hex[:10]}" for _ in range(3))
    try:
        write_table(database_url, single, pa.table({"k": pa.array([7], pa.int64()), "v": ["only"]}), "fail")
        write_table(
            database_url, empty, pa.table({"k": pa.array([], pa.float64()), "v": pa.array([], pa.string())}), "fail"
        )
        write_table(database_url, nulls, pa.table({"k": pa.array([None, None], pa.int64()), "v": ["a", "b"]}), "fail")
        for name, rows in ((single, 1), (empty, 0), (nulls, 2)):
            pieces = list(iter_sql_shards(database_url, table=name, shard_key="k", shards=8))
            assert len(pieces) == 1, "one range (or, with no key values, the NULL shard) is all there is"
            sharded = pa.concat_tables(pieces)
            whole = read_sql(database_url, table=name)
            assert sharded.num_rows == whole.num_rows == rows
            assert sharded.column_names == ["k", "v"]
            assert content_digest(sharded) == content_digest(whole)
    finally:
        drop(database_url, single, empty, nulls)


def test_a_key_that_is_missing_or_not_a_number_or_date_is_refused(keyed):
    url, name, _ = keyed
    with pytest.raises(
        UsageError,
        match=rf"data.collect.shard_key: column 'nope' is not in table '{name}' "
        r"\(its columns: id, amount, day, at, note\)",
    ):
        read_sql(url, table=name, shard_key="nope", shards=2, where="data.collect")
    with pytest.raises(
        UsageError,
        match=r"data.source.sql.shard_key: column 'note' of table .* is TEXT; "
        "a shard key must be an integer, float, decimal, date or timestamp column",
    ):
        read_sql(url, table=name, shard_key="note", shards=2)
    with pytest.raises(UsageError, match=r"column 'missing' is not in the query's result \(its columns: id, note\)"):
        read_sql(url, query=f"SELECT id, note FROM {name}", shard_key="missing", shards=2)
    with pytest.raises(
        UsageError, match=r"column 'note' holds text values \('row 0' \.\. 'row 99'\); a shard key must be"
    ):
        read_sql(url, query=f"SELECT id, note FROM {name}", shard_key="note", shards=2)
    with pytest.raises(WorkFailed, match="does not exist"):
        read_sql(url, table=f"{name}_gone", shard_key="id", shards=2)


def test_hostile_key_and_table_names_are_quoted(database_url):  # noqa: F811
    name = f"raymlp sh; {uuid.uuid4().hex[:6]}"
    table = pa.table({'key "1"; --': pa.array([1, 2, 3, 4, None], pa.int64()), "v%s": ["a", "b", "c", "d", "e"]})
    try:
        write_table(database_url, name, table, "fail")
        sharded = read_sql(database_url, table=name, shard_key='key "1"; --', shards=3)
        assert content_digest(sharded) == content_digest(table)
    finally:
        drop(database_url, name)


def test_the_shards_are_read_in_parallel_on_their_own_connections(keyed):
    import threading

    import raymlp.data.sql.shards as sql

    url, name, _ = keyed
    seen: set[str] = set()
    original = sql._read_shard

    def spy(engine, plan, shard):
        seen.add(threading.current_thread().name)
        return original(engine, plan, shard)

    sql._read_shard = spy
    try:
        read_sql(url, table=name, shard_key="id", shards=4)
    finally:
        sql._read_shard = original
    assert all(thread.startswith("raymlp-shard") for thread in seen) and seen


def test_a_write_between_plan_and_read_is_caught_or_not_seen(keyed, monkeypatch):
    """MariaDB: the rows read must add up to the count taken at planning time, else WorkFailed.
    PostgreSQL: every shard reads the planning transaction's exported snapshot, so the write is not seen.
    SQLite: the planning transaction's read lock keeps the writer out until the read ends."""
    import sqlalchemy as sa

    import raymlp.data.sql.shards as sql

    url, name, table = keyed
    original = sql._plan_shards
    if url.startswith("sqlite"):

        def plan_then_try_to_delete(connection, **kwargs):
            plan = original(connection, **kwargs)
            writer = sa.create_engine(url, connect_args={"timeout": 0.2})
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                with writer.begin() as other:
                    other.execute(sa.text(f"DELETE FROM {name} WHERE id = 24"))
            writer.dispose()
            return plan

        monkeypatch.setattr(sql, "_plan_shards", plan_then_try_to_delete)
        assert content_digest(read_sql(url, table=name, shard_key="id", shards=3)) == content_digest(table)
        return

    def plan_then_delete(connection, **kwargs):
        plan = original(connection, **kwargs)
        engine = engine_for(url)
        with engine.begin() as other:
            other.execute(sa.text(f"DELETE FROM {name} WHERE id = 24"))
        engine.dispose()
        return plan

    monkeypatch.setattr(sql, "_plan_shards", plan_then_delete)
    if url.startswith("postgresql"):
        assert content_digest(read_sql(url, table=name, shard_key="id", shards=3)) == content_digest(table)
        assert read_sql(url, table=name).num_rows < table.num_rows  # the delete did happen
    else:
        with pytest.raises(
            WorkFailed, match=r"changed while it was read in shards: 600 rows when the shards were planned"
        ):
            read_sql(url, table=name, shard_key="id", shards=3)


# --- in a job -------------------------------------------------------------------------------------


def sharded_job(folder, url: str, table_name: str, key: str = "n", shards: int = 3):
    import pyarrow.csv as pacsv

    source = keyed_table().drop_columns(["at"]).append_column("n", pa.array(range(600), pa.int64()))
    csv = folder / "source.csv"
    pacsv.write_csv(source, csv)
    job = folder / "job.yaml"
    job.write_text(
        "version: 1\nname: sharded\n"
        f"data:\n  source: {{format: csv, path: '{csv}'}}\n"
        f"  collect: {{url: '{url}', table: {table_name}, mode: replace, shard_key: {key}, shards: {shards}}}\n"
        "  dataset: {name: sharded}\n"
    )
    return job, source


def test_convert_reads_the_collected_table_in_shards_and_verify_agrees(tmp_path, raymlp_home, database_url):  # noqa: F811
    from raymlp import load_job, run_job
    from raymlp.catalog import Catalog
    from raymlp.context import Reporter
    from raymlp.data.verify import verify_against_source
    from raymlp.storage import resolve_storage

    table_name = f"raymlp_sh_{uuid.uuid4().hex[:10]}"
    job, source = sharded_job(tmp_path, database_url, table_name)
    try:
        summary = run_job(load_job(job), reporter=Reporter(quiet=True))
        assert summary.dataset_rows == 600
        with Catalog(resolve_storage().catalog_url) as catalog:
            record = catalog.get_dataset_version("sharded")
        assert (record.manifest["source"]["shard_key"], record.manifest["source"]["shards"]) == ("n", 3)
        assert record.content_digest == content_digest(read_sql(database_url, table=table_name))
        assert verify_against_source(record.manifest, database_url) == []
    finally:
        drop(database_url, table_name)


def test_shards_without_a_key_is_a_config_error(tmp_path):
    from raymlp.config import ConfigError, load_job

    job = tmp_path / "job.yaml"
    job.write_text(
        "version: 1\nname: sharded\ndata:\n"
        "  source: {format: sql, sql: {url: 'sqlite:///w.db', table: t, shards: 4}}\n"
        "  dataset: {name: sharded}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_job(job)
    assert [str(issue) for issue in caught.value.issues] == [
        f"{job}:4: data.source.sql: shards: 4 needs shard_key: the numeric or date column whose range is split"
    ]


def test_cli_convert_with_a_text_shard_key_exits_2_and_verify_exits_0(tmp_path):
    import os
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    job, _ = sharded_job(tmp_path, url, "events", key="note")
    env = {**os.environ, "RAYMLP_HOME": str(tmp_path / "home")}

    def raymlp(*args):
        return subprocess.run(
            [sys.executable, "-m", "raymlp", *args], capture_output=True, text=True, env=env, timeout=300
        )

    assert raymlp("data", "collect", str(job)).returncode == 0
    refused = raymlp("data", "convert", str(job))
    assert refused.returncode == 2, refused.stderr
    assert (
        "data.collect.shard_key: column 'note' of table 'events' is TEXT; a shard key must be an integer, "
        "float, decimal, date or timestamp column"
    ) in refused.stderr
    converted = raymlp("data", "convert", str(job), "--set", "data.collect.shard_key=day")
    assert converted.returncode == 0, converted.stderr
    verified = raymlp("data", "verify", "sharded", "--job", str(job))
    assert verified.returncode == 0, verified.stderr
    assert "its source yields the same 600 rows and the same content digest" in verified.stdout
