"""A sweep's trial: what one trial runs, and the runner that runs it.

A full trial is a run of the job's train stage with the trial's values as `--set` overrides, in
the Tune trial's own process (connected to the same Ray), so it is exactly a `raymlp train` run:
its own catalog run, MLflow run (nested under the sweep's), checkpoints and model package. The
tune stage does not know how to run a job: the pipeline hands it the runner (`TrainRunner`,
`raymlp.pipeline.train_trial`), which travels to the trial processes in the `TrialSpec` (a
module-level function, pickled by name), so `raymlp.tune` never imports `raymlp.pipeline`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Protocol

from .space import decoded, trial_overrides

#: What a trial's last report carries besides metrics (Tune keeps them with the trial's result).
TRIAL_KEYS = (
    "raymlp_run_id",
    "mlflow_run_id",
    "model_uri",
    "package_dir",
    "best_epoch",
    "dataset",
    "dataset_digest",
    "framework",
)


class TrainRunner(Protocol):
    """Runs the job at `job_path` with `overrides`, its train stage only, quietly, as the sweep's
    trial `sweep_trial` ({mlflow_run, run_id, trial, dataset, dataset_version, [refit],
    [start_checkpoint]}); returns the run's summary (`raymlp.pipeline.RunSummary`: run_id,
    mlflow_run_id, metrics, model_uri, package_dir, best_epoch, epochs, dataset, content_digest,
    framework)."""

    def __call__(self, job_path: str, overrides: list[str], sweep_trial: dict[str, str]) -> Any: ...


@dataclass
class TrialSpec:
    """What every trial needs, sent to the trial processes (plain values, and the runner: a
    module-level function)."""

    job_path: str
    overrides: list[str]
    raymlp_home: str | None
    parent_mlflow_run: str
    sweep_run_id: str
    dataset: str
    dataset_version: int
    runner: TrainRunner
    pbt: bool = False

    def job_overrides(self, values: dict[str, Any]) -> list[str]:
        """The job's overrides with a trial's values applied (`path=<JSON>` each)."""
        return [*self.overrides, *trial_overrides(values)]


def run_trial(config: dict[str, Any], spec: TrialSpec) -> None:
    """One full trial (in a Tune trial process): the train stage with the trial's values. Under
    PBT, every epoch's checkpoint goes to Tune too, and a trial PBT restarted from a better trial's
    checkpoint (with new optimizer settings) trains on from it."""
    from ray import tune

    from raymlp.config import load_job
    from raymlp.ray_internals import report_train_checkpoints_to_tune

    settings = load_job(spec.job_path, spec.overrides).config.tune
    assert settings is not None, "a sweep's trial runs a job with a tune section"
    space = settings.space
    start = None
    if spec.pbt:
        # Ray's `TuneReportCallback` hands Tune each epoch's Ray Train checkpoint only as a folder
        # (`checkpoint_path`), and PBT can only exploit a Tune checkpoint: this trial's session
        # reports that folder as the result's checkpoint (Ray Tune internals, in ray_internals).
        report_train_checkpoints_to_tune()
        checkpoint = tune.get_checkpoint()
        start = checkpoint.path if checkpoint is not None else None
    tune.report(train_run(spec, decoded(space, config), tune.get_context().get_trial_id(), start_checkpoint=start))


def train_run(
    spec: TrialSpec, values: dict[str, Any], trial_id: str, refit: bool = False, start_checkpoint: str | None = None
) -> dict[str, Any]:
    """A train run of the job with `values` (a trial's, or the best light trial's again: `refit`),
    by the spec's runner, its MLflow run nested under the sweep's; what the trial reports when it
    ends."""
    if spec.raymlp_home:  # the driver's storage, whatever this process inherited
        os.environ["RAYMLP_HOME"] = spec.raymlp_home
    trial = {
        "mlflow_run": spec.parent_mlflow_run,
        "run_id": spec.sweep_run_id,
        "trial": trial_id,
        "dataset": spec.dataset,
        "dataset_version": str(spec.dataset_version),
        **({"refit": "true"} if refit else {}),
        **({"start_checkpoint": start_checkpoint} if start_checkpoint else {}),
    }
    summary = spec.runner(spec.job_path, spec.job_overrides(values), trial)
    final: dict[str, Any] = {key: value for key, value in summary.metrics.items() if isinstance(value, int | float)}
    final.update(
        raymlp_run_id=summary.run_id,
        mlflow_run_id=summary.mlflow_run_id,
        model_uri=summary.model_uri or "",
        package_dir=summary.package_dir or "",
        best_epoch=summary.best_epoch or 0,
        epochs=summary.epochs or 0,
        dataset=summary.dataset or "",
        dataset_digest=summary.content_digest or "",
        framework=summary.framework or "",
        metrics_json=json.dumps(summary.metrics),
        done=True,
    )
    return final
