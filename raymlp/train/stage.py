"""The train stage: split, fit preprocessing on the train split, train on Ray Train, evaluate, track."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raymlp.context import StageContext
from raymlp.errors import UsageError, WorkFailed
from raymlp.frameworks import FRAMEWORKS
from raymlp.package import (
    describe_package,
    load_package,
    numeric_features_as_float,
    package_transforms,
    pip_requirements,
    rewrite_description,
    write_package,
)
from raymlp.package.features import feature_matrix
from raymlp.storage import RunFolder
from raymlp.storage import files as storage_files

from .backend import TrainRequest, fit
from .features import (
    FEATURES_COLUMN,
    LABEL_COLUMN,
    infer_task,
    label_classes,
)
from .models import resolve_model_spec
from .progress import TrainingProgress


@dataclass
class TrainedModel:
    """A trained, evaluated and tracked model."""

    package_dir: Path
    mlflow_run_id: str
    model_uri: str
    metrics: dict[str, float]
    history: list[dict[str, float]]
    dataset_ref: str
    dataset_digest: str
    framework: str
    best_epoch: int = 0


def _to_model_input(
    batch: pd.DataFrame, features: list[str], preprocessor: Any, encode: Any, columns: list[str]
) -> dict[str, np.ndarray]:
    transformed = preprocessor.transform_batch(batch[features]) if preprocessor is not None else batch[features]
    missing = [name for name in columns if name not in transformed.columns]
    if missing:
        raise WorkFailed(
            f"preprocessing made no column {', '.join(map(repr, missing))} for a batch of {len(batch)} rows, but did "
            "for the first rows of the train split; every batch must come out with the same columns"
        )
    return {FEATURES_COLUMN: feature_matrix(transformed, columns), LABEL_COLUMN: encode(batch)}


def _model_columns(preprocessor: Any, sample: pd.DataFrame) -> list[str]:
    """The columns the model sees, in order: what the chain makes of the first rows of the train split."""
    return list(preprocessor.transform_batch(sample).columns) if preprocessor is not None else list(sample.columns)


def evaluation_metrics(
    task: str,
    truth: pd.Series,
    predicted: pd.DataFrame,
    classes: list[Any] | None,
    prefix: str,
    target_scale: dict[str, float] | None = None,
) -> dict[str, float]:
    """Metrics of a package's predictions against the truth, named `<prefix>_<metric>`: the same
    definitions as the per-epoch validation metrics (`metrics.py`): RMSE and MAE in the label's own
    units, the loss in the standardised units the model was trained in (`target_scale`)."""
    from .metrics import classification_metrics, regression_metrics

    if len(truth) == 0:
        return {}
    if task == "classification":
        assert classes is not None, "a classifier's evaluation is given its classes"
        codes = {str(name): index for index, name in enumerate(classes)}
        probabilities = predicted[[f"probability_{name}" for name in classes]].to_numpy()
        return classification_metrics(np.array([codes[str(value)] for value in truth]), probabilities, prefix)
    scale = target_scale or {"mean": 0.0, "std": 1.0}
    truth_standardised, predicted_standardised = (
        (values - scale["mean"]) / scale["std"]
        for values in (pd.to_numeric(truth).to_numpy(dtype=float), predicted["prediction"].to_numpy(dtype=float))
    )
    return regression_metrics(truth_standardised, predicted_standardised, prefix, unit=scale["std"])


_BLOCK_BYTES = 256 << 20


def _train_blocks(train: Any, frame: pd.DataFrame) -> int:
    """How many equal blocks the train split is cut into: a multiple of the (largest) worker count, so
    `streaming_split(equal=True)` hands every worker whole blocks instead of cutting one in a remote
    task each epoch, and blocks of at most about 256 MiB."""
    workers = train.scaling.num_workers
    most = max(workers) if isinstance(workers, list | tuple) else workers
    per_worker = max(1, -(-int(frame.memory_usage(deep=False).sum()) // (most * _BLOCK_BYTES)))
    return min(most * per_worker, max(len(frame), 1))


def _model_input_dataset(frame: pd.DataFrame, to_model_input: Any, blocks: int) -> Any:
    """A materialised Ray Dataset of the model's input, made here from `frame` (the driver holds it
    already) as `blocks` blocks of equal rows: no Ray Data execution, no tasks."""
    import ray.data
    from ray.data.block import BlockAccessor

    bounds = np.linspace(0, len(frame), blocks + 1).astype(int)
    parts = [frame.iloc[start:end] for start, end in zip(bounds[:-1], bounds[1:])] or [frame]
    return ray.data.from_arrow([BlockAccessor.batch_to_block(to_model_input(part)) for part in parts])


@dataclass
class PreparedTraining:
    """A dataset version made ready for a model: its splits, the fitted preprocessing and how a frame
    of rows becomes the model's input (features matrix and encoded label)."""

    table: Any
    label: str
    features: list[str]
    feature_types: dict[str, str]
    task: str
    classes: list[Any] | None
    target_scale: dict[str, float] | None
    train_frame: pd.DataFrame
    validation_frame: pd.DataFrame
    test_frame: pd.DataFrame
    preprocessor: Any
    modules: Any
    model_columns: list[str]
    to_model_input: Any


def prepare_training(job: Any, dataset: Any, catalog: Any, reporter: Any) -> PreparedTraining:
    """Read the dataset version, split it, fit the preprocessing on the train split (the train stage's
    and a light sweep trial's data, made the same way)."""
    from raymlp.data.modules import resolve_steps
    from raymlp.data.preprocess import column_kind, fit_preprocessor
    from raymlp.data.split import split_frame
    from raymlp.data.versions import read_version_table

    data = job.data
    label = data.label
    table = read_version_table(dataset.path, dataset.manifest)
    kinds = {field.name: column_kind(field.type) for field in table.schema}
    if label not in kinds:
        raise UsageError(
            f"data.label: '{label}' is not a column of {dataset.name}@{dataset.version} (columns: {', '.join(kinds)})"
        )
    features = data.features or [name for name in kinds if name != label]
    unknown = [name for name in features if name not in kinds]
    if unknown:
        raise UsageError(f"data.features: not columns of {dataset.name}@{dataset.version}: {', '.join(unknown)}")
    feature_types = {name: kinds[name] for name in features}
    # The dtypes a package gives features when predicting, so every step sees the same values offline and online.
    frame = numeric_features_as_float(
        table.to_pandas(), [{"name": name, "type": kind} for name, kind in feature_types.items()]
    )
    unlabeled = int(frame[label].isna().sum())
    if unlabeled:
        reporter.info(f"    train  {unlabeled} rows without a label are left out")
        frame = frame[frame[label].notna()]
    task = infer_task(frame[label], job.train.task)
    classes = None
    if task == "classification":
        classes = label_classes(frame[label])
        if len(classes) < 2:
            raise WorkFailed(f"label '{label}' has {len(classes)} distinct value(s); classification needs at least 2")
        codes = {value: index for index, value in enumerate(classes)}
        encode = lambda batch: batch[label].map(codes).to_numpy(dtype=np.int64)  # noqa: E731
    train_frame, validation_frame, test_frame = split_frame(
        frame, data.split, frame[label] if task == "classification" else None
    )
    target_scale = None
    if task == "regression":
        # Trained on a standardised target (train-split statistics); metrics and predictions in original units.
        values = pd.to_numeric(train_frame[label]).to_numpy(dtype=np.float64)
        target_scale = {"mean": float(values.mean()), "std": float(values.std()) or 1.0}
        encode = lambda batch: (  # noqa: E731
            (pd.to_numeric(batch[label]).to_numpy(dtype=np.float64) - target_scale["mean"]) / target_scale["std"]
        ).astype(np.float32)
    modules = resolve_steps(job.preprocess, catalog)  # module sources, from the catalog, once
    # Fitted on the train split only; function steps run on the same frames they will see when predicting.
    preprocessor = fit_preprocessor(job.preprocess, train_frame[features], feature_types, modules)
    model_columns = _model_columns(preprocessor, train_frame.head(8)[features])
    to_model_input = lambda part: _to_model_input(part, features, preprocessor, encode, model_columns)  # noqa: E731
    return PreparedTraining(
        table=table,
        label=label,
        features=features,
        feature_types=feature_types,
        task=task,
        classes=classes,
        target_scale=target_scale,
        train_frame=train_frame,
        validation_frame=validation_frame,
        test_frame=test_frame,
        preprocessor=preprocessor,
        modules=modules,
        model_columns=model_columns,
        to_model_input=to_model_input,
    )


def train_stage(context: StageContext, dataset: Any) -> TrainedModel:
    """Train the job's model on a published dataset version (`PublishedVersion` or catalog record)."""

    from raymlp.tracking import Tracker

    job = context.config
    train = job.train
    _check_storage_reaches_every_node(context)
    _start_ray_data_actors()
    prepared = prepare_training(job, dataset, context.catalog, context.reporter)
    label, features, feature_types, task, classes = (
        prepared.label,
        prepared.features,
        prepared.feature_types,
        prepared.task,
        prepared.classes,
    )
    train_frame, validation_frame, test_frame = prepared.train_frame, prepared.validation_frame, prepared.test_frame
    preprocessor, modules, model_columns = prepared.preprocessor, prepared.modules, prepared.model_columns
    target_scale, to_model_input, table = prepared.target_scale, prepared.to_model_input, prepared.table
    sample = to_model_input(train_frame.head(2))
    datasets = {
        "train": _model_input_dataset(train_frame, to_model_input, _train_blocks(train, train_frame)),
        "validation": _model_input_dataset(validation_frame, to_model_input, 1),
    }
    if modules:
        shown = ", ".join(f"{step.ref} (sha256 {step.sha256[:12]})" for step in package_transforms(preprocessor))
        context.reporter.stage("preprocess", f"module steps {shown}")
    run_files = context.storage.run(context.run_id)
    run_files.create()
    work_folder = run_files.work_folder()
    tracker = Tracker(context.storage.tracking_uri, context.storage.root)
    dataset_ref = f"{dataset.name}@{dataset.version}"
    digest = dataset.manifest["content_digest"]
    if context.resuming:  # the same MLflow run goes on (its params are the same settings)
        mlflow_run = training_started(context)["mlflow_run_id"]
        context.reporter.stage(
            "train", f"resuming run {context.run_id} (MLflow run {mlflow_run}) from its latest checkpoint"
        )
    else:
        mlflow_run = tracker.start_run(
            job.name,
            run_name=f"{job.name}-{context.run_id[:8]}",
            tags={
                "raymlp.run_id": context.run_id,
                "raymlp.dataset": dataset_ref,
                "raymlp.dataset_digest": digest,
                "raymlp.job_sha256": context.job.sha256,
                "raymlp.job_path": str(context.job.path),
                **_sweep_tags(context),
            },
        )
        storage_files.write_json(
            run_files.training_started,
            {"dataset": dataset.name, "version": dataset.version, "mlflow_run_id": mlflow_run},
        )
    try:
        tracker.log_params(mlflow_run, context.job.public_dict())
        tracker.log_dataset_input(
            mlflow_run,
            dataset.name,
            dataset.version,
            digest,
            str(dataset.path),
            schema=dataset.manifest["schema"],
            rows=table.num_rows,
        )
        input_dim = int(sample[FEATURES_COLUMN].shape[1])
        output_dim = len(classes) if classes else 1
        model_spec = resolve_model_spec(train.model.model_dump(), input_dim, Path(context.job.path).parent)
        context.reporter.stage(
            "train",
            f"{train.framework} {train.model.type} on {dataset_ref}: {len(train_frame)} train / "
            f"{len(validation_frame)} validation / {len(test_frame)} test rows, {_how_it_runs(train)}",
        )
        with TrainingProgress(
            context.reporter, name=f"{job.name}/train: progress of run {context.run_id[:8]}"
        ) as progress:
            outcome = fit(
                TrainRequest(
                    train=train,
                    task=task,
                    input_dim=input_dim,
                    output_dim=output_dim,
                    datasets=datasets,
                    target_scale=target_scale,
                    storage_path=str(run_files.train_checkpoints()),
                    run_name=run_files.short_name(job.name),
                    output_dir=work_folder,
                    model_spec=model_spec,
                    progress=progress.queue,
                    start_checkpoint=(context.sweep_trial or {}).get("start_checkpoint"),
                    job=job.name,
                )
            )
        tracker.log_metrics(mlflow_run, outcome.history)
        description = describe_package(
            framework=train.framework,
            task=task,
            label=label,
            classes=classes,
            feature_types={name: feature_types[name] for name in features},
            model_spec=model_spec,
            input_dim=input_dim,
            output_dim=output_dim,
            model_columns=model_columns,
            target_scale=target_scale,
            steps=job.preprocess,
            preprocessor=preprocessor,
            lineage={
                "dataset": {"name": dataset.name, "version": dataset.version, "digest": digest},
                # How the rows were split, so monitoring can rebuild the training split as its reference.
                "split": job.data.split.model_dump(),
                "job": {"name": job.name, "path": str(context.job.path), "sha256": context.job.sha256},
                "run_id": context.run_id,
                "mlflow_run_id": mlflow_run,
                "best_epoch": outcome.best_epoch,
                "trained_at": datetime.now(UTC).isoformat(),
            },
        )
        local_package = work_folder / RunFolder.PACKAGE
        if context.resuming and local_package.exists():  # written before the driver died, never registered
            shutil.rmtree(local_package)
        package_dir = write_package(
            local_package,
            description=description,
            preprocessor=preprocessor,
            weights=outcome.weights,
            builder_source=model_spec.get("builder_source"),
        )
        package = load_package(package_dir)
        metrics = {
            key: value
            for key, value in outcome.best_metrics.items()
            if key not in ("epoch", "train_seconds", "attempt", "workers")
        }
        metrics.update(
            evaluation_metrics(task, test_frame[label], package.predict(test_frame), classes, "test", target_scale)
        )
        description["metrics"] = metrics
        rewrite_description(package_dir, description)
        tracker.log_metrics(
            mlflow_run,
            [
                {
                    **{key: value for key, value in metrics.items() if key.startswith("test_")},
                    "epoch": outcome.best_epoch,
                }
            ],
        )
        if context.storage.remote:  # the run's folder in the bucket keeps the package too
            storage_files.upload_folder(package_dir, run_files.package)
        model_uri = tracker.log_package(mlflow_run, package_dir, pip_requirements(train.framework, preprocessor))
        tracker.finish(mlflow_run)
    except BaseException:
        tracker.finish(mlflow_run, status="FAILED")
        raise
    shown = ", ".join(f"{key} {value:.4f}" for key, value in sorted(metrics.items()))
    context.reporter.stage("evaluate", f"{shown} (best epoch {outcome.best_epoch}); MLflow run {mlflow_run}")
    return TrainedModel(
        package_dir=package_dir,
        mlflow_run_id=mlflow_run,
        model_uri=model_uri,
        metrics=metrics,
        history=outcome.history,
        dataset_ref=dataset_ref,
        dataset_digest=digest,
        framework=train.framework,
        best_epoch=outcome.best_epoch,
    )


def _sweep_tags(context: StageContext) -> dict[str, str]:
    """A trial's run is an MLflow child run of its sweep's (`mlflow.parentRunId`, as MLflow nests runs)."""
    trial = context.sweep_trial
    if trial is None:
        return {}
    tags = {
        "mlflow.parentRunId": trial["mlflow_run"],
        "raymlp.sweep_run_id": trial["run_id"],
        "raymlp.trial_id": trial["trial"],
    }
    if trial.get("refit"):
        tags["raymlp.refit_of_trial"] = trial["trial"]
    if trial.get("start_checkpoint"):  # PBT: this trial goes on from a better trial's checkpoint
        tags["raymlp.started_from_checkpoint"] = trial["start_checkpoint"]
    return tags


def _start_ray_data_actors() -> None:
    """Ask for the two actors Ray Data starts on a cluster's first execution (its stats and
    autoscaling coordinator; both get-or-create, detached, non-blocking) now, so their processes start
    on the other cores while this process prepares the data. Otherwise the trainer's controller and
    the train split's coordinator each wait for one, in turn, before the first step. Best effort:
    these are Ray Data internals, and without them Ray Data starts the actors itself as before."""
    from raymlp.ray_internals import start_ray_data_actors

    try:
        start_ray_data_actors()
    except Exception:  # pragma: no cover - moved or renamed in another Ray release
        pass


def _check_storage_reaches_every_node(context: StageContext) -> None:
    """Checkpoints are written by workers on any node and read back after a node is lost: on a
    cluster of several nodes the storage root must be one every node sees."""
    import ray

    from raymlp import settings

    root = context.storage.root
    if "://" in str(root) or context.config.storage.shared or settings.storage_shared():
        return
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if len(nodes) > 1:
        raise UsageError(
            f"storage.root: '{root}' is a folder on this machine, but the Ray cluster has {len(nodes)} nodes; workers on "
            "other nodes could not write or restore checkpoints there. Put the root on storage mounted at the same path "
            "on every node (NFS) and set storage.shared: true"
        )


def training_started(context: StageContext) -> dict[str, Any]:
    """The dataset version and MLflow run an earlier training of this run started with."""
    return storage_files.read_json(context.storage.run(context.run_id).training_started)


def _how_it_runs(train: Any) -> str:
    """Workers and passes, in the framework's own terms."""
    workers = train.scaling.num_workers
    shown = f"{workers[0]}-{workers[1]} workers (elastic)" if isinstance(workers, tuple) else f"{workers} worker(s)"
    row = FRAMEWORKS[train.framework]
    if not row.epoch_wise:  # one fit in a Ray task (sklearn)
        return "one Ray task" + (f", {train.cv_folds} cross-validation fold tasks" if train.cv_folds else "")
    return f"{shown}, up to {train.epochs} {row.passes}"


@dataclass
class Registered:
    """A registry version, and whether the alias moved to it."""

    name: str
    version: int
    alias: str | None
    alias_moved: bool
    gate_failures: list[str]


def _rules(require: dict[str, str]) -> str:
    return ", ".join(f"{metric} {rule.strip()}" for metric, rule in require.items())


def _trigger_of_this_run() -> tuple[str, dict[str, Any]]:
    """What started this run: the scheduler's firing (its environment says which), else a person."""
    import getpass
    import os

    from raymlp import settings

    firing = os.environ.get(settings.FIRING_ENV)
    if firing:
        trigger = os.environ.get(settings.FIRING_TRIGGER_ENV, "")
        reason = os.environ.get(settings.FIRING_REASON_ENV, "")
        return f"firing {firing} ({trigger}): {reason}", {"firing": int(firing), "trigger": trigger, "reason": reason}
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment
        user = "unknown"
    return f"run by hand ({user})", {"user": user}


def _tell_the_firing(context: StageContext, outcome: str) -> None:
    """A scheduled run writes what became of its model into its firing, so the schedule's history shows it."""
    import os

    from raymlp import settings

    firing = os.environ.get(settings.FIRING_ENV)
    if firing and firing.isdigit():
        try:
            context.catalog.update_firing(int(firing), ["pending", "running"], details={"outcome": outcome})
        except Exception:  # the schedule's catalog is another one: the model's own steps still say it
            pass


def _against_champion(context: StageContext, tracker: Any, trained: TrainedModel, version: int) -> Any:
    """The candidate and the alias's holder scored on this run's test split (`train.champion`)."""
    from raymlp.data.split import split_frame
    from raymlp.data.versions import read_version_table
    from raymlp.errors import UsageError
    from raymlp.package import load_package
    from raymlp.tracking import ModelRef

    from .champion import ChampionComparison, compare_with_champion

    register = context.config.register
    gate = register.beat_champion
    try:
        champion_dir, champion_version = tracker.package_for(
            ModelRef(register.model, alias=register.alias), context.storage.model_cache()
        )
    except UsageError:
        return ChampionComparison(True, f"no version holds '{register.alias}' yet", {"champion": None})
    if int(champion_version) == int(version):
        return ChampionComparison(True, "the candidate already holds the alias", {"champion_version": version})
    name, _, number = trained.dataset_ref.partition("@")
    record = context.catalog.get_dataset_version(name, int(number))
    frame = read_version_table(record.path, record.manifest).to_pandas()
    candidate = load_package(trained.package_dir)
    label = candidate.description["label"]
    frame = frame[frame[label].notna()]
    classification = candidate.description["task"] == "classification"
    _, _, test = split_frame(frame, context.config.data.split, frame[label] if classification else None)
    if not len(test):
        return ChampionComparison(False, "the job's split holds no test rows to compare on", {"rows": 0})
    return compare_with_champion(
        candidate, load_package(champion_dir), test, gate.metric, gate.max_drop, int(champion_version)
    )


def register_stage(context: StageContext, trained: TrainedModel) -> Registered:
    """Register the model version; move the alias only when `register.require` holds and, with
    `register.beat_champion`, the candidate is not worse than the alias's holder on the same test rows. Each step
    is recorded for `raymlp models why`."""
    from raymlp.tracking import Tracker, check_requirements

    register = context.config.register
    tracker = Tracker(context.storage.tracking_uri, context.storage.root)
    version = tracker.register(trained.model_uri, register.model, trained.mlflow_run_id)
    name, _, number = trained.dataset_ref.partition("@")
    context.catalog.record_model_version(
        model_name=register.model,
        model_version=version,
        run_id=context.run_id,
        mlflow_run_id=trained.mlflow_run_id,
        dataset_name=name,
        dataset_version=int(number),
        dataset_digest=trained.dataset_digest,
        package_uri=str(trained.package_dir),
        framework=trained.framework,
        metrics=trained.metrics,
    )
    step = partial(context.catalog.record_model_step, register.model, version)
    step("trigger", "info", *_trigger_of_this_run())
    failures = check_requirements(register.require, trained.metrics)
    if register.require:
        step(
            "gate",
            "failed" if failures else "passed",
            ("require: " + "; ".join(failures)) if failures else f"require: {_rules(register.require)} hold",
            {"require": register.require, "metrics": trained.metrics},
        )
    if register.alias and not failures and register.beat_champion is not None:
        comparison = _against_champion(context, tracker, trained, version)
        step("gate", "passed" if comparison.passed else "failed", f"champion: {comparison.summary}", comparison.details)
        if not comparison.passed:
            failures = [f"champion: {comparison.summary}"]
    moved = bool(register.alias) and not failures
    if moved:
        previous = tracker.alias_version(register.model, register.alias)
        tracker.set_alias(register.model, register.alias, version, by="register")
        held = f" (from version {previous})" if previous is not None else ""
        step("promotion", "promoted", f"alias '{register.alias}' -> version {version}{held}", {"previous": previous})
    elif register.alias:
        step(
            "promotion",
            "stopped",
            f"alias '{register.alias}' not moved: " + "; ".join(failures),
            {"previous": tracker.alias_version(register.model, register.alias)},
        )
    if register.alias and failures:
        note = f"alias '{register.alias}' not moved: " + "; ".join(failures)
    elif moved:
        note = f"alias '{register.alias}' -> version {version}"
    else:
        note = "no alias"
    _tell_the_firing(context, f"{register.model}:{version}: {note}")
    context.reporter.stage("register", f"{register.model} version {version}; {note}")
    return Registered(register.model, version, register.alias, moved, failures)
