"""`raymlp train --resume RUN` after the driver of RUN was killed mid-training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import REPO, json_output, run_cli

pytestmark = [pytest.mark.integration]

EPOCHS = 12


def _job(folder, epochs=EPOCHS):
    text = (REPO / "jobs" / "wine-torch.yaml").read_text()
    text = text.replace("  early_stopping: {metric: val_loss, mode: min, patience: 8}\n", "")
    text = text.replace("epochs: 30", f"epochs: {epochs}").replace("num_workers: 2", "num_workers: 1")
    path = folder / "job.yaml"
    path.write_text(text)
    return path


def _checkpoints(home):
    return sorted(str(path) for path in (home / "ray_results").rglob("checkpoint_*") if path.is_dir())


def _registered_checkpoints(home) -> int:
    """Checkpoints Ray Train's controller has registered (its snapshot, which a resumed run reads).
    A worker's checkpoint folder appears before the controller registers it: under load the
    folders of two epochs were there while the snapshot still held none, and the run resumed from
    scratch."""
    count = 0
    for snapshot in (home / "ray_results").rglob("checkpoint_manager_snapshot.json"):
        try:
            count += len(json.loads(snapshot.read_text()).get("checkpoint_results") or [])
        except (OSError, ValueError):  # being replaced right now
            continue
    return count


def _train_actors(classes=("TrainController", "RayTrainWorker")) -> set[str]:
    from ray.util.state import list_actors

    return {
        actor.actor_id
        for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
        if actor.class_name in classes
    }


def _wait_for_the_dead_runs_actors_to_go(earlier: set[str], timeout: float = 120.0) -> None:
    """Ray ends a dead driver's actors once it notices; until then its controller goes on writing
    (and, keeping the newest N, deleting) checkpoints under the run's folder, which a resume started
    meanwhile would read from under it. Wait for them (the Ray Train actors not in `earlier`) to be
    gone, as a user resuming later would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _train_actors() - earlier:
            return
        time.sleep(0.5)
    raise AssertionError(f"the killed driver's Ray Train actors were still alive after {timeout:.0f} s")


def test_a_run_whose_driver_died_resumes_from_its_checkpoint(ray_4_cpus, tmp_path):
    from mlflow.tracking import MlflowClient

    from raymlp.catalog import Catalog

    home = tmp_path / "home"
    env = {"RAYMLP_HOME": str(home), "RAY_ADDRESS": ray_4_cpus}
    job = _job(tmp_path)
    assert run_cli("data", "convert", str(job), cwd=tmp_path, env=env).returncode == 0
    earlier = _train_actors()
    driver = subprocess.Popen(
        [sys.executable, "-m", "raymlp", "train", str(job)],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while (
        (len(_checkpoints(home)) < 2 or _registered_checkpoints(home) < 1)
        and driver.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert driver.poll() is None, "training ended before the driver could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    _wait_for_the_dead_runs_actors_to_go(earlier)

    with Catalog(f"sqlite:///{home / 'catalog.db'}") as catalog:
        [run] = [run for run in catalog.list_runs("wine-torch") if "train" in run.stages]
    assert run.status == "running"  # nobody lived to finish it

    changed = run_cli("train", str(job), "--resume", run.id, "--set", "train.epochs=13", cwd=tmp_path, env=env)
    assert changed.returncode == 2 and "train.epochs" in changed.stderr

    resumed = run_cli("train", str(job), "--resume", run.id, "--json", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json_output(resumed)
    assert summary["run_id"] == run.id and summary["metrics"]["test_accuracy"] >= 0.9

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    attempts = {point.step: point.value for point in client.get_metric_history(summary["mlflow_run_id"], "attempt")}
    assert sorted(attempts) == list(range(1, EPOCHS + 1))  # every epoch logged once, in the run it started
    resumed_at = min(epoch for epoch, attempt in attempts.items() if attempt >= 1)
    assert resumed_at > 1 and all(attempts[epoch] == 0 for epoch in range(1, resumed_at))
    with Catalog(f"sqlite:///{home / 'catalog.db'}") as catalog:
        assert catalog.get_run(run.id).status == "succeeded"
    again = run_cli("train", str(job), "--resume", run.id, cwd=tmp_path, env=env)
    assert again.returncode == 2 and "nothing to resume" in again.stderr


def test_resume_is_refused_while_the_runs_controller_is_alive(ray_4_cpus, tmp_path):
    """A resume while the run's Ray Train controller still trains (its driver alive, here) would train
    into the same checkpoints: refused, naming the run, and the running training is left alone."""
    from raymlp.catalog import Catalog

    home = tmp_path / "home"
    env = {"RAYMLP_HOME": str(home), "RAY_ADDRESS": ray_4_cpus}
    job = _job(tmp_path, epochs=100_000)
    assert run_cli("data", "convert", str(job), cwd=tmp_path, env=env).returncode == 0
    earlier = _train_actors()
    driver = subprocess.Popen(
        [sys.executable, "-m", "raymlp", "train", str(job)],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while (
            not _train_actors(("TrainController",)) - earlier and driver.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert driver.poll() is None, "training ended before its resume could be tried"
        with Catalog(f"sqlite:///{home / 'catalog.db'}") as catalog:
            [run] = [run for run in catalog.list_runs("wine-torch") if "train" in run.stages]
        refused = run_cli("train", str(job), "--resume", run.id, cwd=tmp_path, env=env, timeout=120)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert f"--resume: run {run.id} is still training: its Ray Train controller is alive" in refused.stderr
        assert driver.poll() is None  # the training that runs was left alone
        with Catalog(f"sqlite:///{home / 'catalog.db'}") as catalog:
            assert catalog.get_run(run.id).status == "running"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        _wait_for_the_dead_runs_actors_to_go(earlier)
