"""What the Ray dashboard shows of a raymlp job: its stages' metrics on the Prometheus endpoint of
Ray's metrics agent (what the dashboard's Metrics view and Grafana read), tagged with the job and
stage, and its Ray tasks named after the job and stage."""

from __future__ import annotations

import os
import re
import time

import pytest
import requests
import yaml

from .conftest import json_output, run_cli

pytestmark = [pytest.mark.integration]

JOB = "metrics-wine"


def _job_file(columns: list[str]) -> dict:
    """A small job: the wine CSV collected into SQLite, converted (wines over 14% alcohol set
    aside), and a sweep of two light trials of a logistic regression, whose best is trained again."""
    schema = {name: {"type": "float"} for name in columns if name != "target"}
    schema["alcohol"]["max"] = 14.0
    schema["target"] = {"type": "string", "nullable": False}
    return {
        "version": 1,
        "name": JOB,
        "data": {
            "source": {"format": "csv", "path": "data/wine.csv"},
            "collect": {"url": "sqlite:///${RAYMLP_HOME}/warehouse.db", "table": "wine_raw", "mode": "replace"},
            "dataset": {"name": "wine-metrics"},
            "schema": {"on_error": "quarantine", "columns": schema},
            "label": "target",
            "split": {"validation": 0.2, "test": 0.2, "seed": 7, "stratify": True},
        },
        "train": {
            "framework": "sklearn",
            "model": {"type": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}},
            "checkpoint": {"metric": "val_accuracy", "mode": "max"},
            "seed": 7,
        },
        "tune": {
            "metric": "val_accuracy",
            "mode": "max",
            "num_samples": 2,
            "max_concurrent": 2,
            "search": "random",
            "seed": 7,
            "space": {"train.model.params.C": {"loguniform": [0.1, 10.0]}},
        },
    }


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample of a Prometheus text page."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            samples.append((match["name"], dict(_LABEL.findall(match["labels"] or "")), float(match["value"])))
    return samples


def _raymlp_metrics(wanted: dict[tuple[str, ...], float], timeout_s: float = 30) -> dict[tuple[str, ...], float]:
    """Per (Prometheus name, stage[, status]) of this test's job: the value summed over the processes that
    reported it, scraped from every node's metrics agent until each of `wanted` has at least its
    value (Ray exports a process's metrics every few seconds, and when it exits)."""
    import ray

    ports = {node["MetricsExportPort"] for node in ray.nodes() if node["Alive"]}
    assert ports, "Ray reports no metrics export port"
    deadline, found = time.monotonic() + timeout_s, {}
    while True:
        now: dict[tuple[str, ...], float] = {}
        for port in ports:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            for name, labels, value in _samples(text):
                if name.startswith("ray_raymlp_") and labels.get("job") == JOB:
                    key = (name, labels["stage"], labels["status"]) if "status" in labels else (name, labels["stage"])
                    now[key] = now.get(key, 0.0) + value
        found.update(now)  # a gauge ages out a while after its process exits: keep what was seen
        if all(found.get(key, 0.0) >= value for key, value in wanted.items()) or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_a_jobs_stages_publish_metrics_and_name_their_tasks(ray_4_cpus, tmp_path):
    from ray.util.state import list_tasks

    from raymlp.data.sources import sklearn_frame

    (tmp_path / "data").mkdir()
    wines = sklearn_frame("wine")
    wines.to_csv(tmp_path / "data" / "wine.csv", index=False)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(_job_file(list(wines.columns)), sort_keys=False))
    set_aside = int((wines["alcohol"] > 14.0).sum())
    assert 0 < set_aside < len(wines)
    # Ranges read as Ray tasks, as on a cluster of several nodes, so that they have names to show.
    env = {"RAYMLP_HOME": str(tmp_path / ".raymlp"), "RAY_ADDRESS": ray_4_cpus, "RAYMLP_READ_ON_RAY": "1"}

    ran = run_cli("run", "job.yaml", "--only", "collect,convert,tune", "--json", cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = json_output(ran)
    assert list(summary["stages"]) == ["collect", "convert", "tune"]

    wanted = {
        ("ray_raymlp_rows_read_total", "collect"): len(wines),
        ("ray_raymlp_rows_collected_total", "collect"): len(wines),
        ("ray_raymlp_rows_converted_total", "convert"): len(wines) - set_aside,
        ("ray_raymlp_rows_quarantined_total", "convert"): set_aside,
        ("ray_raymlp_train_epochs_finished_total", "train"): 1,
        ("ray_raymlp_train_samples_per_second", "train"): 1e-9,
        ("ray_raymlp_tune_trials_finished_total", "tune", "finished"): 2,
    }
    found = _raymlp_metrics(wanted)
    for key, value in wanted.items():
        assert key in found, f"{key} never reached Ray's metrics agent; raymlp metrics of {JOB}: {found}"
        assert found[key] >= value, (key, found[key], value)
    # The counters count once: exactly the rows, and the one epoch of the best trial's run (light
    # trials fit in their Tune process and report no epochs).
    assert found[("ray_raymlp_rows_collected_total", "collect")] == len(wines)
    assert found[("ray_raymlp_rows_quarantined_total", "convert")] == set_aside
    assert found[("ray_raymlp_train_epochs_finished_total", "train")] == 1

    run = summary["best_trial"]["raymlp_run_id"][:8]  # the best light trial's settings trained again as a run
    names = {
        f"{JOB}/collect: read range 1/1",
        f"{JOB}/train: fit LogisticRegression (run {run})",
    }
    for name in names:
        tasks = list_tasks(filters=[("name", "=", name)], limit=100, raise_on_missing_output=False)
        assert [task.state for task in tasks] == ["FINISHED"], (name, tasks)

    # The driver's Ray job says which raymlp job and stages it runs (the dashboard's Jobs view).
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(os.environ["RAY_API_SERVER_ADDRESS"]).list_jobs()
    labelled = [job.metadata for job in jobs if (job.metadata or {}).get("raymlp.job") == JOB]
    assert [(meta["raymlp.stages"], meta["raymlp.run_id"]) for meta in labelled] == [
        ("collect,convert,tune", summary["run_id"])
    ]
