"""Sweeps on the session's Ray: Optuna over a random forest, ASHA over a torch MLP; every trial a
nested MLflow run; the results table from the CLI."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from raymlp.context import Reporter
from tests.conftest import run_job_quietly

from .conftest import REPO, json_output, run_cli

pytestmark = [pytest.mark.integration]

SKLEARN_SWEEP = REPO / "jobs" / "wine-sklearn-sweep.yaml"
TORCH_SWEEP = REPO / "jobs" / "wine-torch-sweep.yaml"
QUIET = Reporter(quiet=True)


def _sweep_results(summary) -> dict:
    from raymlp.storage import resolve_storage

    return json.loads((resolve_storage().folder("runs", summary.run_id) / "tune_results.json").read_text())


def _child_runs(parent: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    from raymlp.storage import resolve_storage

    client = MlflowClient(resolve_storage().tracking_uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")


def test_an_optuna_sweep_nests_every_trial_in_mlflow_and_registers_the_best(ray_4_cpus, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYMLP_HOME", str(tmp_path / "home"))
    run_job_quietly(SKLEARN_SWEEP, only=["convert"], reporter=QUIET)
    default = run_job_quietly(SKLEARN_SWEEP, only=["train"], reporter=QUIET)

    summary = run_job_quietly(
        SKLEARN_SWEEP, overrides=["tune.num_samples=4"], only=["tune", "register"], reporter=QUIET
    )

    results = _sweep_results(summary)
    assert summary.trials == 4 and len(results["trials"]) == 4
    assert [row["state"] for row in results["trials"]] == ["finished"] * 4
    first = {
        "train.model.params.n_estimators": 50,
        "train.model.params.max_depth": 3,
        "train.model.params.min_samples_leaf": 1,
    }
    assert first in [row["params"] for row in results["trials"]]  # the job's own values were tried
    assert (
        len({json.dumps(row["params"], sort_keys=True) for row in results["trials"]}) == 4
    )  # Optuna asked for new points
    best = results["best"]
    assert best["metric"] == max(row["metric"] for row in results["trials"])
    assert best["metric"] >= default.metrics["val_accuracy"]

    children = _child_runs(results["mlflow_run_id"], "wine-sklearn-sweep")
    trial_runs = [child for child in children if "raymlp.refit_of_trial" not in child.data.tags]
    assert len(trial_runs) == 4
    by_run = {row.get("trial_mlflow_run_id") or row["mlflow_run_id"]: row for row in results["trials"]}
    for child in trial_runs:  # light trials (sklearn): params and validation metrics, no package
        row = by_run[child.info.run_id]
        assert child.info.status == "FINISHED" and child.data.tags["raymlp.trial_kind"] == "light"
        assert child.data.tags["raymlp.trial_id"] == row["trial"]
        for path, value in row["params"].items():
            assert json.loads(child.data.params[path]) == value  # the trial's run logged the trial's settings
        assert child.data.metrics["val_accuracy"] == pytest.approx(row["metric"])
    # The best trial's settings were trained again as a full run: package, test metrics, the same validation score.
    [refit] = [child for child in children if "raymlp.refit_of_trial" in child.data.tags]
    assert refit.data.tags["raymlp.refit_of_trial"] == best["trial"] and refit.info.status == "FINISHED"
    assert refit.info.run_id == best["mlflow_run_id"] and best["trial_mlflow_run_id"] != best["mlflow_run_id"]
    assert refit.data.metrics["val_accuracy"] == pytest.approx(best["metric"]) and "test_accuracy" in refit.data.metrics
    assert Path(best["package_dir"]).is_dir() and best["metrics"]["test_accuracy"] >= 0.9
    # The registered version is the best trial's model.
    assert summary.mlflow_run_id == best["mlflow_run_id"] and summary.model_version >= 1
    from mlflow.tracking import MlflowClient

    from raymlp.storage import resolve_storage
    from raymlp.tracking import ModelRef, Tracker

    storage = resolve_storage()
    version, record = Tracker(storage.tracking_uri, Path(storage.root)).resolve(
        ModelRef("wine-sklearn-sweep", version=summary.model_version)
    )
    assert record.run_id == best["mlflow_run_id"]
    # The HTML report: next to the run and on the sweep's MLflow run.
    report = Path(results["report"])
    assert report.name == "tune_report.html" and report.read_text().count("<svg") == 4  # 3 settings + learning curves
    logged = {item.path for item in MlflowClient(storage.tracking_uri).list_artifacts(results["mlflow_run_id"])}
    assert {"tune_report.html", "tune_results.json"} <= logged


def test_asha_stops_poor_trials_between_epochs_and_the_cli_shows_the_table(ray_4_cpus, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("RAYMLP_HOME", str(home))
    run_job_quietly(TORCH_SWEEP, only=["convert"], reporter=QUIET)
    # Distributed trials: each trial trains on 2 Ray Train workers (DDP). Two trials, one after the other:
    # the job's own values (val_accuracy 0.83 at epoch 1, 0.97 at 4) and random search's first point for
    # seed 3 (lr 2.2e-5, one layer of 16: about 0.4 at epoch 1), which ASHA stops at its first rung.
    overrides = [
        "tune.num_samples=2",
        "tune.seed=3",
        "tune.max_concurrent=1",
        "train.epochs=4",
        "tune.scheduler.grace_period=1",
        "train.scaling.num_workers=2",
    ]

    summary = run_job_quietly(TORCH_SWEEP, overrides=overrides, only=["tune"], reporter=QUIET)
    from mlflow.tracking import MlflowClient

    from raymlp.catalog import Catalog
    from raymlp.storage import resolve_storage

    results = _sweep_results(summary)
    states = [row["state"] for row in results["trials"]]
    assert states.count("finished") >= 1 and states.count("stopped early") >= 1, results["trials"]
    for row in results["trials"]:
        assert 1 <= row["epochs"] <= 4
        if row["state"] == "stopped early":
            assert row["epochs"] < 4  # stopped between epochs, before the last
    children = {child.info.run_id: child for child in _child_runs(results["mlflow_run_id"], "wine-torch-sweep")}
    assert len(children) == 2
    for row in results["trials"]:
        child = children[row["mlflow_run_id"]]
        if row["state"] == "stopped early":
            assert (
                child.info.status == "KILLED"
                and "stopped by the asha scheduler" in child.data.tags["raymlp.trial_outcome"]
            )
            with Catalog(resolve_storage().catalog_url) as catalog:  # its catalog run ended stopped, not failed
                record = catalog.get_run(child.data.tags["raymlp.run_id"])
            assert record.status == "stopped" and "stopped by the asha scheduler" in record.error
            # The epochs it got through are in its run, as a finished trial's are.
            history = MlflowClient(resolve_storage().tracking_uri).get_metric_history(child.info.run_id, "val_accuracy")
            assert sorted(point.step for point in history) == list(range(1, row["epochs"] + 1))
            assert max(history, key=lambda point: point.step).value == pytest.approx(row["metric"])  # its last epoch's
        else:
            assert child.info.status == "FINISHED" and child.data.metrics["workers"] == 2

    shown = run_cli("tune", "results", str(TORCH_SWEEP), "--json", cwd=tmp_path, env={"RAYMLP_HOME": str(home)})
    assert shown.returncode == 0, shown.stderr
    assert json_output(shown)["run_id"] == summary.run_id
    table = run_cli("tune", "results", str(TORCH_SWEEP), cwd=tmp_path, env={"RAYMLP_HOME": str(home)})
    assert table.returncode == 0 and "stopped early" in table.stdout and "train.optimizer.lr" in table.stdout


def _finished_children(home, parent: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    found = client.get_experiment_by_name("wine-sklearn-sweep")
    if found is None:
        return []
    return client.search_runs(
        [found.experiment_id],
        filter_string=(f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'FINISHED'"),
    )


def test_a_sweep_whose_driver_died_goes_on_without_running_finished_trials_again(ray_4_cpus, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from ray.util.state import list_actors

    from raymlp.catalog import Catalog

    home = tmp_path / "home"
    env = {"RAYMLP_HOME": str(home), "RAY_ADDRESS": ray_4_cpus}
    # Full trials (a whole train run each) take seconds: time to kill the driver between two of them.
    sets = ["--set", "tune.num_samples=4", "--set", "tune.max_concurrent=1", "--set", "tune.trials=full"]
    assert run_cli("data", "convert", str(SKLEARN_SWEEP), cwd=tmp_path, env=env).returncode == 0

    def sweep_actors() -> set[str]:
        return {
            actor.actor_id
            for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
            if actor.class_name in ("ImplicitFunc", "TrainController", "RayTrainWorker")
        }

    earlier = sweep_actors()  # other tests' (the session's Ray is shared)
    driver = subprocess.Popen(
        [sys.executable, "-m", "raymlp", "tune", str(SKLEARN_SWEEP), *sets],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline, parent, before = time.monotonic() + 600, None, []
    while time.monotonic() < deadline and driver.poll() is None and len(before) < 2:
        started = list((home / "runs").glob("*/sweep_started.json")) if (home / "runs").exists() else []
        parent = json.loads(started[0].read_text())["mlflow_run_id"] if started else None
        before = _finished_children(home, parent) if parent else []
        time.sleep(0.5)
        if len(before) >= 2:  # kill when no trial has finished for 1.5 s: Tune saves its state every second
            time.sleep(1.5)
            if len(_finished_children(home, parent)) != len(before):
                before = []
    assert driver.poll() is None and len(before) >= 2, "the sweep ended (or never got two trials done) before the kill"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = _finished_children(home, parent)
    deadline = time.monotonic() + 120
    while sweep_actors() - earlier:
        assert time.monotonic() < deadline, "the killed sweep's trial actors did not go"
        time.sleep(0.5)
    assert len(before) < 4

    resumed = run_cli("tune", str(SKLEARN_SWEEP), *sets, "--resume", "--json", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json_output(resumed)
    results = json.loads((home / "runs" / summary["run_id"] / "tune_results.json").read_text())
    assert results["mlflow_run_id"] == parent and summary["trials"] == 4
    assert [row["state"] for row in results["trials"]] == ["finished"] * 4
    after = _finished_children(home, parent)
    trial_of = lambda run: run.data.tags["raymlp.trial_id"]  # noqa: E731
    assert len(after) == 4 and len({trial_of(run) for run in after}) == 4  # each trial finished once, in all
    assert {run.info.run_id for run in before} <= {run.info.run_id for run in after}  # not run again
    with Catalog(f"sqlite:///{home / 'catalog.db'}") as catalog:
        assert catalog.get_run(summary["run_id"]).status == "succeeded"

    # In a pipe, the sweep says each trial's end as it comes: here the trials it ran after resuming.
    ended = [line for line in resumed.stderr.splitlines() if line.strip().startswith("tune  trial ")]
    assert len(ended) == 4 - len(before) and all(" finished: val_accuracy " in line for line in ended), resumed.stderr[
        -2000:
    ]

    nothing_left = run_cli("tune", str(SKLEARN_SWEEP), *sets, "--resume", cwd=tmp_path, env=env)
    assert nothing_left.returncode == 2 and "no unfinished sweep" in nothing_left.stderr


def test_a_tensorflow_random_sweep_reports_every_epoch_of_every_trial(ray_4_cpus, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from raymlp.storage import resolve_storage

    monkeypatch.setenv("RAYMLP_HOME", str(tmp_path / "home"))
    job = REPO / "jobs" / "wine-tensorflow-sweep.yaml"
    run_job_quietly(job, only=["convert"], reporter=QUIET)
    summary = run_job_quietly(
        job, overrides=["tune.num_samples=2", "tune.max_concurrent=1", "train.epochs=3"], only=["tune"], reporter=QUIET
    )

    results = _sweep_results(summary)
    assert [row["state"] for row in results["trials"]] == ["finished", "finished"]
    assert {"train.optimizer.lr": 0.01, "train.model.dropout": 0.1, "train.batch_size": 16} in [
        row["params"] for row in results["trials"]
    ]
    client = MlflowClient(resolve_storage().tracking_uri)
    for row in results["trials"]:
        history = client.get_metric_history(row["mlflow_run_id"], "val_accuracy")
        assert sorted(point.step for point in history) == [1, 2, 3]
        assert row["metric"] == pytest.approx(max(point.value for point in history))  # the best epoch's
    assert results["best"]["metric"] == max(row["metric"] for row in results["trials"])


def test_pbt_hands_a_poor_trial_a_better_ones_checkpoint_with_new_optimizer_settings(ray_4_cpus, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from raymlp.storage import resolve_storage

    monkeypatch.setenv("RAYMLP_HOME", str(tmp_path / "home"))
    job = REPO / "jobs" / "wine-torch-pbt.yaml"
    run_job_quietly(job, only=["convert"], reporter=QUIET)
    # Synchronous PBT: both trials stop at epoch 2, the worse takes over the better's checkpoint.
    overrides = [
        "tune.num_samples=2",
        "tune.max_concurrent=2",
        "train.epochs=4",
        "tune.scheduler.perturbation_interval=2",
        "tune.scheduler.synch=true",
        "tune.scheduler.resample_probability=0",
    ]

    summary = run_job_quietly(job, overrides=overrides, only=["tune", "register"], reporter=QUIET)

    results = _sweep_results(summary)
    assert [row["state"] for row in results["trials"]] == ["finished", "finished"]
    client = MlflowClient(resolve_storage().tracking_uri)
    runs = _child_runs(results["mlflow_run_id"], "wine-torch-pbt")
    finished = {run.data.tags["raymlp.trial_id"]: run for run in runs if run.info.status == "FINISHED"}
    assert set(finished) == {row["trial"] for row in results["trials"]}
    # Every trial was stopped at the perturbation and went on from a checkpoint in a new run.
    stopped = [run for run in runs if run.info.status == "KILLED"]
    assert len(stopped) == 2 and all(
        run.data.tags["raymlp.trial_outcome"].startswith("PBT stopped this run") for run in stopped
    )
    exploited = [
        trial for trial, run in finished.items() if trial not in run.data.tags["raymlp.started_from_checkpoint"]
    ]
    assert len(exploited) == 1, {
        trial: run.data.tags.get("raymlp.started_from_checkpoint") for trial, run in finished.items()
    }
    [trial] = exploited
    first = next(run for run in stopped if run.data.tags["raymlp.trial_id"] == trial)
    cloned = next(other for other in finished if other != trial)
    # It went on from the other trial's epoch-2 checkpoint, with perturbed optimizer settings, to epoch 4.
    assert cloned in finished[trial].data.tags["raymlp.started_from_checkpoint"]
    assert float(finished[trial].data.params["train.optimizer.lr"]) != pytest.approx(
        float(first.data.params["train.optimizer.lr"])
    )
    lr_of_clone = float(finished[cloned].data.params["train.optimizer.lr"])
    assert float(finished[trial].data.params["train.optimizer.lr"]) in (
        pytest.approx(lr_of_clone * 1.2),
        pytest.approx(lr_of_clone * 0.8),
    )
    history = client.get_metric_history(finished[trial].info.run_id, "val_accuracy")
    assert sorted(point.step for point in history) == [1, 2, 3, 4]
    assert summary.model_version >= 1 and summary.mlflow_run_id == results["best"]["mlflow_run_id"]


def test_a_time_budget_ends_the_sweep_and_the_best_trial_so_far_is_registered(ray_4_cpus, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYMLP_HOME", str(tmp_path / "home"))
    run_job_quietly(SKLEARN_SWEEP, only=["convert"], reporter=QUIET)

    # Long enough for the trial processes to start and a few trials to finish on a slow machine (on the
    # 2-core VM, 121 trials finished within 40 s).
    summary = run_job_quietly(
        SKLEARN_SWEEP,
        overrides=["tune.num_samples=500", "tune.time_budget_s=15"],
        only=["tune", "register"],
        reporter=QUIET,
    )

    results = _sweep_results(summary)
    finished = [row for row in results["trials"] if row["state"] == "finished"]
    assert 1 <= len(finished) < 500 and summary.model_version >= 1
    # The budget covers the trials; the best one's full run and the report come after it.
    assert results["seconds"] - results["best_refit_seconds"] < 15 + 20, results["seconds"]
    assert results["best"]["metric"] == max(row["metric"] for row in finished)


_SHARED_GPU_SWEEP = """
import json, os, socket, sys
import ray
from ray.util.state import list_actors
from raymlp import run_job
from raymlp.context import Reporter

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
# One GPU in Ray's books (this machine has none; the light sklearn trials never touch it).
ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=True, dashboard_port=port, logging_level="ERROR")
job, home = sys.argv[1], sys.argv[2]
os.environ["RAYMLP_HOME"] = home
run_job(job, only=["convert"], reporter=Reporter(quiet=True))
summary = run_job(job, overrides=["tune.num_samples=6", "tune.max_concurrent=2",
                                  "train.scaling.resources_per_worker={CPU: 0.5, GPU: 0.5}"],
                  only=["tune"], reporter=Reporter(quiet=True))
trials = [{"resources": actor.required_resources, "pid": actor.pid}
          for actor in list_actors(filters=[("class_name", "=", "ImplicitFunc")], detail=True, limit=1000)]
print("RESULT " + json.dumps({"run_id": summary.run_id, "trials": trials}))
"""


def test_small_trials_share_one_gpu_by_asking_for_a_fraction_of_it(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "sweep.py"
    script.write_text(_SHARED_GPU_SWEEP)
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")}
    done = subprocess.run(
        [sys.executable, str(script), str(SKLEARN_SWEEP), str(tmp_path / "home")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    found = json.loads(lines[-1][len("RESULT ") :])
    results = json.loads((tmp_path / "home" / "runs" / found["run_id"] / "tune_results.json").read_text())
    assert [row["state"] for row in results["trials"]] == ["finished"] * 6
    # Each trial process held half of the one GPU (and half a CPU): two of them, reused for the six
    # trials (light trials keep their process), held it together.
    # (Tune puts each trial in a placement group: Ray names its resources CPU_group_<id>, ...)
    held = [
        {
            re.sub(r"_group_[0-9a-f]+$", "", name): amount
            for name, amount in trial["resources"].items()
            if re.fullmatch(r"[A-Z]+_group_[0-9a-f]+", name)
        }
        for trial in found["trials"]
    ]
    assert held and all(resources == {"CPU": 0.5, "GPU": 0.5} for resources in held), found["trials"]
    assert len({trial["pid"] for trial in found["trials"]}) == 2
