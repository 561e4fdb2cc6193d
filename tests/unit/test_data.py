"""Data stage without Ray: digests, validation with quarantine, splits, atomic versions and tables."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from raymlp.catalog import Catalog
from raymlp.config.schema import SchemaConfig, SplitConfig
from raymlp.data.integrity import content_digest, file_sha256
from raymlp.data.split import split_frame
from raymlp.data.sql import read_sql, write_table
from raymlp.data.validate import check_rows
from raymlp.data.versions import publish_version, read_version_table, verify_version
from raymlp.errors import WorkFailed

from ..conftest import MYSQL_URL, POSTGRES_URL, require_service


def wine_table() -> pa.Table:
    from raymlp.data.sources import sklearn_frame

    return pa.Table.from_pandas(sklearn_frame("wine"), preserve_index=False)


# --- content digest -------------------------------------------------------------------------------


def test_digest_ignores_row_order_and_batching_but_not_content():
    table = wine_table()
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    rebatched = pa.Table.from_batches(table.to_batches(max_chunksize=7))
    assert content_digest(table) == content_digest(shuffled) == content_digest(rebatched)
    changed = table.to_pandas()
    changed.loc[5, "alcohol"] += 0.01
    assert content_digest(pa.Table.from_pandas(changed, preserve_index=False)) != content_digest(table)
    duplicated = pa.concat_tables([table, table.slice(0, 1)])
    assert content_digest(duplicated) != content_digest(table)
    from raymlp.data.integrity import ContentDigest

    chunked = ContentDigest(table.schema)
    for start in (100, 0, 50):  # chunks in any order give the same digest
        chunked.add(table.slice(start, 50 if start < 100 else None))
    assert chunked.hexdigest() == content_digest(table)
    swapped_cells = table.to_pandas()
    swapped_cells.loc[[0, 1], "alcohol"] = swapped_cells.loc[[1, 0], "alcohol"].to_numpy()
    assert content_digest(pa.Table.from_pandas(swapped_cells, preserve_index=False)) != content_digest(table)


# --- validation and quarantine --------------------------------------------------------------------


SCHEMA = SchemaConfig.model_validate(
    {
        "on_error": "quarantine",
        "columns": {
            "id": {"type": "int", "unique": True, "nullable": False},
            "size": {"type": "float", "min": 0, "max": 10},
            "kind": {"type": "string", "allowed": ["a", "b"]},
        },
    }
)


def messy() -> pa.Table:
    return pa.table(
        {
            "id": ["1", "2", "2", "4", "x", None],
            "size": ["1.5", "-1", "3", "11", "2", "4"],
            "kind": ["a", "b", "a", "c", "a", "b"],
            "note": ["keep", "me", "as", "is", "ok", "!"],
        }
    )


def test_quarantine_keeps_bad_rows_aside_with_reasons_and_counts_reconcile():
    checked = check_rows(messy(), SCHEMA)
    assert checked.good.num_rows + checked.quarantined_rows == 6
    assert checked.good.to_pydict() == {"id": [1], "size": [1.5], "kind": ["a"], "note": ["keep"]}
    assert checked.good.schema.field("id").type == pa.int64()
    aside = checked.quarantined.to_pandas().set_index("_raymlp_row")["_raymlp_reason"].to_dict()
    assert aside == {
        2: "size: below min 0",
        3: "id: duplicate value",
        4: "size: above max 10; kind: not one of a, b",
        5: "id: not a valid int",
        6: "id: null is not allowed",
    }


def test_on_error_fail_stops_with_the_first_reasons():
    with pytest.raises(WorkFailed) as caught:
        check_rows(messy(), SCHEMA.model_copy(update={"on_error": "fail"}))
    message = str(caught.value)
    assert message.startswith("5 of 6 rows break data.schema (on_error: fail); first reasons:")
    assert "row 2: size: below min 0" in message


def test_missing_schema_column_is_named():
    with pytest.raises(WorkFailed, match="data.schema names columns the source does not have: id"):
        check_rows(pa.table({"size": [1.0], "kind": ["a"]}), SCHEMA)


# --- splits ---------------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_complete_and_stratified():
    frame = wine_table().to_pandas()
    config = SplitConfig(validation=0.2, test=0.2, seed=3, stratify=True)
    train, validation, test = split_frame(frame, config, frame["target"])
    again = split_frame(frame, config, frame["target"])
    assert [part.index.tolist() for part in (train, validation, test)] == [part.index.tolist() for part in again]
    indexes = set(train.index) | set(validation.index) | set(test.index)
    assert len(indexes) == len(frame) == len(train) + len(validation) + len(test)
    overall = frame["target"].value_counts(normalize=True)
    for part in (train, validation, test):
        assert (part["target"].value_counts(normalize=True) - overall).abs().max() < 0.08


# --- dataset versions -----------------------------------------------------------------------------


@pytest.fixture
def catalog(tmp_path):
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as store:
        yield store


def test_published_version_has_manifest_hashes_and_reads_back(tmp_path, catalog):
    table = wine_table()
    version = publish_version(catalog, str(tmp_path), "wine", table, {"kind": "test"})
    assert (version.version, Path(version.path).name) == (1, "v1")
    manifest = version.manifest
    assert manifest["row_count"] == 178 and manifest["content_digest"] == content_digest(table)
    for item in manifest["files"]:
        assert file_sha256(Path(version.path) / item["path"]) == item["sha256"]
    assert read_version_table(version.path, manifest).equals(table)
    assert verify_version(version.path, manifest) == []
    statistics = manifest["statistics"]
    assert statistics["alcohol"] == {
        "nulls": 0,
        "distinct": 126,
        "min": 11.03,
        "max": 14.83,
        "mean": pytest.approx(13.0006, abs=1e-4),
    }
    assert statistics["target"] == {"nulls": 0, "distinct": 3}
    assert catalog.get_dataset_version("wine").version == 1
    again = publish_version(catalog, str(tmp_path), "wine", table, {"kind": "test"})
    assert (again.version, again.reused) == (1, True), "the same rows again are the latest version, not a new one"
    changed = publish_version(catalog, str(tmp_path), "wine", table.slice(1), {"kind": "test"})
    assert (changed.version, changed.reused) == (2, False)


def test_tampering_is_detected(tmp_path, catalog):
    version = publish_version(catalog, str(tmp_path), "wine", wine_table(), {"kind": "test"})
    part = Path(version.path) / version.manifest["files"][0]["path"]
    part.write_bytes(part.read_bytes()[:-10] + b"0123456789")
    assert verify_version(version.path, version.manifest) == ["part-00000.parquet: sha256 differs from the manifest"]


def test_a_failed_publish_leaves_nothing_visible(tmp_path, catalog, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("catalog went away")

    monkeypatch.setattr(catalog, "register_dataset_version", refuse)
    with pytest.raises(RuntimeError):
        publish_version(catalog, str(tmp_path), "wine", wine_table(), {"kind": "test"})
    assert list((tmp_path / "datasets" / "wine").iterdir()) == []
    assert catalog.list_dataset_versions() == []


def test_a_folder_orphaned_by_a_crash_is_skipped(tmp_path, catalog):
    (tmp_path / "datasets" / "wine" / "v1").mkdir(parents=True)
    version = publish_version(catalog, str(tmp_path), "wine", wine_table(), {"kind": "test"})
    assert version.version == 2


# --- tables in real databases ---------------------------------------------------------------------

DATABASES = {"sqlite": None, "postgresql": POSTGRES_URL, "mariadb": MYSQL_URL}


@pytest.fixture(params=list(DATABASES))
def database_url(request, tmp_path):
    url = DATABASES[request.param]
    if url is None:
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    require_service(url, request.param)
    return url


def awkward_table() -> pa.Table:
    """Values that bulk paths get wrong: nulls, empty strings, quotes, newlines, bools, dates."""
    import datetime

    return pa.table(
        {
            "text": ["plain", "", None, 'comma, "quote"\nnewline', "ünïcode ✓"],
            "flag": [True, False, None, True, False],
            "count": pa.array([1, None, -3, 2**40, 0], pa.int64()),
            "amount": [1.5, None, -0.25, 1e300, 3.0],
            "day": [datetime.date(2024, 2, 29), None, datetime.date(1970, 1, 1), datetime.date(2000, 12, 31), None],
            "at": [
                datetime.datetime(2024, 2, 29, 23, 59, 59, 123456),
                None,
                datetime.datetime(1999, 1, 1),
                None,
                datetime.datetime(2030, 6, 1, 12),
            ],
        }
    )


def test_awkward_values_round_trip_exactly(database_url):
    import sqlalchemy as sa

    from raymlp.data.sql import engine_for

    name = f"raymlp_t_{uuid.uuid4().hex[:10]}"
    table = awkward_table()
    try:
        write_table(database_url, name, table, "fail")
        back = read_sql(database_url, table=name)
        by_text = lambda t: sorted(t.to_pylist(), key=lambda row: str(row["text"]))  # noqa: E731
        expected, got = by_text(table), by_text(back.select(table.column_names))
        assert got == expected
        assert content_digest(back.select(table.column_names)) == content_digest(table)
    finally:
        engine = engine_for(database_url)
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


def test_tables_are_written_completely_or_not_at_all(database_url):
    import sqlalchemy as sa

    from raymlp.data.sql import engine_for

    name = f"raymlp_t_{uuid.uuid4().hex[:10]}"
    table = wine_table()
    engine = engine_for(database_url)

    def staging_tables() -> set[str]:
        with engine.connect() as connection:
            return {t for t in sa.inspect(connection).get_table_names() if t.startswith("_raymlp_")}

    before = staging_tables()
    try:
        written = write_table(database_url, name, table, "fail")
        assert written.rows == 178 and written.column_types["target"] in ("TEXT",)
        assert read_sql(database_url, table=name).num_rows == 178
        with pytest.raises(WorkFailed, match=f"table '{name}' already exists"):
            write_table(database_url, name, table, "fail")
        write_table(database_url, name, table.slice(0, 10), "append")
        assert read_sql(database_url, table=name).num_rows == 188
        write_table(database_url, name, table.slice(0, 5), "replace")
        back = read_sql(database_url, table=name)
        assert back.num_rows == 5
        assert content_digest(back.select(table.column_names)) == content_digest(table.slice(0, 5))
        with pytest.raises(WorkFailed, match="cannot append"):
            write_table(database_url, name, table.select(["alcohol"]), "append")
        assert read_sql(database_url, table=name).num_rows == 5
        assert staging_tables() == before, "a failed or finished write left a staging table behind"
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


def test_hostile_table_and_column_names_are_quoted_not_pasted(database_url):
    import sqlalchemy as sa

    from raymlp.data.sql import engine_for

    name = f"raymlp_t_{uuid.uuid4().hex[:10]}"
    victim = f"raymlp_victim_{uuid.uuid4().hex[:8]}"
    engine = engine_for(database_url)
    table = pa.table({'weird "name"': [1, 2], "drop table x; --": ["a", "b"], "select": [0.5, 1.5]})
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f"CREATE TABLE {victim} (id INTEGER)"))
        write_table(database_url, name, table, "fail")
        assert read_sql(database_url, table=name).to_pylist() == table.to_pylist()
        with pytest.raises(WorkFailed, match="does not exist"):
            read_sql(database_url, table=f"{name}; DROP TABLE {victim}")
        with engine.connect() as connection:
            assert sa.inspect(connection).has_table(victim)
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {victim}"))
        engine.dispose()


def test_dataset_names_that_are_paths_are_refused(tmp_path, catalog):
    from raymlp.errors import UsageError

    for bad in ("../outside", "a/b", ".hidden", ""):
        with pytest.raises(UsageError, match="is not a usable dataset name"):
            publish_version(catalog, str(tmp_path), bad, wine_table(), {"kind": "test"})
    assert not (tmp_path / "outside").exists()


def test_postgres_table_streams_into_a_version_chunk_by_chunk(tmp_path, monkeypatch):
    """COPY output cut into many small chunks (records with commas, quotes and newlines, NULL and
    '' apart) gives the same version as the whole table, and `fail` rules name the row."""
    import sqlalchemy as sa

    from raymlp import load_job, run_job
    from raymlp.context import Reporter
    from raymlp.data.sql import engine_for

    require_service(POSTGRES_URL, "PostgreSQL")
    name = f"raymlp_s_{uuid.uuid4().hex[:10]}"
    table = pa.concat_tables([awkward_table()] * 400)
    monkeypatch.setenv("RAYMLP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAYMLP_READ_RANGE_BYTES", "3000")
    job = tmp_path / "job.yaml"
    job.write_text(
        "version: 1\nname: streamed\ndata:\n  source: {format: csv, path: unused.csv}\n"
        f"  collect: {{url: '{POSTGRES_URL}', table: {name}}}\n  dataset: {{name: streamed}}\n"
    )
    try:
        write_table(POSTGRES_URL, name, table, "fail")
        summary = run_job(load_job(job), only=["convert"], reporter=Reporter(quiet=True))
        with Catalog(f"sqlite:///{tmp_path / 'home' / 'catalog.db'}") as catalog:
            record = catalog.get_dataset_version("streamed")
        assert summary.dataset_rows == 2000 and len(record.manifest["files"]) > 10
        assert record.content_digest == content_digest(table)
        got = read_version_table(record.path, record.manifest).select(table.column_names)
        assert sorted(map(str, got.to_pylist())) == sorted(map(str, table.to_pylist()))
        job.write_text(job.read_text() + "  schema: {on_error: fail, columns: {count: {type: int, max: 1000}}}\n")
        with pytest.raises(WorkFailed, match=r"400 rows break data.schema .*\n  row 4: count: above max 1000"):
            run_job(load_job(job), only=["convert"], reporter=Reporter(quiet=True))
    finally:
        engine = engine_for(POSTGRES_URL)
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


def test_a_copy_stream_left_early_stops_the_copy(tmp_path):
    """A consumer that stops after the first chunk (a failed worker, say) ends the COPY: the
    receiving thread is gone and the connection closed, without reading the rest."""
    import threading
    import time

    import sqlalchemy as sa

    from raymlp.data.sql import engine_for, postgres_copy_stream

    require_service(POSTGRES_URL, "PostgreSQL")
    name = f"raymlp_s_{uuid.uuid4().hex[:10]}"
    engine = engine_for(POSTGRES_URL)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    f"CREATE TABLE {name} AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 300000) AS g"
                )
            )
        started = time.perf_counter()
        with postgres_copy_stream(POSTGRES_URL, table=name, chunk_bytes=4096) as stream:
            first = next(stream.chunks)
        assert first.count(b"\n") > 10 and first.endswith(b"\n")
        assert time.perf_counter() - started < 10
        assert not [thread for thread in threading.enumerate() if thread.name == "raymlp-copy-out"]
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


def test_digest_of_pieces_is_the_digest_of_the_whole_with_nulls_of_every_type():
    from raymlp.data.integrity import ContentDigest

    table = pa.concat_tables([awkward_table()] * 7)
    for size in (1, 3, 11):
        pieces = ContentDigest(table.schema)
        for start in range(0, table.num_rows, size):
            pieces.add(table.slice(start, size))
        assert pieces.hexdigest() == content_digest(table)
    nulled = awkward_table().to_pylist()
    nulled[0]["text"] = None  # a null where a value was changes the digest, in every column kind
    assert content_digest(pa.Table.from_pylist(nulled, schema=awkward_table().schema)) != content_digest(
        awkward_table()
    )


def test_a_query_is_sent_as_written(database_url):
    """'%' and ':name' inside a query's literals are text, not parameters, on every driver."""
    table = read_sql(database_url, query="SELECT 'a%b :name' AS v, 1 AS n")
    assert table.to_pylist() == [{"v": "a%b :name", "n": 1}]
    with pytest.raises(WorkFailed, match="reading from .* failed"):
        read_sql(database_url, query="SELECT * FROM raymlp_no_such_table_here")
