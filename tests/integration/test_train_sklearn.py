"""The scikit-learn backend on the session's Ray: the wine job, a regressor, cross-validation folds as
Ray tasks, usage errors, and the package predicting in plain Python as the train stage measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raymlp import load_job
from raymlp.context import Reporter
from raymlp.errors import UsageError
from raymlp.package.formats import sklearn_format
from raymlp.train import sklearn_backend
from tests.conftest import run_job_quietly

from .conftest import REPO

pytestmark = [pytest.mark.integration]

WINE_JOB = REPO / "jobs" / "wine-sklearn.yaml"
DIABETES_JOB = REPO / "jobs" / "diabetes-regression.yaml"
QUIET = Reporter(quiet=True)


def _pool_actors() -> dict[str, dict]:
    """Every actor of Ray's joblib backend this session has started (alive or dead), by id."""
    import ray._private.state

    return {
        actor_id: info
        for actor_id, info in ray._private.state.actors().items()
        if info["ActorClassName"] == "PoolActor"
    }


def _recording_fit(outcomes: list):
    """The sklearn backend's fit, keeping each FitOutcome (the train stage keeps only its metrics)."""
    real_fit = sklearn_backend.fit

    def fit(request):
        outcomes.append(real_fit(request))
        return outcomes[-1]

    return fit


@pytest.fixture
def fit_outcomes(monkeypatch):
    """FitOutcomes of the sklearn backend's fits in this test."""
    outcomes: list = []
    monkeypatch.setattr(sklearn_backend, "fit", _recording_fit(outcomes))
    return outcomes


@pytest.fixture(scope="module")
def wine_run(ray_4_cpus, tmp_path_factory):
    """jobs/wine-sklearn.yaml run once (convert, train, register) in its own RAYMLP_HOME."""
    home = tmp_path_factory.mktemp("wine-sklearn") / "home"
    outcomes: list = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYMLP_HOME", str(home))
        patch.setattr(sklearn_backend, "fit", _recording_fit(outcomes))
        actors_before = set(_pool_actors())
        summary = run_job_quietly(load_job(WINE_JOB), reporter=QUIET)
    new_actors = {key: value for key, value in _pool_actors().items() if key not in actors_before}
    return {"home": home, "summary": summary, "outcome": outcomes[0], "pool_actors": new_actors}


def test_wine_job_reaches_accuracy_and_registers_fitting_in_a_ray_task_on_ray_joblib(wine_run):
    summary, outcome = wine_run["summary"], wine_run["outcome"]
    assert summary.dataset == "wine@1" and summary.dataset_rows == 178
    assert summary.metrics["test_accuracy"] >= 0.9
    assert {"train_loss", "val_loss", "val_accuracy", "val_f1", "val_roc_auc", "test_accuracy"} <= set(summary.metrics)
    assert (summary.model, summary.model_version, summary.alias_moved) == ("wine-sklearn", 1, True)
    # One history row; the fit ran in a Ray task (not in this process) ...
    assert [row["epoch"] for row in outcome.history] == [1] and outcome.best_epoch == 1
    assert outcome.weights.name == "estimator.pkl" and outcome.weights.is_file()
    assert outcome.extra["fit"]["task_id"] and outcome.extra["fit"]["pid"] != os.getpid()
    assert outcome.extra["cv_folds"] == []
    # ... and the forest's n_jobs: 2 ran as two Ray worker processes of Ray's joblib backend, started by that task.
    actors = wine_run["pool_actors"].values()
    assert len(actors) >= 2
    assert len({(actor["OwnerAddress"]["IPAddress"], actor["OwnerAddress"]["Port"]) for actor in actors}) == 1
    assert not {actor["Pid"] for actor in actors} & {os.getpid(), outcome.extra["fit"]["pid"]}


def _test_rows(home, job_path):
    """The test split of the job's dataset, as the train stage made it."""
    from raymlp.catalog import Catalog
    from raymlp.data.split import split_frame
    from raymlp.data.versions import read_version_table
    from raymlp.package import numeric_features_as_float
    from raymlp.storage import resolve_storage

    job = load_job(job_path).config
    with Catalog(resolve_storage(job.storage).catalog_url) as catalog:
        record = catalog.get_dataset_version(job.data.dataset.name)
    frame = read_version_table(record.path, record.manifest).to_pandas()
    label = job.data.label
    frame = numeric_features_as_float(
        frame, [{"name": name, "type": "float"} for name in frame.columns if name != label]
    )
    return split_frame(frame, job.data.split, frame[label])[2]


def test_registered_package_predicts_in_plain_python_as_the_stage_measured(wine_run, monkeypatch, tmp_path):
    import joblib

    from raymlp.package import load_package
    from raymlp.package.features import feature_matrix
    from raymlp.storage import resolve_storage
    from raymlp.tracking import ModelRef, Tracker

    monkeypatch.setenv("RAYMLP_HOME", str(wine_run["home"]))
    storage = resolve_storage()
    package_dir, version = Tracker(storage.tracking_uri, wine_run["home"]).package_for(
        ModelRef("wine-sklearn", alias="champion"), storage.folder("cache", "models")
    )
    assert version == 1 and (package_dir / "model" / "estimator.pkl").is_file()
    test_rows = _test_rows(wine_run["home"], WINE_JOB)
    assert len(test_rows) == 36

    # A fresh Python process that never connects to Ray.
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(test_rows.to_json(orient="records"))
    script = (
        "import json, sys, pandas as pd\n"
        "from raymlp.package import load_package\n"
        "package = load_package(sys.argv[1])\n"
        "predicted = package.predict(pd.read_json(sys.argv[2], orient='records'))\n"
        "import ray; assert not ray.is_initialized()\n"
        "print(json.dumps(predicted.to_dict(orient='list')))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        [sys.executable, "-c", script, str(package_dir), str(rows_file)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    predicted = json.loads(result.stdout.strip().splitlines()[-1])

    truth = test_rows["target"].tolist()
    accuracy = float(np.mean([guess == label for guess, label in zip(predicted["prediction"], truth)]))
    assert accuracy == pytest.approx(wine_run["summary"].metrics["test_accuracy"])
    # predict_scores' columns are the package's classes in order: its argmax is the estimator's own predict.
    package = load_package(package_dir)
    classes = np.asarray(package.classes, dtype=object)
    estimator = joblib.load(package_dir / "model" / "estimator.pkl")
    matrix = feature_matrix(
        package.preprocessor.transform_batch(test_rows[package.feature_names]),
        package.description["model"]["feature_columns"],
    )
    assert predicted["prediction"] == classes[estimator.predict(matrix)].tolist()
    for index, name in enumerate(package.classes):
        assert np.allclose(predicted[f"probability_{name}"], estimator.predict_proba(matrix)[:, index], atol=1e-6)


def test_mlflow_models_predict_builds_the_model_its_own_virtualenv(wine_run, monkeypatch, tmp_path):
    """The logged model needs nothing unpublished: `mlflow models predict --env-manager virtualenv`
    (pyenv's Python, a fresh venv, its requirements installed from the package index, raymlp's code
    carried in the model's code/ folder) gives the package's own predictions. MLflow's predict
    command builds that environment anew in a temporary folder on every call; a pyenv hook
    (pyenv_hooks/) lends it this machine's pyenv CPython of the same version instead of a download
    and compile."""
    import shutil

    import mlflow.pyfunc
    import pandas as pd

    from raymlp.package import load_package
    from raymlp.storage import resolve_storage

    pyenv = shutil.which("pyenv")
    assert pyenv, "MLflow's virtualenv env manager needs pyenv on PATH"
    monkeypatch.setenv("RAYMLP_HOME", str(wine_run["home"]))
    storage = resolve_storage()
    features = _test_rows(wine_run["home"], WINE_JOB).drop(columns=["target"])
    features.to_csv(tmp_path / "input.csv", index=False)
    model_uri = wine_run["summary"].model_uri
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(storage.tracking_uri)
    try:
        requirements = Path(mlflow.pyfunc.get_model_dependencies(model_uri)).read_text().split()
    finally:
        mlflow.set_tracking_uri(previous)
    assert "raymlp" not in [line.split("=")[0] for line in requirements], requirements

    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "models",
            "predict",
            "-m",
            model_uri,
            "--env-manager",
            "virtualenv",
            "-i",
            "input.csv",
            "-t",
            "csv",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": storage.tracking_uri,
            "PYENV_HOOK_PATH": str(Path(__file__).with_name("pyenv_hooks")),
            "RAYMLP_TEST_PYENV_ROOT": subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip(),
        },
    )
    assert result.returncode == 0, result.stderr[-4000:]
    predicted = pd.DataFrame(json.loads(result.stdout.strip().splitlines()[-1])["predictions"])
    expected = load_package(wine_run["summary"].package_dir).predict(features)
    assert predicted["prediction"].tolist() == expected["prediction"].tolist()
    probabilities = [column for column in expected.columns if column.startswith("probability_")]
    np.testing.assert_allclose(predicted[probabilities].to_numpy(), expected[probabilities].to_numpy(), atol=1e-9)


def test_ridge_regression_on_diabetes(ray_4_cpus, raymlp_home):
    overrides = [
        "train.framework=sklearn",
        "train.model={type: sklearn.linear_model.Ridge, params: {alpha: 0.5}}",
        "register.require.test_r2=>= 0.35",
    ]
    summary = run_job_quietly(load_job(DIABETES_JOB, overrides), reporter=QUIET)
    assert {"train_loss", "val_rmse", "val_mae", "val_r2", "test_rmse", "test_r2"} <= set(summary.metrics)
    assert summary.metrics["test_r2"] >= 0.35, summary.metrics
    assert summary.alias_moved is True
    # Errors in the label's own units: the diabetes target's spread is ~77, a useful model's RMSE well below it.
    assert 30 < summary.metrics["test_rmse"] < 70 and summary.metrics["val_rmse"] < 70


def test_cv_folds_are_parallel_ray_tasks_with_mean_and_std(ray_4_cpus, raymlp_home, fit_outcomes):
    overrides = ["train.cv_folds=3", "train.model.params={n_estimators: 50, max_depth: 4, n_jobs: 1}"]
    summary = run_job_quietly(load_job(WINE_JOB, overrides), only=["convert", "train"], reporter=QUIET)
    metrics = summary.metrics
    for name in ("loss", "accuracy", "f1", "roc_auc"):
        assert {f"cv_{name}_mean", f"cv_{name}_std"} <= set(metrics)
        assert metrics[f"cv_{name}_std"] >= 0.0
    assert 0.85 <= metrics["cv_accuracy_mean"] <= 1.0 and metrics["cv_accuracy_std"] < 0.15
    assert 0.0 < metrics["cv_loss_mean"] < 1.0
    (outcome,) = fit_outcomes
    assert outcome.history[0]["cv_accuracy_mean"] == metrics["cv_accuracy_mean"]
    folds = outcome.extra["cv_folds"]
    assert [fold["fold"] for fold in folds] == [1, 2, 3]
    # train + validation rows (106 + 36), each held out exactly once
    assert sum(fold["test_rows"] for fold in folds) == 142
    assert all(fold["train_rows"] + fold["test_rows"] == 142 for fold in folds)
    # Each fold was its own Ray task, apart from the final fit and from this process.
    task_ids = {fold["task_id"] for fold in folds} | {outcome.extra["fit"]["task_id"]}
    assert len(task_ids) == 4 and all(task_ids)
    assert os.getpid() not in {fold["pid"] for fold in folds}
    assert metrics["cv_accuracy_mean"] == pytest.approx(np.mean([fold["metrics"]["cv_accuracy"] for fold in folds]))
    assert metrics["cv_accuracy_std"] == pytest.approx(np.std([fold["metrics"]["cv_accuracy"] for fold in folds]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "train.model.type=sklearn.ensemble.RandomForestClassifer",
            (
                "train.model.type: module 'sklearn.ensemble' has no 'RandomForestClassifer'; "
                "did you mean sklearn.ensemble.RandomForestClassifier"
            ),
        ),
        (
            "train.model={type: sklearn.linear_model.Ridge}",
            "train.model.type: 'sklearn.linear_model.Ridge' is a regressor, but train.task auto found a classification label",
        ),
    ],
)
def test_a_bad_estimator_is_a_usage_error_naming_the_key(wine_run, monkeypatch, override, message):
    monkeypatch.setenv("RAYMLP_HOME", str(wine_run["home"]))  # its dataset is in the catalog
    with pytest.raises(UsageError) as raised:
        run_job_quietly(load_job(WINE_JOB, [override]), only=["train"], reporter=QUIET)
    assert raised.value.exit_code == 2
    assert message in str(raised.value), str(
        raised.value
    )  # a class path is checked before the run: `--set ...: ` first


@pytest.mark.parametrize(
    ("path", "params", "task", "message"),
    [
        ("nosuchpackage.Model", {}, "classification", "train.model.type: cannot import module 'nosuchpackage'"),
        (
            "sklearn.datasets.load_wine",
            {},
            "classification",
            "train.model.type: 'sklearn.datasets.load_wine' is not a scikit-learn style estimator class",
        ),
        (
            "sklearn.ensemble.RandomForestClassifier",
            {"n_estimator": 10},
            "classification",
            "train.model.params: sklearn.ensemble.RandomForestClassifier has no parameter n_estimator (did you mean n_estimators?)",
        ),
        (
            "sklearn.ensemble.RandomForestClassifier",
            {"n_estimators": -1},
            "classification",
            "train.model.params: The 'n_estimators' parameter of RandomForestClassifier must be an int in the range [1, inf)",
        ),
        (
            "sklearn.ensemble.RandomForestClassifier",
            {},
            "regression",
            "train.model.type: 'sklearn.ensemble.RandomForestClassifier' is a classifier, but train.task auto found a numeric",
        ),
        (
            "sklearn.svm.SVC",
            {},
            "classification",
            "train.model.type: sklearn.svm.SVC as configured gives no class probabilities",
        ),
    ],
)
def test_estimator_checks(path, params, task, message):
    with pytest.raises(UsageError) as raised:
        sklearn_backend.build_estimator(path, params, task, "auto", seed=0)
    assert raised.value.exit_code == 2
    assert str(raised.value).startswith(message), str(raised.value)


def test_seed_becomes_random_state_unless_params_set_it():
    seeded = sklearn_backend.build_estimator("sklearn.ensemble.RandomForestClassifier", {}, "classification", seed=11)
    assert seeded.random_state == 11
    kept = sklearn_backend.build_estimator(
        "sklearn.ensemble.RandomForestClassifier", {"random_state": 3}, "classification", seed=11
    )
    assert kept.random_state == 3
    assert (
        sklearn_backend.build_estimator("sklearn.linear_model.Ridge", {}, "regression", seed=11).get_params()[
            "random_state"
        ]
        == 11
    )


def test_scores_cover_classes_the_estimator_never_saw():
    from sklearn.linear_model import LogisticRegression

    features = np.array([[0.0], [0.1], [5.0], [5.1]], dtype=np.float32)
    estimator = LogisticRegression().fit(features, np.array([0, 0, 2, 2]))  # class 1 of 4 classes never seen
    scores = sklearn_format.predict_scores(estimator, features, output_dim=4)
    assert scores.shape == (4, 4) and np.isfinite(scores).all()
    probabilities = np.exp(scores)
    assert np.allclose(probabilities[:, [0, 2]], estimator.predict_proba(features))
    assert (probabilities[:, [1, 3]] <= 1e-14).all()
    assert np.array_equal(scores.argmax(axis=1), [0, 0, 2, 2])


def test_fit_ignores_epoch_settings_reports_progress_and_pads_unseen_classes(ray_4_cpus, tmp_path):
    import ray.data
    from ray.util.queue import Queue

    from raymlp.config.schema import TrainConfig
    from raymlp.train.backend import TrainRequest
    from raymlp.train.features import FEATURES_COLUMN, LABEL_COLUMN

    generator = np.random.default_rng(0)

    def split(rows: int):  # classes 0-2 of a label with 4 classes: class 3 never appears
        labels = generator.integers(0, 3, rows)
        features = (labels[:, None] + generator.normal(0, 0.2, (rows, 2))).astype(np.float32)
        return ray.data.from_items(
            [{FEATURES_COLUMN: row, LABEL_COLUMN: int(label)} for row, label in zip(features, labels)]
        )

    train = TrainConfig.model_validate(
        {
            "framework": "sklearn",
            "model": {"type": "sklearn.linear_model.LogisticRegression"},
            "epochs": 50,
            "batch_size": 3,
            "optimizer": {"name": "sgd", "lr": 0.5},  # meaningless here, ignored
        }
    )
    queue = Queue(actor_options={"num_cpus": 0})
    try:
        outcome = sklearn_backend.fit(
            TrainRequest(
                train=train,
                task="classification",
                input_dim=2,
                output_dim=4,
                datasets={"train": split(60), "validation": split(30)},
                storage_path=str(tmp_path),
                run_name="progress",
                output_dir=tmp_path / "out",
                progress=queue,
            )
        )
        record = queue.get(timeout=30)
    finally:
        queue.shutdown()
    assert (record["epoch"], record["epochs"], record["samples"]) == (1, 1, 60)
    assert record["metrics"] == outcome.history[0] == outcome.best_metrics
    assert outcome.best_metrics["val_accuracy"] > 0.9 and outcome.checkpoint_path == str(outcome.weights)

    package_dir = tmp_path / "package"
    (package_dir / "model").mkdir(parents=True)
    outcome.weights.rename(package_dir / "model" / outcome.weights.name)
    estimator = sklearn_format.load_for_inference(
        package_dir, {"type": "sklearn.linear_model.LogisticRegression", "output_dim": 4}
    )
    scores = sklearn_format.predict_scores(estimator, np.array([[0.0, 0.0], [2.0, 2.0]], dtype=np.float32))
    assert scores.shape == (2, 4) and list(scores.argmax(axis=1)) == [0, 2]
    assert np.exp(scores[:, 3]).max() <= 1e-14
