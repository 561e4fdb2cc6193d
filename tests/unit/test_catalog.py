"""The catalog keeps dataset versions, collections, runs and model lineage, on SQLite and PostgreSQL."""

from __future__ import annotations

import pickle
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine, make_url

import raymlp.catalog
from raymlp.catalog import (
    Catalog,
    CatalogError,
    DatasetVersionExists,
    migrate,
    redact_url,
    with_installed_driver,
)
from raymlp.catalog.models import VERSION_TABLE, Base

from ..conftest import POSTGRES_URL, require_service

MIGRATIONS = Path(raymlp.catalog.__file__).parent / "migrations"


# --------------------------------------------------------------------------- helpers


def _driver(url: str | URL) -> URL:
    return with_installed_driver(make_url(url))


@contextmanager
def raw_engine(url: str) -> Iterator[Engine]:
    """A plain SQLAlchemy engine on ``url``, disposed afterwards, to look at the tables directly."""
    parsed = _driver(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed)
    try:
        yield engine
    finally:
        engine.dispose()


@cache
def _postgres_admin() -> Engine:
    """An AUTOCOMMIT engine on the test server's admin database."""
    return sa.create_engine(_driver(POSTGRES_URL), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


def require_postgres() -> Engine:
    """The admin engine; skips the test without a server, but fails it under CI=true."""
    require_service(POSTGRES_URL, "PostgreSQL")
    return _postgres_admin()


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty database ``raymlp_test_<hex>``, dropped afterwards."""
    admin = require_postgres()
    name = f"raymlp_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty store, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'catalog.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def catalog(store_url: str) -> Iterator[Catalog]:
    """An open catalog on a fresh store."""
    with Catalog(store_url) as opened:
        yield opened


def newest_script_revision() -> str:
    """The head revision, read straight from the packaged scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def register(catalog: Catalog, name: str, version: int) -> None:
    """Register a small dataset version."""
    catalog.register_dataset_version(
        name,
        version,
        f"/data/{name}/v{version}",
        {"files": ["part-0.parquet"]},
        10 * version,
        f"sha256:{name}{version}",
        {"uri": f"file:///raw/{name}.csv"},
    )


# --------------------------------------------------------------------------- opening and migrations


def test_a_fresh_sqlite_catalog_is_created_at_head_and_reopening_keeps_its_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'deeper' / 'catalog.db'}"
    with Catalog(url) as catalog:
        assert catalog.revision() == newest_script_revision()
        register(catalog, "wine", 1)
    assert (tmp_path / "nested" / "deeper" / "catalog.db").is_file()
    with Catalog(url) as again, Catalog(url) as third:
        assert again.revision() == third.revision() == newest_script_revision()
        assert [record.version for record in third.list_dataset_versions("wine")] == [1]


def test_relative_sqlite_paths_are_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with Catalog("sqlite:///stores/catalog.db") as catalog:
        assert catalog.url == f"sqlite:///{tmp_path / 'stores' / 'catalog.db'}"
    assert (tmp_path / "stores" / "catalog.db").is_file()


def test_the_default_catalog_lives_under_raymlp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYMLP_HOME", str(tmp_path / "home"))
    with Catalog() as catalog:
        assert catalog.revision() == newest_script_revision()
    assert (tmp_path / "home" / "catalog.db").is_file()


def test_a_store_at_0001_is_upgraded_on_open_and_keeps_its_datasets(store_url: str) -> None:
    datasets = sa.table("datasets", sa.column("name"), sa.column("created_at", sa.DateTime(timezone=True)))
    versions = sa.table(
        "dataset_versions",
        *(sa.column(name) for name in ("name", "version", "path", "row_count", "content_digest")),
        sa.column("manifest", sa.JSON()),
        sa.column("source", sa.JSON()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    created = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with raw_engine(store_url) as engine:
        with engine.begin() as connection:
            assert migrate(connection, "0001") == "0001"
            connection.execute(sa.insert(datasets).values(name="wine", created_at=created))
            connection.execute(
                sa.insert(versions).values(
                    name="wine",
                    version=1,
                    path="/data/wine/v1",
                    row_count=178,
                    content_digest="sha256:old",
                    manifest={"files": 1},
                    source={"uri": "file:///wine.csv"},
                    created_at=created,
                )
            )
        assert "runs" not in sa.inspect(engine).get_table_names()

    with Catalog(store_url) as catalog:
        assert catalog.revision() == newest_script_revision()
        old = catalog.get_dataset_version("wine")
        assert (old.version, old.row_count, old.manifest, old.created_at) == (1, 178, {"files": 1}, created)
        run = catalog.start_run("train-wine", "jobs/wine.yaml", "sha256:job", {}, ["train"])
        catalog.record_model_version("wine-clf", 1, run.id, None, "wine", 1, "sha256:old", None, "sklearn", {})
        assert [model.run_id for model in catalog.models_using_dataset("wine", 1)] == [run.id]


def test_the_models_match_the_schema_the_migrations_build(catalog: Catalog, store_url: str) -> None:
    with raw_engine(store_url) as engine, engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, Base.metadata) == []
        # Constraint names matter to later migrations (SQLite batch mode finds constraints by name).
        inspector = sa.inspect(connection)
        assert [check["name"] for check in inspector.get_check_constraints("runs")] == ["ck_runs_status"]
        for table in Base.metadata.sorted_tables:
            declared = {
                c.name for c in table.constraints if isinstance(c, sa.UniqueConstraint | sa.ForeignKeyConstraint)
            }
            found = {c["name"] for c in inspector.get_unique_constraints(table.name)}
            found |= {c["name"] for c in inspector.get_foreign_keys(table.name)}
            assert found == declared, table.name


def test_a_store_from_a_newer_raymlp_is_refused_with_the_revisions_known(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    Catalog(url).close()
    with raw_engine(url) as engine, engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
    with pytest.raises(CatalogError, match=r"revision '0099'.*known: 0001, 0002"):
        Catalog(url)


def test_a_database_holding_someone_elses_runs_table_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with raw_engine(url) as engine, engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY)"))
    with pytest.raises(CatalogError, match="already has tables runs"):
        Catalog(url)


def test_unknown_database_kinds_and_garbage_urls_are_catalog_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not a database URL"):
        Catalog("just some words")
    with pytest.raises(CatalogError, match="unknown database kind"):
        Catalog("nosuchdb://user:hunter2@host/db")


def test_a_catalog_pickles_as_its_url_and_reopens(tmp_path: Path) -> None:
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        register(catalog, "wine", 1)
        with pickle.loads(pickle.dumps(catalog)) as copy:
            assert copy.get_dataset_version("wine").version == 1


# --------------------------------------------------------------------------- datasets


def test_dataset_versions_number_up_and_missing_ones_are_explained(catalog: Catalog) -> None:
    assert catalog.next_dataset_version("wine") == 1
    register(catalog, "wine", 1)
    register(catalog, "wine", 2)
    register(catalog, "iris", 1)

    latest = catalog.get_dataset_version("wine")
    assert (latest.name, latest.version, latest.path, latest.row_count) == ("wine", 2, "/data/wine/v2", 20)
    assert latest.created_at.tzinfo is not None and latest.created_at.utcoffset().total_seconds() == 0
    assert catalog.get_dataset_version("wine", 1).content_digest == "sha256:wine1"
    assert catalog.next_dataset_version("wine") == 3
    assert [(r.name, r.version) for r in catalog.list_dataset_versions()] == [("iris", 1), ("wine", 1), ("wine", 2)]

    with pytest.raises(CatalogError, match=r"dataset 'wine' has no version 7 \(versions: 1, 2\)"):
        catalog.get_dataset_version("wine", 7)
    with pytest.raises(CatalogError, match=r"no dataset named 'beer' \(datasets: iris, wine\)"):
        catalog.get_dataset_version("beer")
    catalog.ensure_dataset("empty")
    with pytest.raises(CatalogError, match="dataset 'empty' has no versions yet"):
        catalog.get_dataset_version("empty")


def test_a_duplicate_version_is_refused_and_the_store_stays_usable(catalog: Catalog) -> None:
    register(catalog, "wine", 1)
    with pytest.raises(DatasetVersionExists, match=r"already has version 1 .*next free one is 2"):
        register(catalog, "wine", 1)
    register(catalog, "wine", 2)
    assert [record.version for record in catalog.list_dataset_versions("wine")] == [1, 2]
    assert catalog.ensure_dataset("wine").name == "wine"


def test_concurrent_writers_share_one_store_without_losing_versions(store_url: str) -> None:
    writers, each = 4, 5
    start = threading.Barrier(writers)
    failures: list[BaseException] = []

    def write() -> None:
        try:
            start.wait()
            with Catalog(store_url) as catalog:
                for _ in range(each):
                    while True:
                        try:
                            register(catalog, "shared", catalog.next_dataset_version("shared"))
                            break
                        except DatasetVersionExists:
                            continue
        except BaseException as exc:  # reported below, with the thread's error
            failures.append(exc)

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    with Catalog(store_url) as catalog:
        versions = [record.version for record in catalog.list_dataset_versions("shared")]
    assert versions == list(range(1, writers * each + 1))


# --------------------------------------------------------------------------- collections and secrets


def test_a_collection_never_stores_the_target_password(catalog: Catalog, store_url: str) -> None:
    record = catalog.record_collection(
        "https://alice:tok3n@files.example.com/wine.csv",
        "ab" * 32,
        "postgresql://user:secret@host/db",
        "wine_raw",
        "replace",
        178,
        {"alcohol": "DOUBLE", "password": "TEXT"},
    )
    catalog.record_collection("file:///raw/iris.csv", None, "sqlite:///w.db", "iris_raw", "append", 150, {})
    assert record.target_url == "postgresql://user:***@host/db"
    assert record.column_types == {"alcohol": "DOUBLE", "password": "TEXT"}  # a column name, not a secret
    assert [c.target_table for c in catalog.list_collections()] == ["wine_raw", "iris_raw"]
    assert [c.row_count for c in catalog.list_collections("iris_raw")] == [150]

    with raw_engine(store_url) as engine, engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM collections")).all()
    stored = repr(rows)
    assert "secret" not in stored and "tok3n" not in stored
    assert "postgresql://user:***@host/db" in stored


def test_secrets_inside_run_configs_are_redacted_before_storing(catalog: Catalog, store_url: str) -> None:
    config = {
        "collect": {"target": "postgresql://etl:s3cr3t@db/warehouse", "password": "s3cr3t"},
        "train": {"pad_token": "<pad>", "metrics": [float("nan"), 1.5]},
    }
    run = catalog.start_run("etl", "jobs/etl.yaml", "sha256:job", config, ["collect", "train"])
    assert run.config["collect"] == {"target": "postgresql://etl:***@db/warehouse", "password": "***"}
    assert run.config["train"] == {"pad_token": "<pad>", "metrics": [None, 1.5]}
    catalog.finish_run(run.id, "failed", error="cannot reach postgresql://etl:s3cr3t@db/warehouse")
    with raw_engine(store_url) as engine, engine.connect() as connection:
        stored = repr(connection.execute(sa.text("SELECT * FROM runs")).all())
    assert "s3cr3t" not in stored


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://user:secret@host:5432/db", "postgresql://user:***@host:5432/db"),
        ("mysql+pymysql://root:p%40ss@db/x?charset=utf8mb4", "mysql+pymysql://root:***@db/x?charset=utf8mb4"),
        ("postgresql://user@host/db?password=secret", "postgresql://user@host/db?password=***"),
        ("postgresql://user@host/db?sslmode=require&b=1&a=2", "postgresql://user@host/db?sslmode=require&b=1&a=2"),
        ("s3://bucket/data/wine.parquet", "s3://bucket/data/wine.parquet"),
        ("/data/wine.csv", "/data/wine.csv"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_redact_url_removes_passwords_and_leaves_the_rest(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


# --------------------------------------------------------------------------- runs and models


def test_a_run_is_started_finished_and_listed_newest_first(catalog: Catalog) -> None:
    first = catalog.start_run("train", "jobs/train.yaml", "sha256:a", {"epochs": 3}, ["prepare", "train"])
    second = catalog.start_run("train", "jobs/train.yaml", "sha256:a", {"epochs": 4}, ["prepare", "train"])
    other = catalog.start_run("score", "jobs/score.yaml", "sha256:b", {}, ["score"])
    assert (first.status, first.finished_at, len(first.id)) == ("running", None, 32)

    done = catalog.finish_run(first.id, "succeeded", summary={"accuracy": 0.93, "rows": 178})
    assert (done.status, done.summary, done.error) == ("succeeded", {"accuracy": 0.93, "rows": 178}, None)
    assert done.finished_at is not None and done.finished_at >= done.started_at
    failed = catalog.finish_run(second.id, "failed", error="train: out of memory")
    assert (failed.status, failed.summary, failed.error) == ("failed", None, "train: out of memory")

    assert [run.id for run in catalog.list_runs()] == [other.id, second.id, first.id]
    assert [run.id for run in catalog.list_runs(job_name="train", limit=1)] == [second.id]
    assert catalog.get_run(first.id) == done
    assert catalog.get_run(first.id).config == {"epochs": 3}

    with pytest.raises(CatalogError, match="already finished as succeeded"):
        catalog.finish_run(first.id, "failed")
    with pytest.raises(CatalogError, match="one of succeeded, failed, stopped, not 'done'"):
        catalog.finish_run(other.id, "done")
    with pytest.raises(CatalogError, match="no run with id 'nope'"):
        catalog.get_run("nope")


def test_a_store_at_0004_upgrades_to_the_stopped_status_and_keeps_its_runs(store_url: str) -> None:
    runs = sa.table(
        "runs",
        *(sa.column(name) for name in ("id", "job_name", "job_path", "job_sha256", "status")),
        sa.column("config", sa.JSON()),
        sa.column("stages", sa.JSON()),
        sa.column("started_at", sa.DateTime(timezone=True)),
    )
    started = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def run(run_id: str, status: str) -> dict[str, object]:
        return {
            "id": run_id,
            "job_name": "train",
            "job_path": "jobs/train.yaml",
            "job_sha256": "sha256:a",
            "status": status,
            "config": {},
            "stages": ["train"],
            "started_at": started,
        }

    with raw_engine(store_url) as engine:
        with engine.begin() as connection:
            assert migrate(connection, "0004") == "0004"
            connection.execute(sa.insert(runs).values(run("old-running", "running")))
            connection.execute(sa.insert(runs).values(run("old-failed", "failed")))
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(sa.insert(runs).values(run("too-early", "stopped")))

    with Catalog(store_url) as catalog:
        assert catalog.revision() == newest_script_revision()
        assert (catalog.get_run("old-failed").status, catalog.get_run("old-running").started_at) == ("failed", started)
        stopped = catalog.finish_run("old-running", "stopped", summary={"sweep": "s1"}, error="stopped by asha")
        assert (stopped.status, stopped.summary, stopped.error) == ("stopped", {"sweep": "s1"}, "stopped by asha")
        assert catalog.get_run("old-running") == stopped
        with pytest.raises(CatalogError, match="run old-running stopped; only a run that failed or never finished"):
            catalog.reopen_run("old-running")
    with raw_engine(store_url) as engine:
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(sa.insert(runs).values(run("bogus", "paused")))
        assert [check["name"] for check in sa.inspect(engine).get_check_constraints("runs")] == ["ck_runs_status"]


def test_model_lineage_answers_which_models_used_a_dataset(catalog: Catalog) -> None:
    register(catalog, "wine", 1)
    register(catalog, "wine", 2)
    run = catalog.start_run("train", "jobs/train.yaml", "sha256:a", {}, ["train"])
    catalog.record_model_version("wine-clf", 1, run.id, "mlf1", "wine", 1, "sha256:wine1", None, "sklearn", {})
    second = catalog.record_model_version(
        "wine-clf",
        "2",
        run.id,
        "mlf2",
        "wine",
        2,
        "sha256:wine2",
        "s3://models/wine-clf/2",
        "xgboost",
        {"accuracy": 0.97},
    )
    catalog.record_model_version("wine-reg", 1, None, None, "wine", 2, "sha256:wine2", None, "torch", {})
    catalog.record_model_version("iris-clf", 1, None, None, "iris", 1, "sha256:iris1", None, "sklearn", {})

    assert (second.model_version, second.metrics, second.package_uri) == (
        "2",
        {"accuracy": 0.97},
        "s3://models/wine-clf/2",
    )
    assert [(m.model_name, m.model_version) for m in catalog.models_using_dataset("wine")] == [
        ("wine-clf", "1"),
        ("wine-clf", "2"),
        ("wine-reg", "1"),
    ]
    assert [(m.model_name, m.model_version) for m in catalog.models_using_dataset("wine", 2)] == [
        ("wine-clf", "2"),
        ("wine-reg", "1"),
    ]
    assert [m.model_name for m in catalog.list_model_versions()] == ["iris-clf", "wine-clf", "wine-clf", "wine-reg"]
    assert [m.model_version for m in catalog.list_model_versions("wine-clf")] == ["1", "2"]

    with pytest.raises(CatalogError, match=r"model 'wine-clf' already has version 2 \(versions: 1, 2\)"):
        catalog.record_model_version("wine-clf", 2, None, None, None, None, None, None, "sklearn", {})
    with pytest.raises(CatalogError, match="no run with id 'ghost'"):
        catalog.record_model_version("wine-clf", 3, "ghost", None, None, None, None, None, "sklearn", {})
    assert len(catalog.list_model_versions("wine-clf")) == 2


# --------------------------------------------------------------------------- preprocessing modules

TRANSFORMS_V1 = "def add_ratio(df):\n    return df.assign(ratio=df.a / df.b)\n"
TRANSFORMS_V2 = "def add_ratio(df):\n    return df.assign(ratio=df.b / df.a)\n"
FUNCTIONS = [{"name": "add_ratio", "line": 1, "signature": "(df)", "doc": ""}]


def test_modules_are_versioned_by_content_and_never_overwritten(catalog: Catalog) -> None:
    import hashlib

    first = catalog.add_module("transforms", TRANSFORMS_V1, "/src/transforms.py", FUNCTIONS)
    assert (first.created, first.record.version, first.same_as) == (True, 1, None)
    assert first.record.sha256 == hashlib.sha256(TRANSFORMS_V1.encode()).hexdigest()

    again = catalog.add_module("transforms", TRANSFORMS_V1, "/elsewhere/transforms.py", FUNCTIONS)
    assert (again.created, again.record.version, again.record.filename) == (False, 1, "/src/transforms.py")

    changed = catalog.add_module("transforms", TRANSFORMS_V2, "/src/transforms.py", FUNCTIONS)
    assert (changed.created, changed.record.version) == (True, 2)
    # Going back to the first content is a new version too, so the latest is always what was added last.
    back = catalog.add_module("transforms", TRANSFORMS_V1, "/src/transforms.py", FUNCTIONS)
    assert (back.created, back.record.version, back.same_as) == (True, 3, 1)

    assert catalog.get_module("transforms").version == 3
    assert catalog.get_module("transforms", 2).source == TRANSFORMS_V2
    assert catalog.get_module("transforms", 1).function_names == ["add_ratio"]
    assert [(m.name, m.version) for m in catalog.list_modules()] == [
        ("transforms", 1),
        ("transforms", 2),
        ("transforms", 3),
    ]
    with pytest.raises(CatalogError, match=r"module 'transforms' has no version 7 \(versions: 1, 2, 3\)"):
        catalog.get_module("transforms", 7)
    with pytest.raises(CatalogError, match=r"no module named 'nope' \(modules: transforms\); add it with"):
        catalog.get_module("nope")
    with pytest.raises(CatalogError, match="is not a Python name"):
        catalog.add_module("my-transforms", TRANSFORMS_V1, "x.py", FUNCTIONS)


def test_module_sources_are_kept_byte_for_byte(catalog: Catalog) -> None:
    source = "# -*- coding: utf-8 -*-\r\n\ufeffNAME = 'café ✓'\r\ndef f(df):\r\n    return df\r\n" + "# pad\n" * 20_000
    added = catalog.add_module("unicode_mod", source, "u.py", FUNCTIONS)
    assert catalog.get_module("unicode_mod").source == source
    assert added.record.sha256 == catalog.get_module("unicode_mod").sha256


def test_a_store_at_0002_gains_the_modules_table_on_open(store_url: str) -> None:
    with raw_engine(store_url) as engine:
        migrate(engine, "0002")
    with Catalog(store_url) as catalog:
        assert catalog.revision() == newest_script_revision()
        assert catalog.list_modules() == []
        assert catalog.add_module("t", TRANSFORMS_V1, "t.py", FUNCTIONS).record.version == 1


def test_concurrent_adds_of_different_content_each_get_their_own_version(store_url: str) -> None:
    with Catalog(store_url):
        pass  # migrated once, before the writers race
    results: list[int] = []
    errors: list[BaseException] = []

    def add(index: int) -> None:
        try:
            with Catalog(store_url) as catalog:
                source = f"def f(df):\n    return df + {index}\n"
                results.append(catalog.add_module("racing", source, "r.py", FUNCTIONS).record.version)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=add, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
