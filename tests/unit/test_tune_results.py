"""A sweep's results file: written before the best light trial is trained again, by the runner the
pipeline hands the sweep."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from raymlp.config.schema import SearchDimension
from raymlp.context import Reporter
from raymlp.tune import stage
from raymlp.tune.trial import TrialSpec

SPACE = {"train.model.params.max_depth": SearchDimension(randint=(2, 16))}


def _result(trial: str, accuracy: float, depth: int):
    metrics = {
        "trial_id": trial,
        "val_accuracy": accuracy,
        "done": True,
        "light": True,
        "epochs": 1,
        "mlflow_run_id": f"r-{trial}",
        "metrics_json": json.dumps({"val_accuracy": accuracy}),
    }
    return SimpleNamespace(
        metrics=metrics,
        config={"train.model.params.max_depth": depth},
        error=None,
        metrics_dataframe=None,
        path=f"/tmp/{trial}",
    )


def _sweep(tmp_path, runner):
    tune = SimpleNamespace(metric="val_accuracy", mode="max", space=SPACE, scheduler=SimpleNamespace(type="fifo"))
    context = SimpleNamespace(
        config=SimpleNamespace(name="wine", tune=tune), run_id="sweep-1", reporter=Reporter(quiet=True)
    )
    tracker = SimpleNamespace(
        client=SimpleNamespace(search_runs=lambda *args, **kwargs: []), experiment_id=lambda name: "1"
    )
    spec = TrialSpec(
        job_path="job.yaml",
        overrides=["train.seed=1"],
        raymlp_home=None,
        parent_mlflow_run="parent",
        sweep_run_id="sweep-1",
        dataset="wine",
        dataset_version=1,
        runner=runner,
    )
    grid = [_result("a", 0.8, 3), _result("b", 0.9, 7)]
    return context, tracker, spec, grid


def test_a_refit_that_fails_leaves_the_sweeps_results_file(tmp_path, monkeypatch):
    calls = []

    def failing_runner(job_path, overrides, sweep_trial):
        calls.append((job_path, overrides, sweep_trial))
        raise RuntimeError("the refit's cluster went away")

    monkeypatch.setattr(stage, "_write_report", lambda *args: pytest.fail("no report before the refit"))
    context, tracker, spec, grid = _sweep(tmp_path, failing_runner)
    results_file = tmp_path / "tune_results.json"
    with pytest.raises(RuntimeError, match="cluster went away"):
        stage._results(context, tracker, "parent", spec, grid, True, 0.0, results_file)

    # The runner was handed the best trial's values on top of the job's overrides, as the refit of that trial.
    [(job_path, overrides, sweep_trial)] = calls
    assert (job_path, overrides) == ("job.yaml", ["train.seed=1", "train.model.params.max_depth=7"])
    assert sweep_trial == {
        "mlflow_run": "parent",
        "run_id": "sweep-1",
        "trial": "b",
        "dataset": "wine",
        "dataset_version": "1",
        "refit": "true",
    }
    kept = json.loads(results_file.read_text())
    assert [(row["trial"], row["state"], row["metric"]) for row in kept["trials"]] == [
        ("a", "finished", 0.8),
        ("b", "finished", 0.9),
    ]
    assert kept["best"]["trial"] == "b" and kept["light_trials"] is True and kept["best_refit_seconds"] is None


def test_the_refits_run_becomes_the_best_rows_in_the_results_file(tmp_path, monkeypatch):
    def runner(job_path, overrides, sweep_trial):
        return SimpleNamespace(
            metrics={"val_accuracy": 0.9, "test_accuracy": 0.85},
            run_id="refit-run",
            mlflow_run_id="refit-mlflow",
            model_uri="models:/x",
            package_dir="/pkg",
            best_epoch=1,
            epochs=1,
            dataset="wine@1",
            content_digest="d",
            framework="sklearn",
        )

    monkeypatch.setattr(stage, "_write_report", lambda *args: "/report.html")
    context, tracker, spec, grid = _sweep(tmp_path, runner)
    results_file = tmp_path / "tune_results.json"
    results = stage._results(context, tracker, "parent", spec, grid, True, 0.0, results_file)

    assert json.loads(results_file.read_text()) == json.loads(json.dumps(results, sort_keys=True, default=str))
    assert results["best"]["mlflow_run_id"] == "refit-mlflow" and results["best"]["trial_mlflow_run_id"] == "r-b"
    assert results["best"]["metrics"]["test_accuracy"] == 0.85 and results["report"] == "/report.html"
    assert results["best_refit_seconds"] is not None


def test_trials_the_scheduler_stopped_end_stopped_in_the_catalog_and_killed_in_mlflow():
    def child(run_id: str, trial: str, status: str = "RUNNING"):
        return SimpleNamespace(
            info=SimpleNamespace(run_id=run_id, status=status),
            data=SimpleNamespace(tags={"raymlp.trial_id": trial, "raymlp.run_id": f"cat-{run_id}"}),
        )

    finished: dict[str, tuple[str, str]] = {}
    mlflow: dict[str, str] = {}
    catalog = SimpleNamespace(
        finish_run=lambda run_id, status, summary, error: finished.__setitem__(run_id, (status, error))
    )
    searches = iter([[child("m-c", "c"), child("m-n", "n"), child("m-d", "d", "FAILED")], [child("m-p1", "p")]])
    client = SimpleNamespace(
        search_runs=lambda *args, **kwargs: next(searches),
        get_run=lambda run_id: SimpleNamespace(data=SimpleNamespace(metrics={"val_accuracy": 0.5})),
    )
    tracker = SimpleNamespace(
        client=client,
        experiment_id=lambda name: "1",
        set_tags=lambda run_id, tags: None,
        log_metrics=lambda run_id, rows: None,
        finish=lambda run_id, status: mlflow.__setitem__(run_id, status),
    )
    tune = SimpleNamespace(metric="val_accuracy")
    context = SimpleNamespace(config=SimpleNamespace(name="wine", tune=tune), run_id="sweep-1", catalog=catalog)
    rows = [
        {"trial": "c", "state": "stopped early", "epochs": 2},
        {"trial": "n", "state": "not run"},
        {"trial": "d", "state": "error"},
        {"trial": "p", "state": "finished", "mlflow_run_id": "m-p2"},
    ]

    stage._close_stopped_trials(context, tracker, "parent", rows[:3], "asha", {})
    stage._close_stopped_trials(context, tracker, "parent", rows[3:], "pbt", {})

    assert mlflow == {"m-c": "KILLED", "m-n": "KILLED", "m-p1": "KILLED"}  # the trial that failed keeps FAILED
    assert (
        finished["cat-m-c"][0] == "stopped"
        and "stopped by the asha scheduler after 2 epoch(s)" in finished["cat-m-c"][1]
    )
    assert finished["cat-m-p1"][0] == "stopped" and finished["cat-m-p1"][1].startswith("PBT stopped this run")
    assert finished["cat-m-n"][0] == "failed"  # it ended without the scheduler stopping it
    assert "cat-m-d" not in finished


def test_a_stopped_trial_whose_own_process_ended_its_run_failed_ends_stopped(tmp_path):
    """The scheduler's stop reached the trial's process first, and its train stage ended the catalog
    run `failed`: the sweep still records it `stopped`, with the scheduler's reason."""
    from raymlp.catalog import Catalog

    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        stopped = catalog.start_run("wine", "jobs/wine.yaml", "0" * 64, {}, ["train"])
        failed = catalog.start_run("wine", "jobs/wine.yaml", "0" * 64, {}, ["train"])
        for run in (stopped, failed):
            catalog.finish_run(run.id, "failed", error="TrainingFailedError: the worker group was shut down")
        children = [
            SimpleNamespace(
                info=SimpleNamespace(run_id=f"m-{trial}", status="FAILED"),
                data=SimpleNamespace(tags={"raymlp.trial_id": trial, "raymlp.run_id": run.id}),
            )
            for trial, run in (("s", stopped), ("e", failed))
        ]
        tracker = SimpleNamespace(
            client=SimpleNamespace(
                search_runs=lambda *args, **kwargs: children,
                get_run=lambda run_id: SimpleNamespace(data=SimpleNamespace(metrics={"val_accuracy": 0.4})),
            ),
            experiment_id=lambda name: "1",
            set_tags=lambda run_id, tags: None,
            log_metrics=lambda run_id, rows: None,
            finish=lambda run_id, status: None,
        )
        context = SimpleNamespace(
            config=SimpleNamespace(name="wine", tune=SimpleNamespace(metric="val_accuracy")),
            run_id="sweep-1",
            catalog=catalog,
        )
        rows = [{"trial": "s", "state": "stopped early", "epochs": 1}, {"trial": "e", "state": "error"}]
        stage._close_stopped_trials(context, tracker, "parent", rows, "asha", {})

        record = catalog.get_run(stopped.id)
        assert record.status == "stopped" and "stopped by the asha scheduler after 1 epoch(s)" in record.error
        assert record.summary == {"sweep": "sweep-1"}
        assert catalog.get_run(failed.id).status == "failed"  # a trial that really failed stays failed
