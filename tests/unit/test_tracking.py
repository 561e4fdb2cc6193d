"""The MLflow glue on a real SQLite tracking store, without Ray: alias history and rollback,
the dataset version as a run input."""

from __future__ import annotations

import json

import pytest

from raymlp.errors import UsageError
from raymlp.tracking import Tracker
from raymlp.tracking.mlflow_tracking import ALIAS_HISTORY_TAG, alias_stack, mlflow_dataset_digest

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    return folder, f"sqlite:///{folder / 'mlflow.db'}"


def _model(store, name: str, versions: int) -> Tracker:
    """A registered model with `versions` versions (their source is a folder that is never read)."""
    folder, uri = store
    tracker = Tracker(uri, folder)
    tracker.client.create_registered_model(name)
    for _ in range(versions):
        tracker.client.create_model_version(name, (folder / "model").as_uri())
    return tracker


def _alias(tracker: Tracker, name: str, alias: str) -> int | None:
    found = (tracker.client.get_registered_model(name).aliases or {}).get(alias)
    return int(found) if found is not None else None


def test_rollback_undoes_moves_in_turn_then_says_there_is_nothing_left(store):
    tracker = _model(store, "undo", 3)
    tracker.set_alias("undo", "champion", 1, by="register")
    tracker.set_alias("undo", "champion", 2, by="promote")
    tracker.set_alias("undo", "champion", 3, by="register")
    assert tracker.rollback_alias("undo", "champion") == (3, 2)
    assert _alias(tracker, "undo", "champion") == 2
    assert tracker.rollback_alias("undo", "champion") == (2, 1)
    with pytest.raises(UsageError, match=r"undo@champion points at version 1 and no earlier version is recorded"):
        tracker.rollback_alias("undo", "champion")
    assert _alias(tracker, "undo", "champion") == 1
    history = tracker.alias_history("undo", "champion")
    assert [(move["version"], move["by"], move.get("from")) for move in history] == [
        (1, "register", None),
        (2, "promote", None),
        (3, "register", None),
        (2, "rollback", 3),
        (1, "rollback", 2),
    ]
    tags = tracker.client.get_registered_model("undo").tags
    assert json.loads(tags[ALIAS_HISTORY_TAG + "champion"]) == history


def test_a_promote_after_a_rollback_is_undone_first(store):
    tracker = _model(store, "redo", 3)
    for version in (1, 2):
        tracker.set_alias("redo", "champion", version, by="promote")
    tracker.rollback_alias("redo", "champion")
    tracker.set_alias("redo", "champion", 3, by="promote")
    assert tracker.rollback_alias("redo", "champion") == (3, 1)


def test_aliases_have_separate_histories_and_a_no_op_promote_records_nothing(store):
    tracker = _model(store, "two", 2)
    tracker.set_alias("two", "champion", 1)
    tracker.set_alias("two", "challenger", 2)
    tracker.set_alias("two", "champion", 1, by="promote")
    assert [move["version"] for move in tracker.alias_history("two", "champion")] == [1]
    with pytest.raises(UsageError, match="no earlier version"):
        tracker.rollback_alias("two", "challenger")


def test_moves_made_outside_raymlp_are_recorded_and_rolled_back_over(store):
    tracker = _model(store, "outside", 3)
    tracker.client.set_registered_model_alias("outside", "champion", "1")  # before raymlp kept histories
    with pytest.raises(UsageError, match="no earlier version"):
        tracker.rollback_alias("outside", "champion")
    tracker.set_alias("outside", "champion", 2, by="promote")
    tracker.client.set_registered_model_alias("outside", "champion", "3")  # the MLflow UI, say
    assert tracker.rollback_alias("outside", "champion") == (3, 2)
    assert tracker.rollback_alias("outside", "champion") == (2, 1)
    assert [move["by"] for move in tracker.alias_history("outside", "champion")] == [
        "outside raymlp",
        "promote",
        "outside raymlp",
        "rollback",
        "rollback",
    ]
    tracker.client.delete_registered_model_alias("outside", "champion")
    with pytest.raises(UsageError, match=r"model outside has no alias 'champion' \(its aliases: none\)"):
        tracker.rollback_alias("outside", "champion")
    tracker.set_alias("outside", "champion", 3, by="promote")  # a deleted alias starts a new history
    with pytest.raises(UsageError, match="no earlier version"):
        tracker.rollback_alias("outside", "champion")


def test_unknown_models_are_usage_errors(store):
    tracker = _model(store, "known", 1)
    with pytest.raises(UsageError, match=r"model nope is not in the registry .* \(registered models: .*known"):
        tracker.rollback_alias("nope", "champion")


def test_a_missing_version_or_alias_is_named_with_what_exists(store):
    from raymlp.tracking import ModelRef

    tracker = _model(store, "named", 2)
    tracker.set_alias("named", "champion", 2)
    with pytest.raises(UsageError, match=r"^model named has no version 7 \(versions: 1, 2\)$"):
        tracker.resolve(ModelRef("named", version=7))
    with pytest.raises(
        UsageError, match=r"^model named has no alias 'best' \(aliases: champion -> 2; versions: 1, 2\)$"
    ):
        tracker.resolve(ModelRef("named", alias="best"))
    with pytest.raises(UsageError, match=r"^model nameless is not in the registry at .*\(registered models: .*named"):
        tracker.resolve(ModelRef("nameless", version=1))


def test_a_long_history_stays_within_one_tag_and_still_rolls_back(store):
    tracker = _model(store, "long", 2)
    for _ in range(60):
        for version in (1, 2):
            tracker.set_alias("long", "champion", version, by="promote")
    text = tracker.client.get_registered_model("long").tags[ALIAS_HISTORY_TAG + "champion"]
    assert len(text) <= 5000
    assert tracker.rollback_alias("long", "champion") == (2, 1)
    assert tracker.rollback_alias("long", "champion") == (1, 2)
    assert alias_stack(tracker.alias_history("long", "champion"))[-1] == 2


def test_the_dataset_version_is_an_input_of_the_run(store, tmp_path):
    folder, uri = store
    tracker = Tracker(uri, folder)
    run_id = tracker.start_run("inputs", "inputs-run", tags={})
    schema = [
        {"name": "x", "type": "double", "nullable": True},
        {"name": "n", "type": "int64", "nullable": False},
        {"name": "label", "type": "large_string", "nullable": True},
        {"name": "when", "type": "timestamp[us]", "nullable": True},
        {"name": "v", "type": "list<item: double>", "nullable": True},
    ]
    tracker.log_dataset_input(
        run_id, "wine", 3, DIGEST, str(tmp_path / "datasets" / "wine" / "v3"), schema=schema, rows=178
    )
    [logged] = tracker.client.get_run(run_id).inputs.dataset_inputs
    dataset = logged.dataset
    assert (dataset.name, dataset.digest) == ("wine@3", "0123456789abcdef0123456789abcdef0123")
    assert dataset.digest == mlflow_dataset_digest(DIGEST) and DIGEST.startswith("sha256:" + dataset.digest)
    assert (dataset.source_type, json.loads(dataset.source)) == (
        "local",
        {"uri": str(tmp_path / "datasets" / "wine" / "v3")},
    )
    assert json.loads(dataset.profile) == {"content_digest": DIGEST, "num_rows": 178}
    columns = json.loads(dataset.schema)["mlflow_colspec"]
    assert [(column["name"], column["type"], column["required"]) for column in columns] == [
        ("x", "double", False),
        ("n", "long", True),
        ("label", "string", False),
        ("when", "datetime", False),
        ("v", "any", False),
    ]
    assert [(tag.key, tag.value) for tag in logged.tags] == [("mlflow.data.context", "training")]


def test_a_postgresql_tracking_uri_without_a_driver_reaches_mlflow_as_the_catalog_does(tmp_path):
    """`storage.tracking: postgresql://...` works as `storage.catalog` does (MLflow's SQLAlchemy would
    ask for psycopg 3, which is not a dependency)."""
    import uuid

    import sqlalchemy as sa

    from raymlp.catalog import with_installed_driver
    from tests.conftest import POSTGRES_URL, require_service

    require_service(POSTGRES_URL, "postgresql")
    admin = sa.create_engine(with_installed_driver(sa.engine.make_url(POSTGRES_URL)), isolation_level="AUTOCOMMIT")
    name = f"raymlp_tracking_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        tracker = Tracker(f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}", tmp_path)
        assert tracker.uri.startswith("postgresql+")
        run = tracker.start_run("job", "job-1", {"raymlp.run_id": "1"})
        tracker.finish(run)
        assert tracker.client.get_run(run).info.status == "FINISHED"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
