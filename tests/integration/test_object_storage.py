"""The quickstart with everything in a bucket: storage.root on the session's S3 server (moto), the
catalog and MLflow's tracking store on PostgreSQL, MLflow's artifacts in the bucket, on a two-node
cluster whose nodes share no folder. The same job with a local root on the same cluster is the
comparison."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid

import pyarrow.csv as pacsv
import pytest

from tests.conftest import POSTGRES_URL, require_service

from .conftest import REPO, _free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def databases():
    """Two new PostgreSQL databases: the catalog's and MLflow's (they must not share one)."""
    import sqlalchemy as sa

    from raymlp.catalog import with_installed_driver

    require_service(POSTGRES_URL, "postgresql")
    admin = sa.create_engine(with_installed_driver(sa.engine.make_url(POSTGRES_URL)), isolation_level="AUTOCOMMIT")
    names = [f"raymlp_bucket_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("catalog", "mlflow")]
    with admin.connect() as connection:
        for name in names:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_URL.rsplit("/", 1)[0]
    yield [f"{base}/{name}" for name in names]
    with admin.connect() as connection:
        for name in names:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _quickstart(name: str, route: str, storage: str, collect_url: str, predict_input: str, predict_output: str) -> str:
    """The quickstart job, its source and predict input `predict_input` (the same file)."""
    text = (REPO / "jobs" / "quickstart.yaml").read_text()
    replaced = {
        "    path: data/wine.csv\n": f"    path: '{predict_input}'\n",
        "name: wine-quickstart\n": f"name: {name}\nstorage: {storage}\n",
        "url: sqlite:///${RAYMLP_HOME:-.raymlp}/warehouse.db": f"url: '{collect_url}'",
        "  input: data/wine.csv": f"  input: '{predict_input}'",
        "  output: ${RAYMLP_HOME:-.raymlp}/predictions/wine.csv": f"  output: '{predict_output}'",
        "  route: /wine\n": f"  route: {route}\n",
    }
    for old, new in replaced.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def runs(tmp_path_factory, s3_server, databases):
    from raymlp.data.sources import sklearn_frame

    folder = tmp_path_factory.mktemp("bucket-cluster")
    bucket = s3_server.new_bucket()
    env = {**os.environ, **s3_server.env(), "RAY_ADDRESS": "", "RAY_API_SERVER_ADDRESS": "http://127.0.0.1:9"}
    wine = folder / "wine.csv"
    sklearn_frame("wine").to_csv(wine, index=False)
    s3_server.client().put_object(Bucket=bucket, Key="in/wine.csv", Body=wine.read_bytes())
    catalog, tracking = databases
    root = f"s3://{bucket}/team"
    jobs = {
        "bucket": _quickstart(
            "wine-bucket",
            "/wine-bucket",
            f"{{root: '{root}', catalog: '{catalog}', tracking: '{tracking}'}}",
            catalog,
            f"s3://{bucket}/in/wine.csv",
            f"{root}/predictions/wine.csv",
        ),
        "local": _quickstart(
            "wine-local",
            "/wine-local",
            f"{{root: '{folder / 'local-root'}', shared: true}}",  # one machine: the same folder on both nodes
            f"sqlite:///{folder}/warehouse.db",
            str(wine),
            str(folder / "predictions.csv"),
        ),
    }
    sweep = (REPO / "jobs" / "wine-sklearn-sweep.yaml").read_text()
    for old, new in {
        "name: wine-sklearn-sweep\n": f"name: wine-bucket-sweep\nstorage: {{root: '{root}', catalog: '{catalog}', tracking: '{tracking}'}}\n",
        "num_samples: 16": "num_samples: 3",
    }.items():
        assert old in sweep, old
        sweep = sweep.replace(old, new)
    jobs["sweep"] = sweep
    paths = {}
    for kind, text in jobs.items():
        paths[kind] = folder / f"{kind}.yaml"
        paths[kind].write_text(text)
    head_home, node_home = folder / "head-home", folder / "node-home"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "integration" / "bucket_cluster.py"),
            str(head_home),
            str(node_home),
            str(_free_port()),
            str(paths["bucket"]),
            str(paths["sweep"]),
            f"{paths['local']}:collect,convert,train,predict",  # the comparison: its predictions
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=folder,
    )
    printed = {
        found["job"]: found for found in (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
    }
    outcomes = {
        kind: printed.get(str(path), {"error": "no outcome: " + done.stdout[-3000:] + done.stderr[-5000:]})
        for kind, path in paths.items()
    }
    return {
        "outcomes": outcomes,
        "bucket": bucket,
        "root": root,
        "jobs": paths,
        "head_home": head_home,
        "node_home": node_home,
        "env": s3_server.env(),
        "output": done.stdout + done.stderr,
        "databases": [catalog, tracking],
    }


def test_the_quickstart_runs_end_to_end_with_everything_in_the_bucket(runs):
    outcome = runs["outcomes"]["bucket"]
    assert "error" not in outcome, outcome
    summary = outcome["summary"]
    assert summary["dataset"] == "wine@1" and summary["dataset_rows"] == 178
    assert summary["dataset_path"].startswith(f"{runs['root']}/datasets/wine/v-")
    assert summary["metrics"]["test_accuracy"] >= 0.9
    assert (summary["model"], summary["model_version"]) == ("wine-classifier", 1)
    assert summary["predictions"] == f"{runs['root']}/predictions/wine.csv" and summary["predicted_rows"] == 178
    assert list(summary["stages"]) == ["collect", "convert", "train", "register", "predict", "serve"]


def test_its_predictions_equal_the_local_runs(runs):
    bucket, local = runs["outcomes"]["bucket"], runs["outcomes"]["local"]
    assert "error" not in local, local
    there = pacsv.read_csv(io.BytesIO(bucket["predictions"].encode())).to_pandas()
    here = pacsv.read_csv(io.BytesIO(local["predictions"].encode())).to_pandas()
    assert len(there) == len(here) == 178
    assert there.drop(columns=[c for c in there if c.startswith("probability")]).equals(
        here.drop(columns=[c for c in here if c.startswith("probability")])
    )
    probabilities = [c for c in there if c.startswith("probability")]
    assert probabilities and (there[probabilities] - here[probabilities]).abs().max().max() < 1e-6


def test_the_model_serves_from_the_bucket(runs):
    outcome = runs["outcomes"]["bucket"]
    assert outcome["status"] == 200, outcome["answer"]
    there = pacsv.read_csv(io.BytesIO(outcome["predictions"].encode())).to_pandas()
    assert [row["prediction"] for row in outcome["answer"]["predictions"]] == there["prediction"][:5].tolist()
    from raymlp.package import DESCRIPTION_FILE

    fetched = list((runs["node_home"] / "cache" / "packages").glob(f"*/{DESCRIPTION_FILE}"))
    assert fetched, "the replica on the worker node fetched the package from the bucket into its own cache"


def test_nothing_is_kept_on_the_nodes_and_everything_in_the_bucket(runs, monkeypatch):
    from raymlp.package import DESCRIPTION_FILE
    from raymlp.storage import files

    kept = {path.name for path in runs["head_home"].iterdir()} if runs["head_home"].exists() else set()
    assert not kept & {"datasets", "runs", "ray_results", "mlartifacts", "tune", "work"}, kept
    on_node = {path.name for path in runs["node_home"].iterdir()} if runs["node_home"].exists() else set()
    assert on_node <= {"cache"}, on_node
    for name, value in runs["env"].items():  # this process reads the bucket as the cluster did
        monkeypatch.setenv(name, value)
    files.forget_filesystems()
    names = files.list_files(runs["root"])
    areas = {name[len(runs["root"]) + 1 :].split("/")[0] for name in names}
    assert {"datasets", "runs", "ray_results", "mlartifacts", "predictions"} <= areas, areas
    run_id = runs["outcomes"]["bucket"]["summary"]["run_id"]
    assert files.exists(f"{runs['root']}/runs/{run_id}/package/{DESCRIPTION_FILE}")
    assert any("/checkpoint_" in name for name in names if "/ray_results/" in name)


def test_a_sweep_keeps_its_state_results_and_report_in_the_bucket(runs, capsys, monkeypatch):
    from raymlp.cli import main
    from raymlp.storage import files

    outcome = runs["outcomes"]["sweep"]
    assert "error" not in outcome, outcome
    summary = outcome["summary"]
    assert summary["trials"] == 3 and summary["best_trial"]["metric"] >= 0.9
    for name, value in runs["env"].items():
        monkeypatch.setenv(name, value)
    files.forget_filesystems()
    run = f"{runs['root']}/runs/{summary['run_id']}"
    assert files.exists(f"{run}/tune_results.json") and files.exists(f"{run}/tune_report.html")
    assert files.list_files(f"{runs['root']}/tune/wine-bucket-sweep-{summary['run_id'][:8]}"), "Tune's state"
    assert main(["tune", "results", str(runs["jobs"]["sweep"]), "--json"]) == 0, capsys.readouterr().err
    assert len(json.loads(capsys.readouterr().out)["trials"]) == 3


def test_no_credential_reaches_the_catalog_mlflow_or_the_output(runs):
    secret, key_id = runs["env"]["AWS_SECRET_ACCESS_KEY"], runs["env"]["AWS_ACCESS_KEY_ID"]
    for url in runs["databases"]:
        dumped = subprocess.run(
            ["pg_dump", "--data-only", url.replace("postgresql+psycopg2://", "postgresql://")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "raymlp_alembic_version" in dumped or "alembic_version" in dumped  # the dump holds the tables
        assert secret not in dumped and key_id not in dumped
    assert secret not in runs["output"] and key_id not in runs["output"]


def test_data_verify_passes_against_the_bucket(runs, capsys, monkeypatch):
    from raymlp.cli import main
    from raymlp.storage import files

    for name, value in runs["env"].items():
        monkeypatch.setenv(name, value)
    files.forget_filesystems()
    assert main(["data", "verify", "wine@1", "--job", str(runs["jobs"]["bucket"])]) == 0, capsys.readouterr().err
    assert "178 rows match the manifest" in capsys.readouterr().out
