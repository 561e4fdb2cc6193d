"""The XGBoost backend on the session's Ray: distributed boosting, early stopping, resume, and the
package it makes, loaded in plain Python."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from raymlp import load_job
from raymlp.context import Reporter
from tests.conftest import run_job_quietly

from .conftest import REPO

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def wine_run(ray_4_cpus, tmp_path_factory):
    """jobs/wine-xgboost.yaml run once (convert, train with 2 workers, register) in a fresh RAYMLP_HOME."""
    home = tmp_path_factory.mktemp("wine-xgboost") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYMLP_HOME", str(home))
        summary = run_job_quietly(load_job(REPO / "jobs" / "wine-xgboost.yaml"), reporter=Reporter(quiet=True))
        yield summary, home


def test_wine_job_reaches_the_gate_with_two_workers_and_registers(wine_run):
    summary, home = wine_run
    assert summary.dataset == "wine@1" and summary.dataset_rows == 178
    assert summary.metrics["test_accuracy"] >= 0.9
    assert {"train_loss", "val_loss", "val_accuracy", "val_f1", "val_roc_auc"} <= set(summary.metrics)
    assert (summary.model, summary.model_version, summary.alias_moved) == ("wine-xgboost", 1, True)

    from raymlp.storage import resolve_storage
    from raymlp.tracking import ModelRef, Tracker

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYMLP_HOME", str(home))
        tracker = Tracker(resolve_storage().tracking_uri, home)
        assert tracker.resolve(ModelRef("wine-xgboost", alias="champion"))[0] == 1


def test_wine_package_predicts_in_plain_python_as_reported(wine_run):
    import xgboost

    from raymlp.data.sources import sklearn_frame
    from raymlp.data.split import split_frame
    from raymlp.package import load_package

    summary, home = wine_run
    package = load_package(home / "runs" / summary.run_id / "package")
    assert package.description["framework"] == "xgboost"
    booster = xgboost.Booster(model_file=str(package.path / "model" / "model.ubj"))
    # The package holds the booster cut at the best round.
    assert booster.num_boosted_rounds() == package.description["lineage"]["best_epoch"]

    # The test split exactly as the train stage made it (job's split settings, stratified by label).
    job = load_job(REPO / "jobs" / "wine-xgboost.yaml").config
    frame = sklearn_frame("wine")
    _, _, test = split_frame(frame, job.data.split, frame["target"])
    predicted = package.predict(test)
    accuracy = float((predicted["prediction"] == test["target"]).mean())
    assert accuracy == pytest.approx(summary.metrics["test_accuracy"])
    assert accuracy >= 0.9
    # The package's probabilities (softmax of margins) are XGBoost's own softprob output.
    features = test[[name for name in frame.columns if name != "target"]].to_numpy(np.float32)
    own = booster.predict(xgboost.DMatrix(features))
    shown = predicted[[f"probability_{name}" for name in package.classes]].to_numpy()
    np.testing.assert_allclose(shown, own, rtol=1e-4, atol=1e-6)


def test_diabetes_regression_with_xgboost(ray_4_cpus, raymlp_home):
    # Diabetes' test R² for small trees ranges 0.27-0.54 over split seeds (88 test rows); split seed
    # 2 is fixed here so the check is about the backend, not the luck of the split.
    job = load_job(
        REPO / "jobs" / "diabetes-regression.yaml",
        [
            "train.framework=xgboost",
            "train.model={type: xgboost, params: {max_depth: 2, eta: 0.1}}",
            "train.epochs=60",
            "train.early_stopping={metric: val_rmse, mode: min, patience: 10}",
            "data.split.seed=2",
            "register.require.test_r2=>= 0.35",
        ],
    )
    summary = run_job_quietly(job, reporter=Reporter(quiet=True))
    assert summary.metrics["test_r2"] >= 0.35
    assert {"train_loss", "val_loss", "val_rmse", "val_mae", "val_r2", "test_rmse"} <= set(summary.metrics)
    # Metrics are in the label's units (diabetes progression, std about 77): RMSE far above 1.
    assert 30 < summary.metrics["test_rmse"] < 80
    assert (summary.model_version, summary.alias_moved) == (1, True)


# --- the backend on its own: resume, early stopping --------------------------------------------


def _wine_datasets(binary: bool) -> dict:
    import ray.data
    from sklearn.datasets import load_wine

    from raymlp.train.features import FEATURES_COLUMN, LABEL_COLUMN

    features, labels = load_wine(return_X_y=True)
    if binary:
        labels = (labels == 0).astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))

    def part(rows: np.ndarray):
        return ray.data.from_items(
            [{FEATURES_COLUMN: features[row].astype(np.float32), LABEL_COLUMN: int(labels[row])} for row in rows]
        ).materialize()

    return {"train": part(order[:120]), "validation": part(order[120:])}


def _request(tmp_path: Path, datasets: dict, name: str, classes: int, **train: object):
    from raymlp.config.schema import TrainConfig
    from raymlp.train.backend import TrainRequest

    config = TrainConfig.model_validate(
        {
            "framework": "xgboost",
            "model": {"type": "xgboost", "params": {"max_depth": 2, "eta": 0.3}},
            "scaling": {"num_workers": 2},
            "seed": 3,
            **train,
        }
    )
    return TrainRequest(
        train=config,
        task="classification",
        input_dim=13,
        output_dim=classes,
        datasets=datasets,
        storage_path=str(tmp_path / "ray_results"),
        run_name=name,
        output_dir=tmp_path / name,
    )


def test_a_resumed_run_continues_from_its_checkpoint_and_stops_early(ray_4_cpus, tmp_path):
    import xgboost

    from raymlp.package.formats import xgboost_format
    from raymlp.train import xgboost_backend
    from raymlp.train.metrics import EarlyStopping

    datasets = _wine_datasets(binary=True)
    first = xgboost_backend.fit(_request(tmp_path, datasets, "binary", 2, epochs=3))
    assert [row["epoch"] for row in first.history] == [1, 2, 3]

    # The same run name and storage: Ray Train hands the workers the run's latest checkpoint, and
    # boosting goes on from round 4 until early stopping (replayed over the restored rounds) says stop.
    rule = {"metric": "val_loss", "mode": "min", "patience": 3, "min_delta": 0.0}
    resumed = xgboost_backend.fit(_request(tmp_path, datasets, "binary", 2, epochs=300, early_stopping=rule))
    rounds = len(resumed.history)
    assert 3 < rounds < 300
    assert resumed.history[:3] == first.history  # restored, not retrained
    assert [row["epoch"] for row in resumed.history] == list(range(1, rounds + 1))
    # Every worker stopped on the first round the rule says stop, not later.
    assert [EarlyStopping(rule).replay(resumed.history[:n]) for n in (rounds - 1, rounds)] == [False, True]
    best = min(resumed.history, key=lambda row: row["val_loss"])
    assert resumed.best_epoch == best["epoch"] and resumed.best_metrics == best
    # train_loss is XGBoost's train logloss: positive and falling as trees are added.
    assert 0 < resumed.history[-1]["train_loss"] < first.history[-1]["train_loss"]

    # The weights file is one booster file, cut at the best round; binary scores are [n, 2].
    package = tmp_path / "package"
    (package / "model").mkdir(parents=True)
    shutil.copy(resumed.weights, package / "model" / resumed.weights.name)
    booster = xgboost_format.load_for_inference(package, {"type": "xgboost"})
    assert booster.num_boosted_rounds() == resumed.best_epoch
    matrix = np.random.default_rng(1).normal(size=(5, 13)).astype(np.float32) * 10 + 50
    scores = xgboost_format.predict_scores(booster, matrix)
    assert scores.shape == (5, 2)
    probability = np.exp(scores[:, 1]) / np.exp(scores).sum(axis=1)
    np.testing.assert_allclose(probability, booster.predict(xgboost.DMatrix(matrix)), rtol=1e-5)
    assert xgboost_format.predict_scores(booster, matrix[:0]).shape == (0, 2)
    assert xgboost_format.pip_requirements() == [f"xgboost=={xgboost.__version__}"]


def test_user_params_cannot_change_what_the_task_fixes():
    from raymlp.train.xgboost_backend import booster_params

    params = booster_params(
        "classification",
        3,
        {"objective": "reg:tweedie", "eval_metric": "auc", "max_depth": 2, "seed": 11},
        seed=3,
        use_gpu=True,
    )
    assert params == {
        "tree_method": "hist",
        "device": "cuda",
        "seed": 11,
        "max_depth": 2,
        "objective": "multi:softprob",
        "num_class": 3,
        "eval_metric": "mlogloss",
    }
    assert booster_params("classification", 2, {}, seed=3, use_gpu=False)["objective"] == "binary:logistic"
    assert booster_params("regression", 1, {}, seed=3, use_gpu=False) == {
        "tree_method": "hist",
        "seed": 3,
        "objective": "reg:squarederror",
        "eval_metric": "rmse",
    }


def test_params_xgboost_rejects_fail_on_the_driver_naming_the_key():
    from raymlp.errors import UsageError
    from raymlp.train.xgboost_backend import booster_params, check_params

    with pytest.raises(
        UsageError, match=r"^train\.model\.params: XGBoost rejects them: value -1 for Parameter max_depth"
    ):
        check_params(booster_params("classification", 3, {"max_depth": -1}, seed=0, use_gpu=False), input_dim=13)
