"""Registered preprocessing modules end to end: train with function and dask steps, then predict and serve."""

from __future__ import annotations

import hashlib
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import requests

from ..conftest import library_lines
from .conftest import json_output, run_cli

pytestmark = [pytest.mark.integration]

SL, SW, PL, PW = "sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"

TRANSFORMS = f'''\
"""Iris by areas: the model sees only petal and sepal areas."""
import numpy as np


def areas(df):
    """Replace lengths and widths by areas."""
    if (df["{PL}"] < 0).any():
        raise ValueError("a petal length below 0")
    return pd_frame(petal_area=df["{PL}"] * df["{PW}"], sepal_area=df["{SL}"] * df["{SW}"])


def log_areas(frame):
    """A dask step: log1p of both areas."""
    return frame.assign(petal_area=np.log1p(frame.petal_area), sepal_area=np.log1p(frame.sepal_area))


def pd_frame(**columns):
    import pandas as pd

    return pd.DataFrame(columns)
'''

JOB = """\
version: 1
name: iris-areas
data:
  source: {format: sklearn, sklearn: {name: iris}}
  dataset: {name: iris}
  label: target
  split: {validation: 0.2, test: 0.2, seed: 3, stratify: true}
preprocess:
  - {type: function, ref: "transforms:areas"}
  - {type: dask, ref: "transforms:log_areas"}
  - {type: standard_scaler}          # no columns: the numeric columns the function steps made
train:
  framework: torch
  model: {type: mlp, hidden_layers: [8]}
  epochs: 2
  batch_size: 32
  optimizer: {name: adam, lr: 0.05}
  scaling: {num_workers: 1}
register: {model: iris-areas}
predict: {input: rows.csv, output: predictions.csv}
serve: {route: /iris-areas}
"""

# Pairs of rows with different measurements but the same petal and sepal areas (6 and 15, 11 and 19.5),
# then a real setosa row. A model that sees the areas answers each pair identically.
ROWS = pd.DataFrame(
    [[5.0, 3.0, 4.0, 1.5], [3.0, 5.0, 6.0, 1.0], [6.5, 3.0, 5.5, 2.0], [3.9, 5.0, 2.2, 5.0], [5.1, 3.5, 1.4, 0.2]],
    columns=[SL, SW, PL, PW],
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ray_4_cpus, serve_port):
    """`raymlp data modules add` then `raymlp run` of a job whose chain is function -> dask -> scaler."""
    project = tmp_path_factory.mktemp("modules-project")
    (project / "transforms.py").write_text(TRANSFORMS)
    (project / "job.yaml").write_text(JOB)
    ROWS.to_csv(project / "rows.csv", index=False)
    env = {"RAYMLP_HOME": str(project / ".raymlp"), "RAY_ADDRESS": ray_4_cpus}
    added = run_cli("data", "modules", "add", "transforms.py", cwd=project, env=env)
    assert added.returncode == 0, added.stderr
    result = run_cli("run", "job.yaml", "--set", f"serve.port={serve_port}", "--json", cwd=project, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    yield {"project": project, "env": env, "summary": json_output(result), "port": serve_port, "stderr": result.stderr}
    from ray import serve

    serve.delete("iris-areas")


def _probabilities(frame: pd.DataFrame) -> np.ndarray:
    return frame[sorted(column for column in frame.columns if column.startswith("probability_"))].to_numpy(dtype=float)


def test_batch_predictions_and_the_endpoint_apply_the_same_module_code(trained):
    project = trained["project"]
    scored = pd.read_csv(project / "predictions.csv")
    assert scored[[SL, SW, PL, PW]].equals(ROWS)
    offline = _probabilities(scored)
    # Equal areas, different measurements: identical answers, so the function steps ran before the model.
    np.testing.assert_allclose(offline[0], offline[1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(offline[2], offline[3], rtol=0, atol=1e-6)
    assert np.abs(offline[0] - offline[4]).max() > 1e-3

    answer = requests.post(
        f"http://127.0.0.1:{trained['port']}/iris-areas/predict", json=ROWS.to_dict("records"), timeout=60
    )
    assert answer.status_code == 200, answer.text
    online = answer.json()["predictions"]
    assert [item["prediction"] for item in online] == scored["prediction"].tolist()
    classes = sorted(online[0]["probabilities"])
    np.testing.assert_allclose([[item["probabilities"][c] for c in classes] for item in online], offline, atol=1e-6)
    assert "module steps transforms@1:areas" in trained["stderr"]


def test_batch_predict_says_a_failing_module_step_s_own_error(trained):
    """A module step that raises in a scoring task: `raymlp predict` says the step's own message (its
    pinned ref, the user's exception, the module's line), exit 1, not Ray Data's wrapper."""
    project = trained["project"]
    ROWS.assign(**{PL: -1.0}).to_csv(project / "negative.csv", index=False)
    result = run_cli(
        "predict",
        "--model",
        "iris-areas:1",
        "--input",
        "negative.csv",
        "--output",
        "never.csv",
        cwd=project,
        env=trained["env"],
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert re.search(
        r"^error: preprocess step transforms@1:areas failed on a batch of \d+ rows: "
        r"ValueError: a petal length below 0 \(transforms@1\.py:8\)$",
        result.stderr,
        re.MULTILINE,
    ), result.stderr[-3000:]
    assert "UserCodeException" not in result.stderr and "unexpected" not in result.stderr, result.stderr[-3000:]
    assert library_lines(result.stdout + result.stderr) == [], result.stderr[-3000:]
    assert not (project / "never.csv").exists()


def test_the_package_carries_the_exact_source_and_the_fitted_chain(trained):
    from raymlp.package import load_package

    project, summary = trained["project"], trained["summary"]
    folder = project / ".raymlp" / "runs" / summary["run_id"] / "package"
    package = load_package(folder)
    source = (project / "transforms.py").read_bytes()
    assert (folder / "modules" / "transforms@1.py").read_bytes() == source
    assert package.description["modules"] == [
        {
            "name": "transforms",
            "version": 1,
            "sha256": hashlib.sha256(source).hexdigest(),
            "file": "modules/transforms@1.py",
            "functions": ["areas", "log_areas"],
        }
    ]
    assert [(step["type"], step.get("ref"), step.get("requested")) for step in package.description["preprocess"]] == [
        ("function", "transforms@1:areas", "transforms:areas"),
        ("dask", "transforms@1:log_areas", "transforms:log_areas"),
        ("standard_scaler", None, None),
    ]
    assert package.description["model"]["feature_columns"] == ["petal_area", "sepal_area"]
    shown = json_output(run_cli("models", "show", "iris-areas:1", "--json", cwd=project, env=trained["env"]))
    assert shown["modules"] == package.description["modules"]
    assert [step["type"] for step in shown["preprocess"]] == ["function", "dask", "standard_scaler"]
    # The chain ran in the job's order: areas, then log1p, then the scaler fitted on what they made.
    transformed = package.preprocessor.transform_batch(ROWS)
    scaler = package.preprocessor.preprocessors[2]
    for column, raw in (("petal_area", ROWS[PL] * ROWS[PW]), ("sepal_area", ROWS[SL] * ROWS[SW])):
        mean, std = scaler.stats_[f"mean({column})"], scaler.stats_[f"std({column})"]
        np.testing.assert_allclose(transformed[column], (np.log1p(raw) - mean) / std, rtol=1e-9)


def test_the_package_needs_no_catalog_and_ignores_newer_module_versions(trained, tmp_path):
    from raymlp.package import load_package

    project, env = trained["project"], trained["env"]
    (project / "transforms.py").write_text(TRANSFORMS.replace("np.log1p", "np.sqrt"))
    newer = run_cli("data", "modules", "add", "transforms.py", cwd=project, env=env)
    assert newer.returncode == 0 and newer.stdout.startswith("transforms version 2 added"), newer.stderr
    folder = project / ".raymlp" / "runs" / trained["summary"]["run_id"] / "package"
    copy = tmp_path / "package"
    shutil.copytree(folder, copy)
    scored = pd.read_csv(project / "predictions.csv")
    np.testing.assert_allclose(_probabilities(load_package(copy).predict(ROWS)), _probabilities(scored), atol=1e-6)


def test_a_dask_step_computes_through_ray_tasks(ray_4_cpus):
    from ray.util.dask import RayDaskCallback

    from raymlp.catalog import ModuleRecord
    from raymlp.data.transform import function_transform

    source = (
        "import os\n\n\n"
        "def tag(frame):\n"
        "    return frame.assign(total=frame.a + frame.b).map_partitions(lambda part: part.assign(pid=os.getpid()))\n"
    )
    record = ModuleRecord(
        id=1,
        name="daskmod",
        version=1,
        sha256=hashlib.sha256(source.encode()).hexdigest(),
        source=source,
        filename="daskmod.py",
        functions=[],
        created_at=None,
    )
    submitted = []

    class Submissions(RayDaskCallback):
        def _ray_postsubmit(self, task, key, deps, object_ref):
            submitted.append(object_ref)

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]}, index=[4, 0, 9])
    with Submissions():
        out = function_transform("dask", "daskmod:tag", record).transform_batch(frame)
    assert out["total"].tolist() == [11.0, 22.0, 33.0] and list(out.index) == [4, 0, 9]
    assert submitted, "no Ray task was submitted for the dask graph"
    assert set(out["pid"]) != {os.getpid()}, "the partition was computed in this process, not in a Ray worker"


def test_steps_after_a_function_step_fit_on_the_columns_it_made(ray_4_cpus):
    from raymlp.catalog import ModuleRecord
    from raymlp.config.schema import JobConfig
    from raymlp.data.preprocess import fit_preprocessor
    from raymlp.errors import WorkFailed

    source = (
        "def ratio(df):\n    return df.assign(ratio=df.a / df.b, label_text=df.a.astype(str)).drop(columns=['b'])\n"
    )
    record = ModuleRecord(
        id=1,
        name="ratios",
        version=1,
        sha256=hashlib.sha256(source.encode()).hexdigest(),
        source=source,
        filename="ratios.py",
        functions=[],
        created_at=None,
    )

    def steps(*extra):
        job = JobConfig.model_validate(
            {
                "version": 1,
                "name": "x",
                "data": {"source": {"format": "sklearn", "sklearn": {"name": "iris"}}, "dataset": {"name": "x"}},
                "preprocess": [{"type": "function", "ref": "ratios:ratio"}, *extra],
            }
        )
        return job.preprocess

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [2.0, 2.0, 2.0, 2.0]})
    train = frame
    modules = {"ratios:ratio": record}
    chain = fit_preprocessor(steps({"type": "min_max_scaler"}), train, {"a": "float", "b": "float"}, modules)
    scaler = chain.preprocessors[1]
    assert scaler.columns == ["a", "ratio"]  # made by the function; 'b' is gone and text is not scaled
    out = chain.transform_batch(frame)
    assert out["ratio"].tolist() == [0.0, 1 / 3, 2 / 3, 1.0] and "b" not in out.columns

    with pytest.raises(
        WorkFailed,
        match=r"preprocess.1 \(standard_scaler\): no column 'b' after the steps before it "
        r"\(columns there: a, ratio, label_text\)",
    ):
        fit_preprocessor(
            steps({"type": "standard_scaler", "columns": ["b"]}), train, {"a": "float", "b": "float"}, modules
        )
