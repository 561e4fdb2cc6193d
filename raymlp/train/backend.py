"""The one interface every training backend implements, and the registry of backends by name."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from raymlp.config.schema import TrainConfig
from raymlp.errors import UsageError

#: framework -> module implementing the backend contract:
#:   fit(TrainRequest) -> FitOutcome
#:   load_for_inference(package_dir: Path, model_spec: dict) -> network   (the package's `model/` folder holds the weights)
#:   predict_scores(network, matrix: float32 [n, input_dim]) -> [n, classes] logits or log-probabilities,
#:                                                              or [n] / [n, 1] standardised regression values
#:   pip_requirements() -> list[str]   (pinned packages the MLflow pyfunc model needs)
BACKENDS: dict[str, str] = {
    "torch": "raymlp.train.torch_backend",
    "tensorflow": "raymlp.train.tensorflow_backend",
    "sklearn": "raymlp.train.sklearn_backend",
    "xgboost": "raymlp.train.xgboost_backend",
}


@dataclass
class TrainRequest:
    """What a backend needs to train one model.

    `datasets` are Ray Datasets "train" and "validation", each row a float feature vector
    (`features.FEATURES_COLUMN`, `input_dim` wide) and an encoded label (`LABEL_COLUMN`: class code
    int64, or the standardised float target). `model_spec` is `models.resolve_model_spec(...)`.
    Every backend reports per-epoch history rows {"epoch", "train_loss", val metrics of
    `metrics.score_metrics`}, honours `train.early_stopping` (`metrics.EarlyStopping`) and sends
    each epoch to `progress` with `progress.report_epoch` from one worker.
    """

    train: TrainConfig
    task: str
    input_dim: int
    output_dim: int
    datasets: dict[str, Any]
    storage_path: str
    run_name: str
    output_dir: Path
    target_scale: dict[str, float] | None = None
    model_spec: dict[str, Any] = field(default_factory=dict)
    progress: Any = None  # a Ray queue for `progress.report_epoch`, or None
    #: A checkpoint folder to start from when the run has none of its own (a PBT trial going on
    #: from a better trial's model, with its own optimizer settings): epoch-wise backends only.
    start_checkpoint: str | None = None
    #: The raymlp job it trains for: the `job` tag of its metrics.
    job: str = ""


@dataclass
class FitOutcome:
    """What a backend returns: the best weights (one file, copied into the package's `model/`) and
    the per-epoch history; `best_metrics` is the history row of `best_epoch`."""

    history: list[dict[str, float]]
    best_metrics: dict[str, float]
    best_epoch: int
    weights: Path
    checkpoint_path: str
    result_path: str
    extra: dict[str, Any] = field(default_factory=dict)


def ray_train_settings(request: TrainRequest, worker_env: dict[str, str] | None = None, *,
                       with_datasets: bool = True) -> dict[str, Any]:
    """The keyword arguments every Ray Train trainer here takes alike: scaling from
    `train.scaling`, checkpoints ranked and kept by `train.checkpoint`, `max_failures`, the run's
    name and storage (so a resumed run finds its checkpoints), and (`with_datasets`) the datasets,
    with the validation split not sharded (every worker computes the same metrics on all of it)."""
    import ray.train

    train, scaling = request.train, request.train.scaling
    datasets = {"datasets": request.datasets, "dataset_config": ray.train.DataConfig(datasets_to_split=["train"])}
    return {
        "scaling_config": ray.train.ScalingConfig(
            num_workers=tuple(scaling.num_workers) if isinstance(scaling.num_workers, list | tuple) else scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker=scaling.resources_per_worker,
            placement_strategy=scaling.placement_strategy,
        ),
        "run_config": ray.train.RunConfig(
            name=request.run_name,
            storage_path=request.storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=train.checkpoint.num_to_keep,
                checkpoint_score_attribute=train.checkpoint.metric,
                checkpoint_score_order=train.checkpoint.mode,
            ),
            failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            worker_runtime_env=worker_runtime_env(request, worker_env),
            callbacks=_tune_report_callbacks(),
        ),
        **(datasets if with_datasets else {}),
    }


def worker_runtime_env(request: TrainRequest, worker_env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The runtime_env of the training workers: `train.env` (NAME of envs/NAME.yaml, or inline), which
    Ray lays over the job's `env` (its pip/uv/container replace the job's for these workers, its
    env_vars are added), plus the backend's own `worker_env` variables (the environment's win)."""
    from raymlp.launch.envs import stage_runtime_env

    runtime_env = dict(stage_runtime_env(request.train.env) or {})
    if worker_env:
        runtime_env["env_vars"] = {**worker_env, **runtime_env.get("env_vars", {})}
    return runtime_env or None


def start_checkpoint(loop_config: dict[str, Any]) -> Any:
    """In a train loop with no checkpoint of its own run: the request's `start_checkpoint`, if any."""
    import ray.train

    folder = loop_config.get("start_checkpoint")
    return ray.train.Checkpoint.from_directory(folder) if folder else None


def _tune_report_callbacks() -> list[Any]:
    """Inside a Tune trial (a sweep's), Ray's callback that hands every `ray.train.report` (each
    epoch) to Tune, so its scheduler can stop the trial between epochs; else none."""
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    if not _in_tune_session():
        return []
    from ray.tune.integration.ray_train import TuneReportCallback

    return [TuneReportCallback()]


def backend(framework: str) -> Any:
    """The backend module of a framework, imported on first use."""
    if framework not in BACKENDS:
        raise UsageError(f"train.framework: no backend for '{framework}'; available: {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[framework])


def fit(request: TrainRequest) -> FitOutcome:
    """Train with the backend of the request's framework."""
    run: Callable[[TrainRequest], FitOutcome] = backend(request.train.framework).fit
    return run(request)
