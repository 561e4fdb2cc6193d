"""The driver side of the Ray Train backends (torch, TensorFlow, XGBoost), written once.

`run_trainer` builds a backend's Ray Train trainer with the settings every backend shares
(`ray_train_settings`), fits it, and turns a `TrainingFailedError` into raymlp's own error:
`root_cause` finds the exception line of the workers' tracebacks, and a worker's own
`WorkFailed` or `UsageError` (a custom builder's, say) is raised again with its message.
`best_checkpoint` is the checkpoint ranked best by `train.checkpoint`. Worker-side helpers that
every train loop uses (`start_checkpoint`, `quiet_per_report_logs`) live here too. Nothing here
imports a framework.
"""

from __future__ import annotations

import os
import re
from typing import Any

from raymlp.errors import RaymlpError, UsageError, WorkFailed

from .backend import TrainRequest

#: An exception line of a traceback: `module.path.Name: message`, the name ending in Error,
#: Exception or Failed (raymlp's WorkFailed), at the start of a line (frames are indented).
_EXCEPTION_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*)([A-Za-z_]\w*(?:Error|Exception|Failed)): (.+)$", re.MULTILINE)

#: raymlp errors a worker may raise for the user to read, raised again on the driver as themselves.
_WORKER_ERRORS: dict[str, type[RaymlpError]] = {"WorkFailed": WorkFailed, "UsageError": UsageError}


def root_cause(error: BaseException) -> str:
    """The last exception line of the workers' tracebacks in `error` (`XGBoostError: value -1 for
    Parameter max_depth ...`, without the module path), else its last line; at most 500 characters."""
    text = str(error).strip()
    found = _EXCEPTION_LINE.findall(text)
    if found:
        _, name, message = found[-1]
        return f"{name}: {message.strip()}"[:500]
    lines = [line for line in text.splitlines() if line.strip()][-1:] or [type(error).__name__]
    return lines[0][:500]


def training_failure(error: BaseException) -> RaymlpError:
    """What a failed `trainer.fit()` raises: the worker's own WorkFailed or UsageError (found as
    the last exception line, `raymlp.errors.WorkFailed: ...`) with its message, else
    WorkFailed("training failed: <root cause>")."""
    found = _EXCEPTION_LINE.findall(str(error).strip())
    if found:
        module, name, message = found[-1]
        if module == "raymlp.errors." and name in _WORKER_ERRORS:
            return _WORKER_ERRORS[name](message.strip())
    return WorkFailed(f"training failed: {root_cause(error)}")


def ray_train_settings(
    request: TrainRequest, worker_env: dict[str, str] | None = None, *, with_datasets: bool = True
) -> dict[str, Any]:
    """The keyword arguments every Ray Train trainer here takes alike: scaling from
    `train.scaling`, checkpoints ranked and kept by `train.checkpoint`, `max_failures`, the run's
    name and storage (so a resumed run finds its checkpoints), and (`with_datasets`) the datasets,
    with the validation split not sharded (every worker computes the same metrics on all of it)."""
    import ray.train

    train, scaling = request.train, request.train.scaling
    datasets = {"datasets": request.datasets, "dataset_config": ray.train.DataConfig(datasets_to_split=["train"])}
    return {
        "scaling_config": ray.train.ScalingConfig(
            # Train V2 takes (min, max) for elastic training; the stubs mypy reads know only int.
            num_workers=tuple(scaling.num_workers)  # type: ignore[arg-type]
            if isinstance(scaling.num_workers, list | tuple)
            else scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker=scaling.resources_per_worker,
            placement_strategy=scaling.placement_strategy,
        ),
        # Train V2's RunConfig; mypy reads the older ray.air one, which lacks logging_config and worker_runtime_env.
        "run_config": ray.train.RunConfig(  # type: ignore[call-arg]
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
    from raymlp.runtime.envs import stage_runtime_env

    runtime_env = dict(stage_runtime_env(request.train.env) or {})
    if worker_env:
        runtime_env["env_vars"] = {**worker_env, **runtime_env.get("env_vars", {})}
    return runtime_env or None


def _tune_report_callbacks() -> list[Any]:
    """Inside a Tune trial (a sweep's), Ray's callback that hands every `ray.train.report` (each
    epoch) to Tune, so its scheduler can stop the trial between epochs; else none."""
    from raymlp.ray_internals import in_tune_session

    if not in_tune_session():
        return []
    from ray.tune.integration.ray_train import TuneReportCallback

    return [TuneReportCallback()]


def epoch_loop_config(request: TrainRequest) -> dict[str, Any]:
    """The train-loop settings the epoch-wise neural backends (torch, TensorFlow) share; each adds its own."""
    from raymlp.metrics import training_job

    train = request.train
    return {
        "task": request.task,
        "input_dim": request.input_dim,
        "output_dim": request.output_dim,
        "optimizer": train.optimizer.model_dump(),
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "seed": train.seed,
        "target_std": (request.target_scale or {}).get("std", 1.0),
        "early_stopping": train.early_stopping.model_dump() if train.early_stopping else None,
        "progress": request.progress,
        "job": training_job(request),  # tags the epochs' Ray metrics
        "start_checkpoint": request.start_checkpoint,
    }


def run_trainer(
    trainer_class: type,
    train_loop: Any,
    loop_config: dict[str, Any],
    request: TrainRequest,
    *,
    worker_env: dict[str, str] | None = None,
    with_datasets: bool = True,
) -> Any:
    """Train: `trainer_class(train_loop, train_loop_config=loop_config, **ray_train_settings(...))`,
    fitted; a failure raised as `training_failure` says. Returns Ray Train's `Result`."""
    import ray.train

    from raymlp import settings

    # Read by the Train controller, which Ray starts with the driver's copy of this variable.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(settings.train_poll_interval_s()))
    trainer = trainer_class(
        train_loop,
        train_loop_config=loop_config,
        **ray_train_settings(request, worker_env, with_datasets=with_datasets),
    )
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as error:
        raise training_failure(error) from None


def best_checkpoint(result: Any, request: TrainRequest) -> Any:
    """The run's checkpoint ranked best by `train.checkpoint` (else its latest); WorkFailed when it has none."""
    checkpoint = request.train.checkpoint
    best = result.get_best_checkpoint(checkpoint.metric, checkpoint.mode) or result.checkpoint
    if best is None:
        raise WorkFailed("training finished without a checkpoint")
    return best


# --- in the workers ---------------------------------------------------------------------------------


def start_checkpoint(loop_config: dict[str, Any]) -> Any:
    """In a train loop with no checkpoint of its own run: the request's `start_checkpoint`, if any."""
    import ray.train

    folder = loop_config.get("start_checkpoint")
    return ray.train.Checkpoint.from_directory(folder) if folder else None


def quiet_per_report_logs() -> None:
    """Ray Train logs two INFO lines per report through a logger named by its file path, which
    its own LoggingConfig level does not reach; raise that logger to WARNING."""
    import logging

    from raymlp.ray_internals import train_report_logger_name

    try:
        name = train_report_logger_name()
    except ImportError:  # a Ray without that module has no such logger
        return
    logging.getLogger(name).setLevel(logging.WARNING)
