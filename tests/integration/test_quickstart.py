"""The quickstart, end to end, as a user runs it: CLI against a real Ray, then everything it made."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import requests

from .conftest import REPO, json_output, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLASSES = {"class_0", "class_1", "class_2"}


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, ray_4_cpus, serve_port):
    """A fresh project folder in which `raymlp run jobs/quickstart.yaml` has run once."""
    project = tmp_path_factory.mktemp("project")
    (project / "jobs").mkdir()
    shutil.copy(REPO / "jobs" / "quickstart.yaml", project / "jobs" / "quickstart.yaml")
    env = {"RAYMLP_HOME": str(project / ".raymlp"), "RAY_ADDRESS": ray_4_cpus}
    sample = run_cli("data", "sample", "wine", "-o", "data/wine.csv", cwd=project, env=env)
    assert sample.returncode == 0, sample.stderr
    source_bytes = (project / "data" / "wine.csv").read_bytes()
    result = run_cli("run", "jobs/quickstart.yaml", "--set", f"serve.port={serve_port}", "--json", cwd=project, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    yield {
        "project": project,
        "env": env,
        "summary": json_output(result),
        "source_bytes": source_bytes,
        "port": serve_port,
        "stdout": result.stdout,
        "stderr": result.stderr,
    }
    from ray import serve

    for app in ("wine-quickstart", "wine-classifier"):
        serve.delete(app)


def test_the_run_made_everything_it_promises(quickstart):
    summary = quickstart["summary"]
    assert summary["dataset"] == "wine@1" and summary["dataset_rows"] == 178
    assert summary["metrics"]["test_accuracy"] >= 0.9
    assert summary["model"] == "wine-classifier" and summary["model_version"] == 1
    assert summary["alias"] == "champion" and summary["alias_moved"] is True
    assert summary["predicted_rows"] == 178
    assert summary["sample_prediction"] in CLASSES
    assert summary["endpoint"] == f"http://127.0.0.1:{quickstart['port']}/wine/predict"
    assert list(summary["stages"]) == ["collect", "convert", "train", "register", "predict", "serve"]
    # Off a terminal too, the libraries print nothing of their own (on one: the test at the end).
    from tests.conftest import foreign_lines

    assert foreign_lines(quickstart["stdout"]) == [] and foreign_lines(quickstart["stderr"]) == []


def test_the_source_file_is_never_changed(quickstart):
    assert (quickstart["project"] / "data" / "wine.csv").read_bytes() == quickstart["source_bytes"]


def test_the_dataset_version_is_listed_and_verifies(quickstart):
    project, env = quickstart["project"], quickstart["env"]
    listed = json_output(run_cli("data", "list", "--json", cwd=project, env=env))
    assert [(item["name"], item["version"], item["rows"]) for item in listed] == [("wine", 1, 178)]
    verified = run_cli("data", "verify", "wine@1", cwd=project, env=env)
    assert verified.returncode == 0 and "178 rows match the manifest" in verified.stdout
    shown = json_output(run_cli("data", "show", "wine", "--json", cwd=project, env=env))
    assert shown["source"]["kind"] == "table" and shown["source"]["table"] == "wine_raw"
    assert [model["model"] for model in shown["models"]] == ["wine-classifier"]
    assert shown["lineage"][0].startswith("table wine_raw in sqlite:///")
    assert shown["lineage"][1:] == [
        "dataset wine@1 (178 rows)",
        f"model wine-classifier version 1 (run {quickstart['summary']['run_id']})",
    ]
    assert shown["statistics"]["target"]["distinct"] == 3
    assert {column["name"] for column in shown["schema"]} >= {"alcohol", "proline", "target"}


def test_the_model_is_in_the_registry_with_its_run(quickstart):
    import mlflow
    from mlflow import MlflowClient

    project, env, summary = quickstart["project"], quickstart["env"], quickstart["summary"]
    models = json_output(run_cli("models", "list", "--json", cwd=project, env=env))
    assert [(m["name"], m["version"], m["aliases"], m["dataset"]) for m in models] == [
        ("wine-classifier", 1, ["champion"], "wine@1")
    ]
    store = f"sqlite:///{project / '.raymlp' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    version = client.get_model_version_by_alias("wine-classifier", "champion")
    assert version.run_id == summary["mlflow_run_id"]
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.params["train.epochs"] == "30" and run.data.params["train.scaling.num_workers"] == "2"
    assert run.data.tags["raymlp.dataset"] == "wine@1"
    assert run.data.metrics["test_accuracy"] == pytest.approx(summary["metrics"]["test_accuracy"])
    per_epoch = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted(metric.step for metric in per_epoch) == list(range(1, 31))
    # The package also loads as a plain MLflow pyfunc model.
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    pyfunc = mlflow.pyfunc.load_model("models:/wine-classifier@champion")
    rows = pd.read_csv(project / "data" / "wine.csv").head(5)
    assert set(pyfunc.predict(rows.drop(columns=["target"]))["prediction"]) <= CLASSES


def test_the_catalog_records_the_run_and_the_lineage(quickstart):
    from raymlp.catalog import Catalog

    project, summary = quickstart["project"], quickstart["summary"]
    with Catalog(f"sqlite:///{project / '.raymlp' / 'catalog.db'}") as catalog:
        run = catalog.get_run(summary["run_id"])
        lineage = catalog.list_model_versions("wine-classifier")
        collections = catalog.list_collections("wine_raw")
    assert run.status == "succeeded" and run.summary["model_version"] == 1
    assert [(m.dataset_name, m.dataset_version, m.mlflow_run_id) for m in lineage] == [
        ("wine", 1, summary["mlflow_run_id"])
    ]
    assert lineage[0].dataset_digest == summary["content_digest"]
    assert [c.row_count for c in collections] == [178]


def test_batch_predictions_are_written_and_accurate(quickstart):
    predictions = pd.read_csv(quickstart["project"] / ".raymlp" / "predictions" / "wine.csv")
    assert len(predictions) == 178
    assert (predictions["prediction"] == predictions["target"]).mean() >= 0.9
    assert predictions.filter(like="probability_").sum(axis=1).round(5).eq(1).all()


def test_the_endpoint_answers_real_http(quickstart):
    base = f"http://127.0.0.1:{quickstart['port']}/wine"
    rows = pd.read_csv(quickstart["project"] / "data" / "wine.csv")
    record = rows.drop(columns=["target"]).iloc[0].to_dict()
    single = requests.post(f"{base}/predict", json=record, timeout=30)
    assert single.status_code == 200
    body = single.json()
    assert body["prediction"] in CLASSES and body["model"] == "wine-classifier" and body["version"] == 1
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    many = requests.post(f"{base}/predict", json=rows.drop(columns=["target"]).head(3).to_dict("records"), timeout=30)
    assert len(many.json()["predictions"]) == 3
    del record["proline"]
    missing = requests.post(f"{base}/predict", json=record, timeout=30)
    assert missing.status_code == 422 and "proline" in missing.json()["detail"]
    assert requests.get(f"{base}/health", timeout=30).json() == {"status": "ok", "versions": [1]}
    metadata = requests.get(f"{base}/metadata", timeout=30).json()
    assert metadata["versions"][0]["lineage"]["dataset"]["name"] == "wine" and len(metadata["features"]) == 13


def test_predict_cli_matches_the_run_and_serve_cli_matches_predict(quickstart):
    project, env, port = quickstart["project"], quickstart["env"], quickstart["port"]
    result = run_cli(
        "predict",
        "--model",
        "wine-classifier@champion",
        "--input",
        "data/wine.csv",
        "--output",
        "scored.parquet",
        "-v",
        cwd=project,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from tests.conftest import library_lines

    assert library_lines(result.stderr), "-v brings the libraries' own lines back"
    scored = pd.read_parquet(project / "scored.parquet")
    from_run = pd.read_csv(project / ".raymlp" / "predictions" / "wine.csv")
    assert scored["prediction"].tolist() == from_run["prediction"].tolist()

    served = run_cli(
        "serve", "--model", "wine-classifier:1", "--route", "/wine-v1", "--port", str(port), cwd=project, env=env
    )
    assert served.returncode == 0, served.stderr[-3000:]
    assert library_lines(served.stdout + served.stderr) == []
    assert f"at http://127.0.0.1:{port}/wine-v1/predict" in served.stdout
    features = scored.drop(
        columns=[c for c in scored.columns if c.startswith("probability_")] + ["prediction", "target"]
    )
    online = requests.post(
        f"http://127.0.0.1:{port}/wine-v1/predict", json=features.head(20).to_dict("records"), timeout=30
    )
    assert [item["prediction"] for item in online.json()["predictions"]] == scored["prediction"].head(20).tolist()


def test_a_run_on_a_terminal_prints_only_raymlps_lines_and_stops_its_own_ray(quickstart, tmp_path):
    """`raymlp run` with no address, on a pseudo-terminal: an embedded Ray starts (its token warning),
    Ray Data scores on a terminal (its progress bars), MLflow downloads the model (tqdm), Serve starts
    and shuts down (its log lines, the controller's retry notice). None of it reaches the user."""
    import subprocess
    import tempfile

    from tests.conftest import foreign_lines

    from .conftest import _free_port, run_on_terminal

    # Its own short temp root (Unix socket paths are limited), so its processes can be told apart.
    ray_root = tempfile.mkdtemp(prefix="rq", dir="/tmp")
    env = {**quickstart["env"], "RAY_ADDRESS": "", "RAY_TMPDIR": ray_root}
    output = tmp_path / "local.csv"
    code, transcript = run_on_terminal(
        "run",
        "jobs/quickstart.yaml",
        "--only",
        "predict,serve",
        "--set",
        f"predict.output={output}",
        "--set",
        f"serve.port={_free_port()}",
        cwd=quickstart["project"],
        env=env,
    )
    assert code == 0, transcript[-3000:]
    assert len(pd.read_csv(output)) == 178
    assert foreign_lines(transcript) == [], transcript[-3000:]
    assert "answered a POST" in transcript
    assert any(Path(ray_root).iterdir()), "the command should have started a Ray of its own under RAY_TMPDIR"
    left = subprocess.run(["pgrep", "-f", ray_root], capture_output=True, text=True).stdout.split()
    assert left == [], "the embedded Ray must be shut down when the command ends"
    shutil.rmtree(ray_root, ignore_errors=True)
