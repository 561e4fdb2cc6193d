"""Light sweep trials: a scikit-learn fit in the Tune trial's own process.

A full trial is a whole train run (catalog run, a Ray task for the fit, a model package logged as
an MLflow model, test metrics): seconds of work around a fit that may take a fraction of one. A
light trial keeps what a sweep compares: it fits the trial's estimator on the pinned dataset
version, prepared exactly as the train stage prepares it (split, preprocessing fitted on the train
split) and kept in the process for the next trial with the same data settings (Tune reuses the
process), scores it on the validation split, and records an MLflow run, nested under the sweep's,
with the trial's settings and metrics. Only the best trial gets a package: the sweep trains its
settings once more as a full train run (`stage._train_best`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from .trial import TrialSpec

#: Prepared data of this process, by the settings that make it (Tune reuses a trial's process).
_PREPARED: dict[str, Any] = {}
_KEPT = 4


@dataclass
class LightTrialSpec(TrialSpec):
    """What every light trial needs: a trial's spec and the CPUs its fit may use."""

    cpus: int = 1


def run_light_trial(config: dict[str, Any], spec: LightTrialSpec) -> None:
    """One light trial (in a Tune trial process): fit, score, record; report the metrics to Tune."""
    from ray import tune

    from raymlp.config import load_job
    from raymlp.storage import resolve_storage
    from raymlp.train.sklearn_backend import fit_here

    from .space import decoded

    if spec.raymlp_home:
        os.environ["RAYMLP_HOME"] = spec.raymlp_home
    started = time.perf_counter()
    space = _space(spec.job_path, tuple(spec.overrides))
    loaded = load_job(spec.job_path, spec.job_overrides(decoded(space, config)))
    job = loaded.config
    assert job.train is not None  # a sweep's job trains (config checks)
    storage = resolve_storage(job.storage)
    prepared, dataset, arrays = _prepared(job, storage, spec)
    output_dim = len(prepared.classes) if prepared.classes else 1
    trial_id = tune.get_context().get_trial_id()
    ref, digest = f"{dataset.name}@{dataset.version}", dataset.manifest["content_digest"]
    tags = {
        "mlflow.parentRunId": spec.parent_mlflow_run,
        "raymlp.sweep_run_id": spec.sweep_run_id,
        "raymlp.trial_id": trial_id,
        "raymlp.trial_kind": "light",
        "raymlp.dataset": ref,
        "raymlp.dataset_digest": digest,
    }
    tracker, experiment = _tracker(storage, job.name)
    fit_started = time.perf_counter()
    try:
        row = fit_here(job.train, prepared.task, output_dim, prepared.target_scale, arrays, spec.cpus)
    except Exception as error:  # the failed trial's run says why, with its settings
        tags["raymlp.error"] = f"{type(error).__name__}: {error}"[:5000]
        tracker.record_run(experiment, f"{job.name}-trial-{trial_id}", tags, loaded.public_dict(), [], status="FAILED")
        raise
    row["train_seconds"] = round(time.perf_counter() - fit_started, 4)
    run = tracker.record_run(experiment, f"{job.name}-trial-{trial_id}", tags, loaded.public_dict(), [row])
    metrics = {key: value for key, value in row.items() if key not in ("epoch", "train_seconds")}
    tune.report(
        {
            **metrics,
            "epoch": 1,
            "epochs": 1,
            "best_epoch": 1,
            "mlflow_run_id": run,
            "light": True,
            "dataset": ref,
            "dataset_digest": digest,
            "framework": job.train.framework,
            "metrics_json": json.dumps(metrics),
            "trial_seconds": round(time.perf_counter() - started, 4),
            "done": True,
        }
    )


@functools.cache
def _space(job_path: str, overrides: tuple[str, ...]) -> dict[str, Any]:
    from raymlp.config import load_job

    tune = load_job(job_path, list(overrides)).config.tune
    assert tune is not None  # a light trial runs a sweep's job
    return tune.space


_TRACKERS: dict[tuple[str, str], tuple[Any, str]] = {}


def _tracker(storage: Any, experiment: str) -> tuple[Any, str]:
    """This process's tracker of the store and the experiment's id (looked up once)."""
    from raymlp.tracking import Tracker

    key = (storage.tracking_uri, experiment)
    if key not in _TRACKERS:
        tracker = Tracker(storage.tracking_uri, storage.root)
        _TRACKERS[key] = (tracker, tracker.experiment_id(experiment))
    return _TRACKERS[key]


def _prepared(job: Any, storage: Any, spec: LightTrialSpec) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
    """The pinned dataset version, prepared for this trial's data settings, and the train and
    validation splits as the model's input arrays (made once per process)."""
    from raymlp.catalog import Catalog
    from raymlp.context import Reporter
    from raymlp.train.stage import prepare_training

    key = hashlib.sha256(
        json.dumps(
            [
                spec.dataset,
                spec.dataset_version,
                job.data.model_dump(mode="json"),
                [step.model_dump(mode="json") for step in job.preprocess],
                job.train.task,
            ],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    if key not in _PREPARED:
        with Catalog(storage.catalog_url) as catalog:
            dataset = catalog.get_dataset_version(spec.dataset, spec.dataset_version)
            prepared = prepare_training(job, dataset, catalog, Reporter(quiet=True))
        while len(_PREPARED) >= _KEPT:
            _PREPARED.pop(next(iter(_PREPARED)))
        arrays = {
            name: _arrays(prepared, frame)
            for name, frame in (("train", prepared.train_frame), ("validation", prepared.validation_frame))
        }
        _PREPARED[key] = (prepared, dataset, arrays)
    return _PREPARED[key]


def _arrays(prepared: Any, frame: Any) -> tuple[Any, Any]:
    import numpy as np

    from raymlp.train.features import FEATURES_COLUMN, LABEL_COLUMN

    model_input = prepared.to_model_input(frame)
    labels = np.asarray(model_input[LABEL_COLUMN])
    return (
        np.asarray(model_input[FEATURES_COLUMN], dtype=np.float32),
        labels.astype(np.int64 if prepared.task == "classification" else np.float64, copy=False),
    )
