"""PyTorch jobs from jobs/ on the session's Ray: wine (two workers), digits as 8x8 images with a
CNN, a user's own network builder, early stopping, gradient accumulation and elastic workers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from raymlp import load_job
from raymlp.context import Reporter
from tests.conftest import run_job_quietly

from .conftest import REPO

pytestmark = [pytest.mark.integration]


def _epochs_run(mlflow_run_id: str) -> int:
    from raymlp.storage import resolve_storage
    from raymlp.tracking import Tracker

    storage = resolve_storage()
    tracker = Tracker(storage.tracking_uri, storage.root)
    return len(tracker.client.get_metric_history(mlflow_run_id, "train_loss"))


def _package(summary):
    from raymlp.storage import resolve_storage

    return resolve_storage().folder("runs", summary.run_id, "package")


def test_wine_on_two_workers_reaches_the_bar(ray_4_cpus, raymlp_home):
    summary = run_job_quietly(load_job(REPO / "jobs" / "wine-torch.yaml"), reporter=Reporter(quiet=True))
    assert summary.metrics["test_accuracy"] >= 0.9
    assert {"test_f1", "test_roc_auc", "val_roc_auc"} <= set(summary.metrics)
    assert summary.alias_moved


def test_digits_as_images_with_a_cnn_reach_the_bar(ray_4_cpus, raymlp_home):
    import json

    summary = run_job_quietly(load_job(REPO / "jobs" / "digits-cnn-torch.yaml"), reporter=Reporter(quiet=True))
    assert summary.metrics["test_accuracy"] >= 0.9
    described = json.loads((_package(summary) / "raymlp-package.json").read_text())["model"]
    assert (described["type"], described["image_shape"]) == ("cnn", [8, 8, 1])


def test_diabetes_regression_reaches_the_bar(ray_4_cpus, raymlp_home):
    summary = run_job_quietly(load_job(REPO / "jobs" / "diabetes-regression.yaml"), reporter=Reporter(quiet=True))
    assert summary.metrics["test_r2"] >= 0.35


BUILDER = """
import torch


class Residual(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.inner = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, width))

    def forward(self, x):
        return x + self.inner(x)


def build(input_shape, output_dim, params):
    width = params["width"]
    return torch.nn.Sequential(torch.nn.Linear(input_shape[0], width), Residual(width), torch.nn.Linear(width, output_dim))
"""


def test_a_workers_own_error_is_reported_as_itself(ray_4_cpus, raymlp_home, tmp_path):
    """A custom builder that makes no torch module fails in the Ray Train worker: the driver raises
    that WorkFailed with its own message (the shared driver maps a worker's raymlp errors back)."""
    from raymlp.errors import WorkFailed

    folder = tmp_path / "project"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "nets.py").write_text(
        "def not_a_module(input_shape, output_dim, params):\n    return 'a string'\n"
    )
    job = folder / "job.yaml"
    job.write_text(
        (REPO / "jobs" / "wine-torch.yaml")
        .read_text()
        .replace(
            "model: {type: mlp, hidden_layers: [32, 16], dropout: 0.1}",
            'model: {type: custom, builder: "models.nets:not_a_module"}',
        )
        .replace("num_workers: 2", "num_workers: 1")
    )
    with pytest.raises(WorkFailed) as failed:
        run_job_quietly(load_job(job), only=["convert", "train"], reporter=Reporter(quiet=True))
    assert str(failed.value) == "train.model.builder models.nets:not_a_module returned str, not a torch.nn.Module"


def test_a_users_builder_trains_and_its_package_needs_no_builder_file(ray_4_cpus, raymlp_home, tmp_path):
    """`custom` runs the user's function on every worker; the package carries its source, so the
    model loads after the file is gone and predicts exactly as the run evaluated it."""
    from raymlp.package import load_package
    from raymlp.train.stage import evaluation_metrics

    folder = tmp_path / "project"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "nets.py").write_text(BUILDER)
    job = folder / "job.yaml"
    job.write_text(
        (REPO / "jobs" / "wine-torch.yaml")
        .read_text()
        .replace(
            "model: {type: mlp, hidden_layers: [32, 16], dropout: 0.1}",
            'model: {type: custom, builder: "models.nets:build", params: {width: 24}}',
        )
    )
    summary = run_job_quietly(load_job(job), reporter=Reporter(quiet=True))
    assert summary.metrics["test_accuracy"] >= 0.9
    shutil.rmtree(folder / "models")
    package = load_package(_package(summary))
    assert package.description["model"]["builder"] == "models.nets:build"
    from raymlp.data.sources import sklearn_frame

    frame = sklearn_frame("wine")
    predicted = package.predict(frame)
    again = load_package(_package(summary)).predict(frame)
    assert np.array_equal(predicted["prediction"].to_numpy(), again["prediction"].to_numpy())
    accuracy = evaluation_metrics("classification", frame["target"], predicted, package.classes, "all")["all_accuracy"]
    assert accuracy >= 0.9


def test_early_stopping_stops_after_patience_epochs_without_improvement(ray_4_cpus, raymlp_home):
    """min_delta larger than any change: the first epoch is the best, and training stops
    `patience` epochs later instead of running all 30."""
    job = load_job(
        REPO / "jobs" / "wine-torch.yaml",
        [
            "train.early_stopping.min_delta=100",
            "train.early_stopping.patience=2",
            "train.scaling.num_workers=1",
            "register.require.test_accuracy=>= 0.0",
        ],
    )
    summary = run_job_quietly(job, only=["convert", "train"], reporter=Reporter(quiet=True))
    assert _epochs_run(summary.mlflow_run_id) == 3


def test_accumulated_gradients_on_elastic_workers(ray_4_cpus, raymlp_home):
    """Elastic [1, 2] workers and gradients summed over 2 batches per step still train to the bar."""
    job = load_job(
        REPO / "jobs" / "wine-torch.yaml",
        [
            "train.scaling.num_workers=[1, 2]",
            "train.gradient_accumulation_steps=2",
            "train.batch_size=8",
        ],
    )
    summary = run_job_quietly(job, only=["convert", "train"], reporter=Reporter(quiet=True))
    assert summary.metrics["test_accuracy"] >= 0.9
