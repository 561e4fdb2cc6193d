"""One trained model, four ways to predict with it, the same answers; its run, data and registry.

The model is jobs/wine-torch.yaml trained once (8 epochs) and registered. The rows are 100 that
training never fitted on: the run's validation and test splits (72 rows, found again by running
the job's split on the dataset version) and 28 new rows halfway between held-out rows of
different classes. They are scored by `raymlp predict` (Ray Data), by the package loaded in
plain Python, by MLflow's pyfunc loader and by the `mlflow models predict` CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from .conftest import REPO, json_output, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "wine-torch"
LABEL = "target"
ROWS = 100


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ray_4_cpus):
    """A project in which `raymlp run jobs/wine-torch.yaml` trained and registered the model once."""
    project = tmp_path_factory.mktemp("consistency")
    (project / "jobs").mkdir()
    shutil.copy(REPO / "jobs" / "wine-torch.yaml", project / "jobs" / "wine-torch.yaml")
    env = {"RAYMLP_HOME": str(project / ".raymlp"), "RAY_ADDRESS": ray_4_cpus}
    # No accuracy gate: these tests are about consistency, and the alias must move to version 1.
    result = run_cli(
        "run",
        "jobs/wine-torch.yaml",
        "--set",
        "train.epochs=8",
        "--set",
        "register.require={}",
        "--json",
        cwd=project,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json_output(result)
    assert (summary["model"], summary["model_version"], summary["alias_moved"]) == (MODEL, 1, True)
    return {
        "project": project,
        "env": env,
        "summary": summary,
        "store": f"sqlite:///{project / '.raymlp' / 'mlflow.db'}",
    }


def _dataset_version(project):
    from raymlp.catalog import Catalog

    with Catalog(f"sqlite:///{project / '.raymlp' / 'catalog.db'}") as catalog:
        return catalog.get_dataset_version("wine", 1)


@pytest.fixture(scope="module")
def rows(trained):
    """rows.csv (100 rows never trained on, features only) and the package's own predictions for it."""
    from raymlp.config import load_job
    from raymlp.data.split import split_frame
    from raymlp.data.versions import read_version_table
    from raymlp.package import load_package

    project, summary = trained["project"], trained["summary"]
    record = _dataset_version(project)
    frame = read_version_table(record.path, record.manifest).to_pandas()
    split = load_job(project / "jobs" / "wine-torch.yaml").config.data.split
    train, validation, test = split_frame(frame, split, frame[LABEL])
    package = load_package(project / ".raymlp" / "runs" / summary["run_id"] / "package")
    # The split found again is the run's: the package scores it exactly as the run reported.
    accuracy = (package.predict(test)["prediction"].to_numpy() == test[LABEL].to_numpy()).mean()
    assert accuracy == pytest.approx(summary["metrics"]["test_accuracy"], abs=1e-12)

    features = package.feature_names
    held_out = pd.concat([validation, test])
    assert len(train) + len(held_out) == record.row_count == 178
    trained_on = set(map(tuple, train[features].to_numpy()))
    assert not any(tuple(row) in trained_on for row in held_out[features].to_numpy())
    random = np.random.default_rng(0)
    blends = []
    while len(held_out) + len(blends) < ROWS:
        first, second = held_out.iloc[random.choice(len(held_out), size=2, replace=False)].to_dict("records")
        if first[LABEL] != second[LABEL]:
            blends.append({name: round((first[name] + second[name]) / 2, 4) for name in features})
    chosen = pd.concat([held_out[features], pd.DataFrame(blends)], ignore_index=True)
    chosen.to_csv(project / "rows.csv", index=False)
    # Reference: the package in plain Python on the file every other way reads.
    frame = pd.read_csv(project / "rows.csv")
    reference = package.predict(frame)
    assert len(reference) == ROWS and reference["prediction"].nunique() == 3
    return {"path": project / "rows.csv", "frame": frame, "reference": reference}


def assert_same_predictions(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Identical classes, and probabilities equal to 1e-6, row by row in order."""
    assert len(got) == len(expected) == ROWS
    assert [str(value) for value in got["prediction"]] == [str(value) for value in expected["prediction"]]
    columns = [name for name in expected.columns if name.startswith("probability_")]
    assert sorted(name for name in got.columns if name.startswith("probability_")) == sorted(columns)
    np.testing.assert_allclose(
        got[columns].to_numpy(dtype=float), expected[columns].to_numpy(dtype=float), rtol=0, atol=1e-6
    )


def test_raymlp_predict_cli_matches_the_package(trained, rows):
    project, env = trained["project"], trained["env"]
    result = run_cli(
        "predict", "--model", f"{MODEL}@champion", "--input", "rows.csv", "--output", "out.csv", cwd=project, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{ROWS} rows scored by {MODEL} version 1" in result.stdout
    scored = pd.read_csv(project / "out.csv")
    np.testing.assert_array_equal(scored[rows["frame"].columns].to_numpy(), rows["frame"].to_numpy())
    assert_same_predictions(scored, rows["reference"])


@pytest.mark.parametrize("layout", ["files-of-small-row-groups", "one-row-group-sliced", "folder-output"])
def test_batch_predict_of_parquet_keeps_row_order_in_every_layout(trained, rows, layout, tmp_path):
    """Ray Data scoring tasks over the Parquet layouts raymlp plans reads for: three files of 7-row
    groups (reads never span files), one 100-row group cut into a slice per replica, and an output
    folder written by the workers. Every row comes out once, in input order, scored as the package
    scores it in plain Python."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raymlp.serve.batch import predict_batch

    package = trained["project"] / ".raymlp" / "runs" / trained["summary"]["run_id"] / "package"
    table = pa.Table.from_pandas(rows["frame"], preserve_index=False)
    source, output, replicas = tmp_path / "input", tmp_path / "scored.parquet", None
    if layout == "one-row-group-sliced":
        source, replicas = tmp_path / "input.parquet", 3
        pq.write_table(table, source)
        assert pq.ParquetFile(source).metadata.num_row_groups == 1
    else:
        source.mkdir()
        for name, start, stop in (("part-0.parquet", 0, 40), ("part-1.parquet", 40, 75), ("part-2.parquet", 75, ROWS)):
            pq.write_table(table.slice(start, stop - start), source / name, row_group_size=7)
        if layout == "folder-output":
            output = tmp_path / "scored"
    result = predict_batch(
        str(package), str(source), str(output), batch_size=16, replicas=replicas, progress_bars=False
    )
    assert result.rows == ROWS and result.output == str(output)
    scored = pq.read_table(output).to_pandas()
    if layout == "folder-output":  # the workers' files hold the rows; their names do not order them
        key = list(rows["frame"].columns)
        scored = scored.sort_values(key, ignore_index=True)
        expected = pd.concat([rows["frame"], rows["reference"]], axis=1).sort_values(key, ignore_index=True)
        reference, frame = expected[rows["reference"].columns], expected[key]
    else:
        reference, frame = rows["reference"], rows["frame"]
    np.testing.assert_array_equal(scored[list(frame.columns)].to_numpy(), frame.to_numpy())
    assert_same_predictions(scored, reference)
    assert not list(tmp_path.glob(".*partial"))


def test_batch_predict_gpu_path_runs_an_actor_per_gpu_over_row_group_reads(trained, rows, tmp_path):
    """`use_gpu`'s wiring where Ray is told of a GPU that torch cannot see (CI has none): a separate
    local Ray declaring one GPU, row-group reads feeding one actor that holds it, rows in input
    order, the package's answers. tests/integration/test_gpu.py proves the device on a real GPU."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    package = trained["project"] / ".raymlp" / "runs" / trained["summary"]["run_id"] / "package"
    source = tmp_path / "input"
    source.mkdir()
    table = pa.Table.from_pandas(rows["frame"], preserve_index=False)
    for name, start, stop in (("part-0.parquet", 0, 60), ("part-1.parquet", 60, ROWS)):
        pq.write_table(table.slice(start, stop - start), source / name, row_group_size=9)
    script = (
        "import json, sys, ray\n"
        "from raymlp.serve.batch import predict_batch\n"
        "ray.init(address='local', num_cpus=2, num_gpus=1, include_dashboard=False, logging_level='WARNING')\n"
        "result = predict_batch(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=16, use_gpu=True, progress_bars=False)\n"
        "print(json.dumps({'rows': result.rows}))\n"
    )
    from raymlp.verbosity import QUIET_ENV

    # Ray Data's own log line shows the plan: the session's quiet settings are left out.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", *QUIET_ENV)
    }
    done = subprocess.run(
        [sys.executable, "-c", script, str(package), str(source), str(tmp_path / "scored.parquet")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"rows": ROWS}
    # Not fused: the actor asks for a GPU, the reads for a CPU each.
    assert (
        "TaskPoolMapOperator[ReadParquetRowGroups] -> ActorPoolMapOperator[MapBatches(_PackagePredictor)]"
        in done.stderr
    ), done.stderr[-3000:]
    scored = pq.read_table(tmp_path / "scored.parquet").to_pandas()
    np.testing.assert_array_equal(scored[list(rows["frame"].columns)].to_numpy(), rows["frame"].to_numpy())
    assert_same_predictions(scored, rows["reference"])


def test_mlflow_pyfunc_from_the_registry_matches_the_package(trained, rows):
    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(trained["store"])
    mlflow.set_registry_uri(trained["store"])
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    assert_same_predictions(model.predict(rows["frame"]), rows["reference"])


def test_mlflow_models_predict_cli_matches_the_package(trained, rows):
    project, run_id = trained["project"], trained["summary"]["mlflow_run_id"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "predict",
            "-m",
            f"runs:/{run_id}/model",
            "-i",
            "rows.csv",
            "-t",
            "csv",
            "--env-manager",
            "local",
            "-o",
            "mlflow-out.json",
        ],
        cwd=project,
        env={**os.environ, "MLFLOW_TRACKING_URI": trained["store"]},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "type hint" not in result.stderr.lower()  # MLflow accepts the wrapper's hints without a word
    predictions = json.loads((project / "mlflow-out.json").read_text())["predictions"]
    assert_same_predictions(pd.DataFrame(predictions), rows["reference"])


def test_the_run_has_the_dataset_version_as_its_training_input(trained):
    from mlflow import MlflowClient

    summary = trained["summary"]
    record = _dataset_version(trained["project"])
    client = MlflowClient(tracking_uri=trained["store"])
    [logged] = client.get_run(summary["mlflow_run_id"]).inputs.dataset_inputs
    dataset = logged.dataset
    # MLflow keeps 36 characters of a digest: the first 36 hex digits of the content digest.
    assert summary["content_digest"] == record.content_digest
    assert (dataset.name, dataset.digest) == ("wine@1", record.content_digest.removeprefix("sha256:")[:36])
    assert json.loads(dataset.profile) == {"content_digest": record.content_digest, "num_rows": 178}
    assert (dataset.source_type, json.loads(dataset.source)) == ("local", {"uri": record.path})
    columns = json.loads(dataset.schema)["mlflow_colspec"]
    assert {column["name"]: column["type"] for column in columns} == {
        **{name: "double" for name in pd.read_csv(trained["project"] / "rows.csv", nrows=0).columns},
        LABEL: "string",
    }
    assert {tag.key: tag.value for tag in logged.tags} == {"mlflow.data.context": "training"}


def test_promote_then_rollback_then_rollback_again_fails(trained):
    from raymlp.tracking import Tracker

    project, env, store = trained["project"], trained["env"], trained["store"]
    tracker = Tracker(store, project / ".raymlp")
    client = tracker.client
    first = client.get_model_version(MODEL, "1")
    assert tracker.register(first.source, MODEL, first.run_id) == 2  # the same model again, as a retrain adds one

    promoted = run_cli("models", "promote", f"{MODEL}:2", "--alias", "champion", cwd=project, env=env)
    assert promoted.returncode == 0, promoted.stderr
    listed = json_output(run_cli("models", "list", "--json", cwd=project, env=env))
    assert [(m["version"], m["aliases"]) for m in listed] == [(1, []), (2, ["champion"])]

    rolled = run_cli("models", "rollback", MODEL, "--alias", "champion", cwd=project, env=env)
    assert rolled.returncode == 0, rolled.stderr
    assert f"{MODEL}@champion -> version 1 (was version 2)" in rolled.stdout
    listed = json_output(run_cli("models", "list", "--json", cwd=project, env=env))
    assert [(m["version"], m["aliases"]) for m in listed] == [(1, ["champion"]), (2, [])]
    shown = json_output(run_cli("models", "show", f"{MODEL}@champion", "--json", cwd=project, env=env))
    assert shown["version"] == 1 and shown["lineage"]["dataset"]["name"] == "wine"

    again = run_cli("models", "rollback", MODEL, "--alias", "champion", cwd=project, env=env)
    assert again.returncode == 2
    assert f"{MODEL}@champion points at version 1 and no earlier version is recorded" in again.stderr
    assert "Traceback" not in again.stderr

    history = json.loads(client.get_registered_model(MODEL).tags["raymlp.alias_history.champion"])
    assert [(move["version"], move["by"]) for move in history] == [(1, "register"), (2, "promote"), (1, "rollback")]

    wrong = run_cli("models", "rollback", MODEL, "--alias", "staging", cwd=project, env=env)
    assert wrong.returncode == 2 and f"model {MODEL} has no alias 'staging' (its aliases: champion)" in wrong.stderr
