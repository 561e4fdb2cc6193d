"""Run a job: order its stages, get Ray only when a stage needs it, record the run in the catalog."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raymlp.config import LoadedJob, load_job
from raymlp.context import Reporter, StageContext
from raymlp.errors import UsageError
from raymlp.storage import files as storage_files
from raymlp.storage import resolve_storage

STAGES = ("collect", "convert", "train", "tune", "register", "predict", "serve")
_NEEDS_RAY = {"train", "tune", "predict", "serve"}
_READS_ON_A_CLUSTER = {"collect", "convert"}


@dataclass
class RunSummary:
    """What a run made, for the closing table and for `--json`."""

    run_id: str
    job: str
    stages: dict[str, float] = field(default_factory=dict)
    ray_startup_seconds: float | None = None
    ray_address: str | None = None
    collected_rows: int | None = None  # rows loaded into the data.collect table
    rejected_rows: int | None = None  # malformed records the collect kept in the table's __rejects table
    dataset: str | None = None
    dataset_rows: int | None = None
    dataset_path: str | None = None  # the version's folder, or its prefix in a bucket
    dataset_reused: bool | None = None  # convert found the latest version's rows again and published nothing
    quarantined_rows: int | None = None
    content_digest: str | None = None
    mlflow_run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    model_version: int | None = None
    alias: str | None = None
    alias_moved: bool | None = None
    predictions: str | None = None
    predicted_rows: int | None = None
    endpoint: str | None = None
    sample_prediction: Any = None
    model_uri: str | None = None
    package_dir: str | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    framework: str | None = None
    best_trial: dict[str, Any] | None = None
    trials: int | None = None
    total_seconds: float = 0.0


def _selected_stages(loaded: LoadedJob, only: list[str] | None) -> list[str]:
    stages = loaded.config.stages()
    if only:
        unknown = [name for name in only if name not in STAGES]
        if unknown:
            raise UsageError(f"--only: unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
        absent = [name for name in only if name not in stages]
        if absent:
            raise UsageError(f"--only: the job has no {', '.join(absent)} stage (its stages: {', '.join(stages)})")
        stages = [name for name in stages if name in only]
    return stages


def _runtime_env(loaded: LoadedJob) -> dict[str, Any]:
    """`ray_runtime`'s arguments for the job's `env` (`default`: none; NAME of envs/NAME.yaml; inline):
    the runtime_env, and how messages name it. Inside a submitted Ray job `ray_runtime` gives `ray.init`
    only what the submission's runtime_env does not already hold (`raymlp.runtime.envs`)."""
    from raymlp.config.envs import job_runtime_env

    env = loaded.config.env
    described = f"the job file's env ({env})" if isinstance(env, str) else "the job file's inline env"
    return {"runtime_env": job_runtime_env(loaded), "env_described": described}


def run_job(
    job: LoadedJob | str | os.PathLike[str],
    *,
    overrides: list[str] | None = None,
    only: list[str] | None = None,
    address: str | None = None,
    reporter: Reporter | None = None,
    on_serving: Any = None,
    resume: str | None = None,
    sweep_trial: dict[str, str] | None = None,
    retry_errored: bool = False,
) -> RunSummary:
    """Run every stage of a job (or those in `only`) and return what was made.

    `on_serving(summary)` is called while the endpoint is still up, before an embedded Ray stops.
    `resume` is the id of an earlier run of the same job whose driver died (or that failed): its
    training continues from its latest checkpoint, on the same dataset version and MLflow run; its
    sweep continues from Ray Tune's saved state (`retry_errored`: errored trials run again).
    """
    from raymlp import settings
    from raymlp.catalog import Catalog
    from raymlp.runtime import ray_runtime

    if isinstance(job, LoadedJob):  # overrides apply on top of those it was loaded with
        loaded = load_job(job.path, [*job.overrides, *overrides]) if overrides else job
    else:
        loaded = load_job(job, overrides)
    stages = _selected_stages(loaded, only)
    if sweep_trial is None:  # a sweep's trials run what its driver checked
        from raymlp.services.inputs import check_inputs

        findings = check_inputs(loaded, stages)  # missing files, columns, imports: exit 2 before anything starts
        if findings:
            raise loaded.config_error(findings)
    reporter = reporter or Reporter()
    storage = resolve_storage(loaded.config.storage)
    started = time.perf_counter()
    with Catalog(storage.catalog_url) as catalog:
        if "train" in stages:
            from raymlp.data.modules import check_job_refs

            check_job_refs(loaded, catalog)  # unknown module refs are config errors (exit 2), before any run
        if resume is not None:
            run = _reopen_for_resume(catalog, loaded, resume, stages, storage, address)
        else:
            run = catalog.start_run(
                job_name=loaded.config.name,
                job_path=str(loaded.path),
                job_sha256=loaded.sha256,
                config=loaded.public_dict(),
                stages=stages,
            )
        summary = RunSummary(run_id=run.id, job=loaded.config.name)
        context = StageContext(
            job=loaded,
            storage=storage,
            catalog=catalog,
            run_id=run.id,
            reporter=reporter,
            resuming=resume is not None,
            sweep_trial=sweep_trial,
            retry_errored=retry_errored,
        )
        try:
            with contextlib.ExitStack() as stack:
                cluster = address or settings.ray_address()
                for stage in stages:
                    # Data stages join a cluster that is there (to read ranges on every node) but never start one.
                    needs_ray = stage in _NEEDS_RAY or (cluster is not None and stage in _READS_ON_A_CLUSTER)
                    if needs_ray and summary.ray_startup_seconds is None:
                        runtime = stack.enter_context(
                            ray_runtime(
                                address,
                                **_runtime_env(loaded),
                                metadata={
                                    "raymlp.job": loaded.config.name,
                                    "raymlp.stages": ",".join(stages),
                                    "raymlp.run_id": run.id,
                                    "raymlp.job_file": str(loaded.path),
                                },
                            )
                        )
                        summary.ray_startup_seconds = runtime.startup_seconds
                        summary.ray_address = runtime.address or "embedded local Ray"
                        _quiet_ray_data()
                        where = f"joined {runtime.address}" if runtime.address else "started an embedded local Ray"
                        reporter.stage(
                            "ray",
                            f"{where} in {runtime.startup_seconds:.1f}s"
                            + (f"; dashboard {runtime.dashboard}" if runtime.dashboard_url else ""),
                        )
                    stage_started = time.perf_counter()
                    _STAGE_FUNCTIONS[stage](context, summary)
                    summary.stages[stage] = round(time.perf_counter() - stage_started, 3)
                if summary.endpoint and on_serving is not None:
                    on_serving(summary)
        except BaseException as error:
            _withdraw_unused_version(context, summary)
            catalog.finish_run(
                run.id, "failed", summary=_as_dict(summary), error=f"{type(error).__name__}: {error}"[:4000]
            )
            raise
        finally:
            storage.run(run.id).remove_work_folder()
        summary.total_seconds = round(time.perf_counter() - started, 3)
        catalog.finish_run(run.id, "succeeded", summary=_as_dict(summary))
    return summary


def _withdraw_unused_version(context: StageContext, summary: RunSummary) -> None:
    """A run that fails publishes nothing new: the dataset version its convert made is taken back,
    unless something uses it already (a model trained on it, or training or a sweep that started on it,
    which `--resume` continues on that version)."""
    from raymlp.data.versions import PublishedVersion, withdraw_version
    from raymlp.storage import RunFolder

    version = context.results.get("dataset")
    if not isinstance(version, PublishedVersion) or version.reused:
        return
    run_folder = context.storage.run(context.run_id)
    started = any(run_folder.has(name) for name in (RunFolder.TRAINING_STARTED, RunFolder.SWEEP_STARTED))
    try:
        if started or context.catalog.models_using_dataset(version.name, version.version):
            return
        withdraw_version(context.catalog, version)
    except Exception as error:
        context.reporter.stage("convert", f"could not withdraw {version.ref} after the failure: {error}")
        return
    summary.dataset = summary.dataset_rows = summary.content_digest = summary.dataset_path = None
    context.reporter.stage("convert", f"withdrew {version.ref}: the run failed before anything used it")


def _reopen_for_resume(
    catalog: Any, loaded: LoadedJob, run_id: str, stages: list[str], storage: Any, address: str | None = None
) -> Any:
    """The run to resume, checked: same job, same settings, training started, not finished, and no
    Ray Train controller of it still alive on the cluster (`address`)."""
    from raymlp.catalog import CatalogError
    from raymlp.storage import RunFolder
    from raymlp.tracking.mlflow_tracking import flatten

    try:
        record = catalog.get_run(run_id)
    except CatalogError as error:
        raise UsageError(f"--resume: {error}") from None
    if record.job_name != loaded.config.name:
        raise UsageError(f"--resume: run {run_id} is of job '{record.job_name}', not '{loaded.config.name}'")
    if record.status == "succeeded":
        raise UsageError(f"--resume: run {run_id} succeeded; there is nothing to resume")
    if "train" not in stages and "tune" not in stages:
        raise UsageError("--resume continues training or a sweep: run it with the train or tune stage")
    before, now = flatten(record.config), flatten(loaded.public_dict())
    changed = sorted(key for key in before.keys() | now.keys() if before.get(key) != now.get(key))
    if changed:
        raise UsageError(
            f"--resume: the job's settings changed since run {run_id} ({', '.join(changed[:10])}); "
            "resuming would mix two models. Start a new run instead"
        )
    started = RunFolder.TRAINING_STARTED if "train" in stages else RunFolder.SWEEP_STARTED
    if not storage.run(run_id).has(started):
        raise UsageError(
            f"--resume: run {run_id} never started {'training' if 'train' in stages else 'its sweep'}; "
            "start a new run instead"
        )
    if "train" in stages:
        from raymlp.train.resume import refuse_while_training

        refuse_while_training(run_id, address)
    return catalog.reopen_run(run_id)


def _as_dict(summary: RunSummary) -> dict[str, Any]:
    from dataclasses import asdict

    return {key: value for key, value in asdict(summary).items() if value not in (None, {}, [])}


def _quiet_ray_data() -> None:
    import sys

    import ray.data

    from raymlp import settings

    context = ray.data.DataContext.get_current()
    # Bars for the stages' own small datasets are Ray Data's output: shown with -v only.
    context.enable_progress_bars = settings.verbose() and sys.stderr.isatty()
    context.print_on_execution_start = False


# --- stages ------------------------------------------------------------------------------------


def _collect(context: StageContext, summary: RunSummary) -> None:
    from raymlp.data.stage import collect_stage

    collected = context.results["collect"] = collect_stage(context)
    summary.collected_rows, summary.rejected_rows = collected.rows, collected.rejected


def _convert(context: StageContext, summary: RunSummary) -> None:
    from raymlp.data.stage import convert_stage

    version = convert_stage(context)
    context.results["dataset"] = version
    summary.dataset, summary.dataset_reused = version.ref, version.reused
    summary.dataset_rows, summary.dataset_path = version.manifest["row_count"], version.path
    summary.quarantined_rows = (version.manifest.get("quarantine") or {}).get("rows", 0)
    summary.content_digest = version.manifest["content_digest"]


def _dataset_for_training(context: StageContext) -> Any:
    if "dataset" in context.results:
        return context.results["dataset"]
    if context.resuming:  # the version the run started on, not the newest
        from raymlp.train.stage import training_started

        started = training_started(context)
        record = context.catalog.get_dataset_version(started["dataset"], started["version"])
        context.reporter.stage("dataset", f"using {record.name}@{record.version}, as run {context.run_id} did")
        return record
    if context.sweep_trial is not None and context.sweep_trial.get("dataset"):  # the version its sweep pinned
        return context.catalog.get_dataset_version(
            context.sweep_trial["dataset"], int(context.sweep_trial["dataset_version"])
        )
    record = context.catalog.get_dataset_version(context.config.data.dataset.name)
    context.reporter.stage("dataset", f"using {record.name}@{record.version} from the catalog")
    return record


def _train(context: StageContext, summary: RunSummary) -> None:
    from raymlp.train.stage import train_stage

    trained = train_stage(context, _dataset_for_training(context))
    context.results["trained"] = trained
    summary.dataset = summary.dataset or trained.dataset_ref
    summary.mlflow_run_id = trained.mlflow_run_id
    summary.metrics = trained.metrics
    summary.model_uri, summary.package_dir = trained.model_uri, str(trained.package_dir)
    summary.best_epoch, summary.framework = trained.best_epoch, trained.framework
    summary.epochs = len(trained.history)
    summary.content_digest = summary.content_digest or trained.dataset_digest


def train_trial(job_path: str, overrides: list[str], sweep_trial: dict[str, str]) -> RunSummary:
    """A sweep's trial (or the best light trial's settings again): the job's train stage with the
    trial's overrides, quietly, as that trial of the sweep. The runner the pipeline hands the tune
    stage (`raymlp.tune.trial.TrainRunner`), which sends it to the trial processes by name."""
    return run_job(
        job_path, overrides=overrides, only=["train"], reporter=Reporter(quiet=True), sweep_trial=sweep_trial
    )


def _tune(context: StageContext, summary: RunSummary) -> None:
    from raymlp.train.stage import TrainedModel
    from raymlp.tune.stage import tune_stage

    results = tune_stage(context, summary, runner=train_trial)
    best = results["best"]
    summary.best_trial, summary.trials = best, len(results["trials"])
    summary.mlflow_run_id, summary.metrics = best["mlflow_run_id"], best["metrics"]
    summary.dataset = summary.dataset or best["dataset"]
    context.results["trained"] = TrainedModel(
        package_dir=Path(best["package_dir"]),
        mlflow_run_id=best["mlflow_run_id"],
        model_uri=best["model_uri"],
        metrics=best["metrics"],
        history=[],
        dataset_ref=best["dataset"],
        dataset_digest=best["dataset_digest"],
        framework=best["framework"],
        best_epoch=best["best_epoch"],
    )


def _register(context: StageContext, summary: RunSummary) -> None:
    from raymlp.train.stage import register_stage

    if "trained" not in context.results:
        raise UsageError("register: run it together with train (--only train,register)")
    registered = register_stage(context, context.results["trained"])
    context.results["registered"] = registered
    summary.model, summary.model_version = registered.name, registered.version
    summary.alias, summary.alias_moved = registered.alias, registered.alias_moved


def _stage_runtime_env(value: Any) -> dict[str, Any] | None:
    from raymlp.runtime.envs import stage_runtime_env

    return stage_runtime_env(value)


def _model_package(context: StageContext) -> tuple[str, dict[str, Any]]:
    """The package this run trained, else the registered model the job names."""
    if "trained" in context.results:
        registered = context.results.get("registered")
        metadata = {
            "model": registered.name if registered else context.config.name,
            "version": registered.version if registered else None,
            "run_id": context.run_id,
        }
        if context.storage.remote:  # its copy in the bucket: workers and replicas on every node reach it
            return context.storage.run(context.run_id).package, metadata
        return str(context.results["trained"].package_dir), metadata
    register = context.config.register
    if register is None:
        raise UsageError("predict/serve without train in this run needs a register section naming the model")
    from raymlp.services.models import registered_package

    return registered_package(context.storage, register.model, register.alias)


def _predict(context: StageContext, summary: RunSummary) -> None:
    from raymlp.services.predict import predict_package

    config = context.config.predict
    package, _ = _model_package(context)
    result = predict_package(
        package, config.input, config.output, config.batch_size, runtime_env=_stage_runtime_env(config.env)
    )
    summary.predictions, summary.predicted_rows = str(result.output), result.rows
    context.reporter.stage("predict", f"{result.rows} rows -> {result.output} in {result.seconds:.1f}s")


def _serve(context: StageContext, summary: RunSummary) -> None:
    from raymlp.services.serving import serve_package

    package, metadata = _model_package(context)
    summary.endpoint, summary.sample_prediction = serve_package(
        context.config.serve,
        package,
        metadata,
        context.storage,
        app_name=context.config.name,
        job=context.config.name,
        records=lambda: _example_records(context, package),
    )
    context.reporter.stage("serve", f"{summary.endpoint} answered a POST with prediction {summary.sample_prediction!r}")


def _example_records(context: StageContext, package: str) -> list[dict[str, Any]]:
    """A real row of the dataset (features only), used to prove the endpoint answers."""
    import json

    import pyarrow.parquet as pq

    from raymlp.package import DESCRIPTION_FILE

    description = storage_files.read_json(storage_files.join(package, DESCRIPTION_FILE))
    names = [feature["name"] for feature in description["features"]]
    dataset = context.results.get("dataset")
    if dataset is None:
        dataset = context.catalog.get_dataset_version(context.config.data.dataset.name)
    with storage_files.open_input(storage_files.join(dataset.path, dataset.manifest["files"][0]["path"])) as handle:
        batch = next(pq.ParquetFile(handle).iter_batches(batch_size=1, columns=names))  # one row, not the whole version
    return json.loads(batch.to_pandas().to_json(orient="records"))


_STAGE_FUNCTIONS = {
    "tune": _tune,
    "collect": _collect,
    "convert": _convert,
    "train": _train,
    "register": _register,
    "predict": _predict,
    "serve": _serve,
}
