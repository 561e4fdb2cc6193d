"""The tune stage: Ray Tune trials, each a run of the job's train stage with the trial's settings.

The sweep is one Ray Tune experiment. A full trial is a function trainable (`trial.run_trial`)
that runs the job's train stage with its values in its own process (connected to the same Ray),
through the runner the pipeline hands `tune_stage` (`trial.TrainRunner`), so a trial is exactly a
`raymlp train` run: its own catalog run, MLflow run (nested under the sweep's), checkpoints and
model package. Ray Train backends send every epoch to Tune through Ray's `TuneReportCallback` (so
ASHA and the median rule can stop a trial between epochs); when the run ends the trial reports
once more, with the best epoch's metrics, the test metrics and where its package is.
"""

from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

from raymlp.context import StageContext
from raymlp.errors import WorkFailed
from raymlp.storage import files as storage_files

from .space import decoded, param_space
from .trial import TRIAL_KEYS, TrainRunner, TrialSpec, run_trial, train_run

TRIAL_CPU = 0.01


def tune_stage(context: StageContext, summary: Any, runner: TrainRunner) -> dict[str, Any]:
    """Run the job's sweep (or go on with it: `context.resuming`); return its results, with every
    trial's row and the best finished trial's. `runner` runs a trial's train stage (a full trial's,
    or the best light trial's again); the pipeline hands it in."""
    from ray import tune

    from raymlp.tracking import Tracker

    from .space import job_values, most_epochs

    job = context.config
    settings = job.tune
    tracker = Tracker(context.storage.tracking_uri, context.storage.root)
    run_folder = context.storage.run(context.run_id)
    run_folder.create()
    started_file = run_folder.sweep_started
    experiment = run_folder.tune_experiment(job.name)
    if context.resuming:  # the same Tune experiment, MLflow run and dataset version go on
        sweep_started = storage_files.read_json(started_file)
        parent = sweep_started["mlflow_run_id"]
        dataset = (
            context.catalog.get_dataset_version(sweep_started["dataset"], sweep_started["dataset_version"])
            if "dataset" in sweep_started
            else _sweep_dataset(context)
        )  # one started before versions were pinned
        if not tune.Tuner.can_restore(experiment):
            raise WorkFailed(f"tune --resume: no Ray Tune experiment state at {experiment}; start a new sweep instead")
        tracker.client.update_run(parent, status="RUNNING")
        context.reporter.stage("tune", f"resuming sweep {context.run_id} (MLflow run {parent}) from {experiment}")
    else:
        parent = tracker.start_run(
            job.name,
            run_name=f"{job.name}-sweep-{context.run_id[:8]}",
            tags={
                "raymlp.run_id": context.run_id,
                "raymlp.sweep": "true",
                "raymlp.job_sha256": context.job.sha256,
                "raymlp.job_path": str(context.job.path),
            },
        )
        tracker.log_params(parent, context.job.public_dict())
        dataset = _sweep_dataset(context)
        tracker.set_tags(parent, {"raymlp.dataset": f"{dataset.name}@{dataset.version}"})
        storage_files.write_json(
            started_file,
            {
                "mlflow_run_id": parent,
                "experiment": str(experiment),
                "dataset": dataset.name,
                "dataset_version": dataset.version,
            },
        )
    # Tune saves the experiment's state (finished trials, the searcher's) at most this often: a
    # driver killed between two saves would run again the trials that finished in between.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    try:
        # Absolute: a trial's process has the cluster's working directory, not this one's.
        home = os.environ.get("RAYMLP_HOME")
        spec = TrialSpec(
            job_path=str(Path(context.job.path).resolve()),
            overrides=list(context.job.overrides),
            raymlp_home=os.path.abspath(home) if home else None,
            parent_mlflow_run=parent,
            sweep_run_id=context.run_id,
            dataset=dataset.name,
            dataset_version=dataset.version,
            runner=runner,
            pbt=settings.scheduler.type == "pbt",
        )
        light = light_trials(job)
        trainable = _trainable(spec, job) if light else _full_trainable(spec)
        first = job_values(context.job.public_dict(), settings.space) if settings.start_from_job else None
        started = time.perf_counter()
        if context.resuming:
            # Finished trials stay finished; those the driver's death cut off start again.
            tuner = tune.Tuner.restore(
                experiment,
                trainable,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=context.retry_errored,
                param_space=param_space(settings.space),
            )
        else:
            context.reporter.stage(
                "tune",
                f"{settings.num_samples} trial(s) x {_grid_points(settings)} grid point(s), search {settings.search}, "
                f"scheduler {settings.scheduler.type}, metric {settings.metric} ({settings.mode}), "
                f"{'light' if light else 'full'} trials on {dataset.name}@{dataset.version}"
                + ("; the first trial has the job's own values" if first else ""),
            )
            tuner = _new_tuner(
                trainable, settings, first, most_epochs(job.train.epochs, settings.space), experiment, light, job.name
            )
        from .progress import showing

        with showing(context.reporter, settings.metric, settings.space):
            grid = tuner.fit()
        results_file = context.storage.run(context.run_id).tune_results
        results = _results(context, tracker, parent, spec, grid, light, started, results_file)
        best, rows = results["best"], results["trials"]
        tracker.log_artifact(parent, results_file)
        if results["report"]:
            tracker.log_artifact(parent, results["report"])
        if best is not None:
            tracker.log_metrics(parent, [{f"best_{settings.metric}": best["metric"]}])
            tracker.set_tags(
                parent, {"raymlp.best_trial": best["trial"], "raymlp.best_mlflow_run": best["mlflow_run_id"]}
            )
        tracker.finish(parent, status="FINISHED" if best is not None else "FAILED")
    except BaseException:
        tracker.finish(parent, status="FAILED")
        raise
    show_results(context.reporter, results)
    if best is None:
        raise WorkFailed(f"tune: no trial finished ({len(rows)} trial(s); see {results_file})")
    return results


def _results(
    context: StageContext,
    tracker: Any,
    parent: str,
    spec: TrialSpec,
    grid: Any,
    light: bool,
    started: float,
    results_file: str,
) -> dict[str, Any]:
    """The sweep's results from Tune's (`started`: when it began, by `time.perf_counter`): every
    trial's row, with the trials the scheduler stopped ended in MLflow and the catalog, and the best
    finished trial's. They are written to `results_file` before a light sweep trains its best
    trial's settings again, so a refit that fails loses none of them, and written again with the
    refit's runs and the HTML report."""
    settings = context.config.tune
    rows = trial_rows(grid, settings.metric, settings.mode, settings.space)
    _close_stopped_trials(context, tracker, parent, rows, settings.scheduler.type, epoch_histories(grid))
    best = best_row(rows, settings.mode)
    results = {
        "job": context.config.name,
        "run_id": context.run_id,
        "mlflow_run_id": parent,
        "metric": settings.metric,
        "mode": settings.mode,
        "seconds": round(time.perf_counter() - started, 3),
        "light_trials": light,
        "best_refit_seconds": None,
        "best": best,
        "trials": rows,
        "report": None,
    }
    storage_files.write_json(results_file, results)
    if light:
        refit_started = time.perf_counter()
        if best is not None:
            _train_best(context, spec, best, settings.metric)
        results.update(
            seconds=round(time.perf_counter() - started, 3),
            best_refit_seconds=round(time.perf_counter() - refit_started, 3),
        )
    results["report"] = _write_report(context, tracker, results)
    storage_files.write_json(results_file, results)
    return results


def light_trials(job: Any) -> bool:
    """Whether the sweep's trials are light ones (`tune.trials`; auto: for the frameworks whose
    row in `raymlp.frameworks` says light trials, sklearn)."""
    from raymlp.frameworks import framework

    row = framework(job.train.framework)
    return job.tune.trials == "light" or (job.tune.trials == "auto" and row is not None and row.light_trials)


def _full_trainable(spec: TrialSpec) -> Any:
    """A full trial's process mostly waits for its train stage, whose workers hold the CPUs: it
    takes a hundredth of one (Tune needs some resource), so `max_concurrent` and the workers'
    resources decide how many run at once."""
    from ray import tune

    return tune.with_resources(partial(run_trial, spec=spec), {"cpu": TRIAL_CPU})


def _trainable(spec: TrialSpec, job: Any) -> Any:
    """A light trial fits in its own process, which holds the fit's resources
    (`train.scaling.resources_per_worker`, one CPU when not given)."""
    from ray import tune

    from .light import LightTrialSpec, run_light_trial

    resources = dict(job.train.scaling.resources_per_worker or {})
    cpus = resources.pop("CPU", 1)
    light = LightTrialSpec(**vars(spec), cpus=max(1, int(cpus)))
    return tune.with_resources(
        partial(run_light_trial, spec=light), {"cpu": cpus, "gpu": resources.pop("GPU", 0), **resources}
    )


def _sweep_dataset(context: StageContext) -> Any:
    """The dataset version every trial trains on: the one this run converted, else the newest."""
    if "dataset" in context.results:
        return context.results["dataset"]
    return context.catalog.get_dataset_version(context.config.data.dataset.name)


def _train_best(context: StageContext, spec: TrialSpec, best: dict[str, Any], metric: str) -> None:
    """Train the best light trial's settings again as a full train run (in this process, nested in
    the sweep's run as a trial's run is in its process): its package, test metrics and MLflow run (nested under the sweep's, tagged
    `raymlp.refit_of_trial`) become the best row's, for `register`."""
    context.reporter.stage(
        "tune", f"training trial {best['trial']}'s settings again as a full run (package, test metrics)"
    )
    final = train_run(spec, best["params"], best["trial"], refit=True)  # here: this process has the imports already
    again = final.get(metric)
    if again is not None and abs(float(again) - best["metric"]) > 1e-9:
        context.reporter.info(
            f"    tune  the full run's {metric} is {float(again):.4f}, the trial's was {best['metric']:.4f} "
            "(the fit is not deterministic with these settings; set train.seed)"
        )
    best.update(
        trial_mlflow_run_id=best["mlflow_run_id"],
        refit_metric=again,
        **{key: final.get(key) for key in TRIAL_KEYS},
        metrics=json.loads(final["metrics_json"]),
    )


def _write_report(context: StageContext, tracker: Any, results: dict[str, Any]) -> str | None:
    """The HTML report next to the run; a sweep that finished stays finished when it cannot be drawn."""
    from .report import learning_curves, write_report

    try:
        path = write_report(
            results,
            learning_curves(tracker, results),
            context.config.tune.space,
            context.storage.run(context.run_id).tune_report,
        )
    except Exception as error:
        context.reporter.info(f"    tune  the HTML report was not written: {type(error).__name__}: {error}")
        return None
    context.reporter.stage("tune", f"report {path}")
    return str(path)


def _new_tuner(
    trainable: Any,
    settings: Any,
    first: dict[str, Any] | None,
    epochs: int,
    experiment: str,
    light: bool,
    job: str = "",
) -> Any:
    from ray import tune

    from .progress import SweepProgress
    from .space import scheduler, searcher

    return tune.Tuner(
        trainable,
        param_space=param_space(settings.space),
        tune_config=tune.TuneConfig(
            metric=settings.metric,
            mode=settings.mode,
            num_samples=settings.num_samples,
            max_concurrent_trials=None if settings.search in ("random", "grid") else settings.max_concurrent,
            search_alg=searcher(settings, first),
            scheduler=scheduler(settings.scheduler, epochs, settings.space),
            time_budget_s=settings.time_budget_s,
            reuse_actors=light,
        ),
        run_config=tune.RunConfig(
            name=storage_files.name_of(experiment),
            storage_path=storage_files.parent(experiment),
            verbose=0,
            callbacks=[SweepProgress(), trials_finished(job)],
            # PBT: the checkpoints a trial may hand on (each a copy of a Ray Train one).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=4) if settings.scheduler.type == "pbt" else None,
        ),
    )


def epoch_histories(grid: Any) -> dict[str, list[dict[str, float]]]:
    """Each trial's per-epoch rows as Tune received them (`epoch`, `train_loss`, `val_*`)."""
    histories = {}
    for result in grid:
        frame = getattr(result, "metrics_dataframe", None)
        if frame is None or "epoch" not in frame.columns:
            continue
        columns = [name for name in frame.columns if name == "epoch" or name == "train_loss" or name.startswith("val_")]
        rows = frame[columns].dropna(subset=["epoch"]).to_dict("records")
        histories[_trial_id(result)] = [
            {key: float(value) for key, value in row.items() if value == value} for row in rows
        ]
    return histories


def _close_stopped_trials(
    context: StageContext,
    tracker: Any,
    parent: str,
    rows: list[dict[str, Any]],
    scheduler: str,
    histories: dict[str, list[dict[str, float]]],
) -> None:
    """Trials the scheduler stopped (or that died) leave their MLflow run RUNNING (or FAILED, when
    the stop reached the trial's own process first) and their catalog run running or failed: end
    both as stopped (MLflow KILLED; catalog `stopped` for a run the scheduler stopped, `failed` for
    one that ended otherwise), say why, log the epochs the trial got through (the train stage logs a run's
    history when it ends, which a stopped one never reaches) and put the MLflow run on the trial's
    row."""
    by_trial = {row["trial"]: row for row in rows}
    children = tracker.client.search_runs(
        [tracker.experiment_id(context.config.name)],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status != 'FINISHED'",
    )
    for child in children:
        if (
            child.info.status == "FAILED"
            and by_trial.get(child.data.tags.get("raymlp.trial_id", ""), {}).get("state") == "error"
        ):
            continue  # a trial that really failed keeps its status
        row = by_trial.get(child.data.tags.get("raymlp.trial_id", ""), {})
        row.setdefault("mlflow_run_id", child.info.run_id)
        stopped = row.get("state") == "stopped early"
        left_by_pbt = scheduler == "pbt" and child.info.run_id != row.get("mlflow_run_id")
        if left_by_pbt:
            why = (
                "PBT stopped this run of the trial: the trial went on from a checkpoint (a better trial's, with new "
                f"optimizer settings, or its own after a pause) in MLflow run {row.get('mlflow_run_id')}"
            )
        elif stopped:
            why = (
                f"stopped by the {scheduler} scheduler after {row.get('epochs', 0)} epoch(s): its "
                f"{context.config.tune.metric} was behind the other trials'"
            )
        else:
            why = f"the trial ended without finishing ({row.get('state', 'unknown')})"
        tracker.set_tags(child.info.run_id, {"raymlp.trial_outcome": why})
        if stopped and not tracker.client.get_run(child.info.run_id).data.metrics:
            tracker.log_metrics(child.info.run_id, histories.get(row.get("trial", ""), []))
        tracker.finish(child.info.run_id, status="KILLED")
        run_id = child.data.tags.get("raymlp.run_id")
        if run_id:
            _end_trial_run(context, run_id, "stopped" if stopped or left_by_pbt else "failed", why)


def _end_trial_run(context: StageContext, run_id: str, status: str, why: str) -> None:
    """End a trial's catalog run as `status`. The scheduler's stop can reach the trial's own process
    first, whose train stage then ends the run `failed`; a run the scheduler stopped is `stopped`
    all the same (the trial's process is gone once the sweep has returned)."""
    from raymlp.catalog import CatalogError

    catalog = context.catalog
    summary = {"sweep": context.run_id}
    try:
        catalog.finish_run(run_id, status, summary=summary, error=why)
        return
    except Exception:  # already finished by the trial's own process
        pass
    try:
        if status == "stopped" and catalog.get_run(run_id).status == "failed":
            catalog.reopen_run(run_id)
            catalog.finish_run(run_id, status, summary=summary, error=why)
    except CatalogError:  # gone or changed meanwhile: the sweep's results do not depend on it
        pass


def trial_rows(grid: Any, metric: str, mode: str, space: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trial: its values, its metric (the best epoch's, for a finished trial; its last
    epoch's, for one the scheduler stopped), how it ended, its epochs and where its runs are."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        finished = bool(metrics.get("done")) and bool(metrics.get("raymlp_run_id") or metrics.get("light"))
        if result.error is not None:
            state = "error"
        elif finished:
            state = "finished"
        else:
            state = "stopped early" if metrics else "not run"
        value = metrics.get(metric)
        rows.append(
            {
                "trial": _trial_id(result),
                "params": decoded(space, {path: (result.config or {}).get(path) for path in space}),
                "metric": float(value) if isinstance(value, int | float) else None,
                "state": state,
                "epochs": int(metrics.get("epochs" if finished else "epoch", 0) or 0),
                "error": str(result.error).strip().splitlines()[-1][:500] if result.error is not None else None,
                **({key: metrics.get(key) for key in TRIAL_KEYS} if finished else {}),
                **({"metrics": json.loads(metrics["metrics_json"])} if finished else {}),
            }
        )
    return sorted(rows, key=lambda row: row["trial"])


def best_row(rows: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """The best finished trial (only a finished trial has a model package)."""
    finished = [row for row in rows if row["state"] == "finished" and row["metric"] is not None]
    if not finished:
        return None
    return (max if mode == "max" else min)(finished, key=lambda row: row["metric"])


def show_results(reporter: Any, results: dict[str, Any]) -> None:
    """The results table on the terminal: one line per trial, best first."""
    from .report import ordered_trials

    for row in ordered_trials(results):
        params = ", ".join(f"{path}={_shown(value)}" for path, value in row["params"].items())
        metric = "-" if row["metric"] is None else f"{row['metric']:.4f}"
        reporter.info(
            f"    tune  {row['trial']}  {results['metric']} {metric}  {row['state']}  epochs {row['epochs']}  {params}"
        )
    if results["best"] is not None:
        best = results["best"]
        reporter.stage(
            "tune",
            f"best trial {best['trial']}: {results['metric']} {best['metric']:.4f}; "
            f"MLflow run {best['mlflow_run_id']} (sweep run {results['mlflow_run_id']})",
        )


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def _trial_id(result: Any) -> str:
    if (result.metrics or {}).get("trial_id"):
        return str(result.metrics["trial_id"])
    return Path(str(getattr(result, "path", "") or "?")).name


def _grid_points(settings: Any) -> int:
    points = 1
    for dimension in settings.space.values():
        if dimension.grid is not None:
            points *= len(dimension.grid)
    return points


def trials_finished(job: str) -> Any:
    """A `TrialsFinished` callback counting the trials of `job`'s sweep."""
    return __getattr__("TrialsFinished")(job)


def _trials_finished_class() -> type:
    """`TrialsFinished`: a Ray Tune callback in the sweep's driver that counts every trial that ends
    as `raymlp_tune_trials_finished{job, stage="tune", status=finished|stopped|error}`.

    Made on first use (PEP 562 `__getattr__` below) so that importing this module does not import
    Ray Tune; Tune pickles it with the experiment's state (the job's name only) and a restored
    sweep finds it again by this module's attribute."""
    from ray.tune import Callback

    from raymlp import metrics

    class TrialsFinished(Callback):
        def __init__(self, job: str):
            self.job = job

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            result = getattr(trial, "last_result", None) or {}
            done = result.get("done") is True and ("raymlp_run_id" in result or bool(result.get("light")))
            self._count("finished" if done else "stopped")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._count("error")

        def _count(self, status: str) -> None:
            metrics.inc(metrics.TUNE_TRIALS, 1, metrics.tags(self.job, "tune", status=status))

    TrialsFinished.__module__ = __name__
    TrialsFinished.__qualname__ = "TrialsFinished"
    return TrialsFinished


def __getattr__(name: str) -> Any:
    if name == "TrialsFinished":
        made = globals().get(name) or _trials_finished_class()
        globals()[name] = made
        return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
