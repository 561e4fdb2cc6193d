"""Cross-field rules, each a small registered function run on the fully defaulted job."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from raymlp.frameworks import FRAMEWORK_NAMES, FRAMEWORKS, names_where, said

from .schema import MODULE_STEP_TYPES, CNNModel, CustomModel, EstimatorModel, JobConfig, MLPModel, XGBoostModel
from .yamlfile import annotations_at

Finding = tuple[tuple[str | int, ...], str]
Check = Callable[[JobConfig], Iterator[Finding]]
CHECKS: list[Check] = []

#: Frameworks with a training backend in this version (the table `raymlp.frameworks.FRAMEWORKS`).
AVAILABLE_FRAMEWORKS = FRAMEWORK_NAMES

#: The model kind (`raymlp.frameworks.ModelKind`) of each model section, and how a message names it.
_MODEL_KINDS = {
    MLPModel: "mlp",
    CNNModel: "cnn",
    CustomModel: "custom",
    XGBoostModel: "xgboost",
    EstimatorModel: "estimator",
}
_KIND_SAID = {"estimator": "an estimator class path such as sklearn.ensemble.RandomForestClassifier"}


def check(function: Check) -> Check:
    """Register a cross-field rule."""
    CHECKS.append(function)
    return function


def run_checks(config: JobConfig, job_path: Path | None = None) -> list[Finding]:
    """Every finding of every rule, then those about the runtime environments the job names (looked
    up in envs/ of the working directory, else beside `job_path`: `raymlp.config.envs.env_roots`)."""
    findings = [finding for rule in CHECKS for finding in rule(config)]
    return findings + list(_environments_exist_and_combine(config, job_path))


def reported_metrics(task: str, cross_validated: bool = False) -> set[str]:
    """Metric names the train stage reports for a task ('auto' means either); with
    `cross_validated` (sklearn's cv_folds), also cv_<metric>_mean and cv_<metric>_std."""
    per_task = {
        "classification": ("loss", "accuracy", "f1", "roc_auc"),
        "regression": ("loss", "rmse", "mae", "r2"),
    }
    names = {"train_loss"}
    for kind, metrics in per_task.items():
        if task in (kind, "auto"):
            names |= {f"{split}_{metric}" for split in ("val", "test") for metric in metrics}
            if cross_validated:
                names |= {f"cv_{metric}_{summary}" for metric in metrics for summary in ("mean", "std")}
    return names


def _parse_path(text: str) -> tuple[str | int, ...]:
    return tuple(int(part) if part.isdigit() else part for part in text.split("."))


# --- the rules ------------------------------------------------------------------------------------


@check
def _label_and_features_are_columns(job: JobConfig) -> Iterator[Finding]:
    data = job.data
    columns = list(data.schema_.columns) if data.schema_ else None
    if data.label and columns is not None and data.label not in columns:
        yield ("data", "label"), f"'{data.label}' is not a column of data.schema (columns: {', '.join(columns)})"
    for index, feature in enumerate(data.features or []):
        if feature == data.label:
            yield ("data", "features", index), f"'{feature}' is the label; it cannot also be a feature"
        elif columns is not None and feature not in columns:
            yield (
                ("data", "features", index),
                f"'{feature}' is not a column of data.schema (columns: {', '.join(columns)})",
            )
    if data.split.stratify and not data.label:
        yield ("data", "split", "stratify"), "stratify needs data.label"


@check
def _preprocess_columns_exist(job: JobConfig) -> Iterator[Finding]:
    known = list(job.data.features or (job.data.schema_.columns if job.data.schema_ else []))
    for step_index, step in enumerate(job.preprocess):
        if step.type in MODULE_STEP_TYPES:
            # A function step may add, rename or drop columns: later steps' columns are known only
            # when it runs (train reports a missing one then).
            return
        for column_index, column in enumerate(getattr(step, "columns", None) or []):
            where = ("preprocess", step_index, "columns", column_index)
            if column == job.data.label:
                yield where, f"'{column}' is the label; preprocessing transforms features only"
            elif known and column not in known:
                yield where, f"'{column}' is not a feature column (features: {', '.join(known)})"


@check
def _train_is_possible(job: JobConfig) -> Iterator[Finding]:
    train = job.train
    if train is None:
        return
    if not job.data.label:
        yield ("data", "label"), "training needs a label column"
    if train.framework not in AVAILABLE_FRAMEWORKS:
        yield (
            ("train", "framework"),
            f"'{train.framework}' has no training backend in this version of raymlp; available: "
            + ", ".join(AVAILABLE_FRAMEWORKS),
        )
    row = FRAMEWORKS.get(train.framework)
    if row is not None and _MODEL_KINDS.get(type(train.model)) not in row.models:
        yield (
            ("train", "model", "type"),
            f"'{train.model.type}' is not a model for {train.framework}; use "
            + " or ".join(_KIND_SAID.get(kind, kind) for kind in row.models),
        )
    workers = train.scaling.num_workers
    if isinstance(workers, tuple) and workers[0] > workers[1]:
        yield ("train", "scaling", "num_workers"), f"[min, max] needs min <= max, got {list(workers)}"
    if isinstance(workers, tuple) and train.framework not in names_where(epoch_wise=True):
        yield (
            ("train", "scaling", "num_workers"),
            f"elastic [min, max] workers need a Ray Train backend, not {train.framework}",
        )
    for owner in FRAMEWORKS.values():  # settings only one framework reads, set for another
        for option, what in owner.own_options:
            if owner.name != train.framework and getattr(train, option) != type(train).model_fields[option].default:
                yield ("train", option), f"{what} a {owner.name} option"
    if job.data.split.validation == 0:
        yield (
            ("data", "split", "validation"),
            "training needs a validation split (checkpoints are ranked on it); give a fraction > 0",
        )
    metrics = reported_metrics(train.task, train.cv_folds is not None)
    if train.checkpoint.metric not in metrics:
        yield ("train", "checkpoint", "metric"), _unknown_metric(train.checkpoint.metric, metrics)
    watched = {name for name in metrics if name.startswith(("val_", "train_"))}
    if train.early_stopping is not None and train.early_stopping.metric not in watched:
        yield ("train", "early_stopping", "metric"), _unknown_metric(train.early_stopping.metric, watched)


@check
def _tune_is_well_formed(job: JobConfig) -> Iterator[Finding]:
    tune = job.tune
    if tune is None:
        return
    if job.train is None:
        yield ("tune",), "a sweep runs the train stage; add a train section"
        return
    metrics = reported_metrics(job.train.task, job.train.cv_folds is not None)
    if tune.metric not in metrics:
        yield ("tune", "metric"), _unknown_metric(tune.metric, metrics)
    for key, dimension in tune.space.items():
        path = _parse_path(key)
        if path[0] in ("tune", "version", "name", "storage") or not annotations_at(path):
            yield ("tune", "space", key), f"'{key}' is not a setting of the job file"
        elif tuple(path[:2]) == ("data", "dataset"):
            yield (
                ("tune", "space", key),
                "every trial of a sweep trains on the one dataset version it started with; search other settings",
            )
        elif dimension.grid is not None and tune.search in ("optuna", "hyperopt"):
            yield ("tune", "space", key), f"grid needs search: grid or random ({tune.search} samples; use choice)"
    light = names_where(light_trials=True)
    if tune.trials == "light" and job.train.framework not in light:
        yield (
            ("tune", "trials"),
            (
                f"light trials fit in the trial's own process, which only {said(light)} does "
                f"({job.train.framework} "
                "trains on Ray Train); use full or auto"
            ),
        )
    if tune.scheduler.type == "pbt":
        yield from _pbt_fits(job)


def _pbt_fits(job: JobConfig) -> Iterator[Finding]:
    """PBT hands a trial a better trial's checkpoint and new optimizer settings: it needs a framework
    that trains in epochs from checkpoints, Tune's own sampling, and settings it may change mid-run."""
    from .search import pbt_mutable

    tune = job.tune
    assert tune is not None and job.train is not None  # _tune_is_well_formed calls this with both
    pbt = names_where(pbt=True)
    if job.train.framework not in pbt:
        yield (
            ("tune", "scheduler", "type"),
            (
                f"pbt continues trials from other trials' checkpoints, which {said(pbt)} "
                f"training does; {job.train.framework} does not (use asha, median or fifo)"
            ),
        )
    if tune.search != "random":
        yield ("tune", "search"), f"pbt samples the first settings itself; use search: random (not {tune.search})"
    for key, dimension in tune.space.items():
        if dimension.grid is not None:
            yield ("tune", "space", key), "pbt changes settings between epochs; use choice, not grid"
        elif key == "train.epochs":
            yield ("tune", "space", key), "pbt runs every trial for the same epochs; set train.epochs, do not search it"
    if not any(pbt_mutable(key) for key in tune.space):
        yield (
            ("tune", "space"),
            (
                "pbt changes train.optimizer.* and train.batch_size between epochs (a model's shape "
                "cannot change mid-run); the space searches none of them"
            ),
        )


@check
def _register_needs_a_model(job: JobConfig) -> Iterator[Finding]:
    if job.register is None:
        return
    if job.train is None:
        yield ("register",), "registering needs a model; add a train section"
        return
    metrics = reported_metrics(job.train.task, job.train.cv_folds is not None)
    for metric in job.register.require:
        if metric not in metrics:
            yield ("register", "require", metric), _unknown_metric(metric, metrics)


@check
def _predict_and_serve_need_a_model(job: JobConfig) -> Iterator[Finding]:
    for stage in ("predict", "serve"):
        if getattr(job, stage) is not None and job.train is None:
            yield (
                (stage,),
                f"{stage} uses the model this job trains; add a train section (or use `raymlp {stage} --model`)",
            )


@check
def _triggers_fit_the_job(job: JobConfig) -> Iterator[Finding]:
    if job.schedule is None:
        return
    source = job.data.source
    columns = list(job.data.schema_.columns) if job.data.schema_ else None
    for index, trigger in enumerate(job.schedule.triggers):
        where = ("schedule", "triggers", index)
        if trigger.new_files is not None:
            if trigger.new_files.path is None and source.path is None:
                yield (
                    (*where, "new_files", "path"),
                    f"data.source is '{source.format}', which has no files to watch; name them here",
                )
            if job.data.collect is None or job.data.collect.mode != "append":
                yield (
                    (*where, "new_files"),
                    "new files are collected by appending to a table: the job needs data.collect with mode: append",
                )
        if trigger.new_rows is not None:
            if source.sql is None or source.sql.table is None:
                yield (
                    (*where, "new_rows"),
                    "new rows are read past a watermark of a table: the job needs data.source.sql.table",
                )
            elif columns is not None and trigger.new_rows.column not in columns:
                yield (
                    (*where, "new_rows", "column"),
                    f"'{trigger.new_rows.column}' is not a column of data.schema (columns: {', '.join(columns)})",
                )
        if trigger.monitor is not None:
            watched = (trigger.monitor.model or "").split("@")[0]
            retrained = job.register.model if job.register else None
            if retrained is None:
                yield (
                    (*where, "monitor"),
                    "a monitor trigger retrains the model this job registers; add a register section",
                )
            elif watched and watched != retrained:
                yield (
                    (*where, "monitor", "model"),
                    f"'{watched}' is not the model this job trains and registers ('{retrained}'); "
                    "a monitor trigger watches the model its job retrains",
                )
    for index, override in enumerate(job.schedule.overrides):
        if "=" not in override or not override.split("=", 1)[0].strip():
            yield ("schedule", "overrides", index), f"'{override}' is not KEY=VALUE (as `raymlp run --set` takes)"


def _unknown_metric(name: str, metrics: set[str]) -> str:
    return f"'{name}' is not a metric the trainer reports; reported: {', '.join(sorted(metrics))}"


#: Job-file paths of the `env` settings: the job's, then each stage's that Ray lays over it.
ENV_PATHS: tuple[tuple[str, ...], ...] = (("env",), ("train", "env"), ("predict", "env"), ("serve", "env"))


def _environments_exist_and_combine(job: JobConfig, job_path: Path | None) -> Iterator[Finding]:
    """Every named environment is a valid envs/NAME.yaml; a stage's environment can be laid over the
    job's the way Ray merges them (per key: the stage's pip/uv/image_uri replace the job's, env_vars add up)."""
    from .envs import EnvLookupError, env_roots, resolve_env

    roots = env_roots(job_path)
    resolved: dict[tuple[str, ...], dict[str, Any] | None] = {}
    for path in ENV_PATHS:
        section = job if len(path) == 1 else getattr(job, path[0])
        value = getattr(section, "env", None) if section is not None else None
        if value is None:
            continue
        if value == "default" and len(path) > 1 and job.env != "default":
            yield (
                path,
                (
                    "`default` means the cluster's own environment, which a stage cannot return to: Ray lays a "
                    "stage's environment over the job's `env`. Remove it to run in the job's environment"
                ),
            )
            continue
        try:
            resolved[path] = resolve_env(value, roots)
        except EnvLookupError as error:
            yield path, str(error)
    train, tune = job.train, job.tune
    if (
        train is not None
        and tune is not None
        and resolved.get(("train", "env")) is not None
        and (tune.trials == "light" or (tune.trials == "auto" and train.framework in names_where(light_trials=True)))
    ):
        yield (
            ("train", "env"),
            (
                "light tune trials fit inside Ray Tune's trial processes, which run in the job's `env` "
                "(Tune gives trials no environment of their own): set tune.trials: full, or move this "
                "environment to the job's `env`"
            ),
        )
    base = resolved.get(("env",)) or {}
    for path, stage in resolved.items():
        if len(path) == 1 or not stage:
            continue
        merged = {**base, **stage}
        installers = [key for key in ("pip", "uv") if key in merged]
        if len(installers) > 1:
            yield (
                path,
                (
                    f"this environment installs with {'uv' if 'uv' in stage else 'pip'} and the job's `env` with "
                    f"{'pip' if 'uv' in stage else 'uv'}: Ray merges a stage's environment into the job's key by key, so "
                    "these workers would get both, and Ray supports one. Use the same installer in both"
                ),
            )
        elif "image_uri" in merged and installers:
            yield (
                path,
                (
                    "a container environment and a pip/uv one cannot be laid over each other (Ray merges them key by key, "
                    "and Ray 2.60's image_uri goes with env_vars only): give the job's `env` and this stage's the same kind"
                ),
            )
