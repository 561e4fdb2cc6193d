"""The scheduler on the session's Ray: detached actors started from the CLI, cron firings at second resolution as
real Ray jobs, two schedulers on one catalog, one SIGKILLed and restarted by Ray, both stopped over due times
and one started again, a failing run kept in the history and in `raymlp pipelines`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from raymlp.catalog import Catalog

from .conftest import json_output, run_cli

pytestmark = [pytest.mark.integration]

JOB = """version: 1
name: {name}
data:
  source: {{format: csv, path: data/tiny.csv}}
  dataset: {{name: {name}}}
  label: label
schedule:
  concurrency: skip
  overrides: {overrides}
  triggers: {triggers}
"""


def _project(root: Path) -> Path:
    (root / "jobs").mkdir(parents=True)
    (root / "data").mkdir()
    rows = "".join(f"{i},{i * 2},{i % 2}\n" for i in range(40))
    (root / "data" / "tiny.csv").write_text("a,b,label\n" + rows)
    (root / "jobs" / "tiny.yaml").write_text(
        JOB.format(name="tiny", overrides="[]", triggers="[{name: often, cron: '*/4 * * * * *'}]")
    )
    # schedule add checks the job as it is; each run gets the overrides, and this one cannot run
    (root / "jobs" / "broken.yaml").write_text(JOB.format(name="broken", overrides="[data.label=nope]", triggers="[]"))
    return root


def _until(what: str, check, timeout: float = 120.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def test_scheduled_jobs_run_by_themselves_on_the_cluster(tmp_path, ray_4_cpus):
    from ray.job_submission import JobSubmissionClient

    from raymlp import ray_internals
    from raymlp.scheduler.actor import running_names, stop_actor

    project = _project(tmp_path / "project")
    home = tmp_path / ".raymlp"
    env = {"RAYMLP_HOME": str(home), "RAY_ADDRESS": ray_4_cpus, "RAYMLP_SCHEDULER_TICK_S": "0.5"}
    catalog = Catalog(f"sqlite:///{home / 'catalog.db'}")

    def cli(*args: str):
        result = run_cli(*args, cwd=project, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    def tiny(state: str | None = None):
        return [f for f in catalog.list_firings("tiny", limit=1000) if state in (None, f.state)]

    try:
        cli("schedule", "add", "jobs/tiny.yaml")
        cli("schedule", "add", "jobs/broken.yaml")
        for name in ("a", "b"):  # two schedulers on one catalog
            started = json_output(cli("scheduler", "start", "--name", name, "--json"))
            assert started["name"] == name and started["already_running"] is False
        again = json_output(cli("scheduler", "start", "--name", "a", "--json"))
        assert again["already_running"] is True

        _until("two runs of tiny", lambda: len(tiny("succeeded")) >= 2)

        requested = json_output(cli("trigger", "broken", "--reason", "checking the failure path", "--json"))
        assert (requested["trigger"], requested["reason"], requested["state"]) == (
            "request",
            "checking the failure path",
            "pending",
        )
        failed = _until(
            "the broken run to fail",
            lambda: [f for f in catalog.list_firings("broken") if f.state == "failed"],
        )[0]
        assert failed.error.splitlines()[0] == (
            "the run failed (exit code 2): --set data.label=nope: data.label: 'nope' is not a column of "
            "data/tiny.csv (columns: a, b, label)"
        )
        shown = {view["name"]: view for view in json_output(cli("pipelines", "--json"))}
        assert shown["broken"]["last"]["state"] == "failed" and "'nope'" in shown["broken"]["last_error"]
        assert shown["tiny"]["next_trigger"] == "often" and shown["tiny"]["state"] in ("scheduled", "running")

        # SIGKILL one scheduler: Ray starts it again, and it carries on from the catalog
        statuses = {s["name"]: s for s in json_output(cli("scheduler", "status", "--json"))}
        os.kill(statuses["b"]["pid"], signal.SIGKILL)
        _until(
            "scheduler b restarted",
            lambda: any(
                s["name"] == "b" and s.get("pid") not in (None, statuses["b"]["pid"])
                for s in json_output(run_cli("scheduler", "status", "--json", cwd=project, env=env))
            ),
            every=2,
        )

        # no scheduler over two due times: the missed ones run once when one is back
        _until("tiny idle", lambda: not tiny("running") and not tiny("pending"), every=0.2)
        cli("scheduler", "stop", "--name", "a")
        cli("scheduler", "stop", "--name", "b")
        before = {f.id for f in tiny()}
        time.sleep(9)
        assert {f.id for f in tiny()} == before  # nothing fires without a scheduler
        cli("scheduler", "start", "--name", "a")
        # (a due time that passed between `schedule add` and the first scheduler's start was caught up the same way)
        caught_up = _until(
            "the catch-up run", lambda: [f for f in tiny() if f.id not in before and f.details.get("missed")]
        )
        assert len(caught_up) == 1 and caught_up[0].details["missed"] >= 1
        assert "run once (catch_up: once)" in caught_up[0].reason
        _until("the catch-up run to succeed", lambda: catalog.get_firing(caught_up[0].id).state == "succeeded")
    finally:
        for name in running_names():
            stop_actor(name)

    history = tiny()
    due_times = [f.due_at for f in history]
    assert len(due_times) == len(set(due_times))  # none doubled, though two schedulers ran
    started = [f for f in history if f.submission_id]
    assert {f.state for f in history} <= {"succeeded", "skipped", "running", "pending"}  # pending: due as it stopped
    assert all("still running (concurrency: skip)" in (f.error or "") for f in history if f.state == "skipped")
    client = JobSubmissionClient(ray_internals.connected_dashboard_url())
    ray_jobs = {
        job.submission_id: job for job in client.list_jobs() if (job.metadata or {}).get("raymlp.job") == "tiny"
    }
    assert set(ray_jobs) == {f.submission_id for f in started}  # one Ray job per started firing
    one = ray_jobs[caught_up[0].submission_id]
    assert one.metadata["raymlp.trigger"] == "often" and one.metadata["raymlp.reason"] == caught_up[0].reason
    assert one.metadata["raymlp.fired_by"].startswith("a@")
    catalog.close()


def test_new_files_and_new_rows_each_become_one_incremental_version(tmp_path, ray_4_cpus):
    import shutil

    import sqlalchemy as sa

    from raymlp.catalog import with_installed_driver
    from raymlp.scheduler.actor import running_names, stop_actor

    from ..conftest import POSTGRES_URL, require_service

    require_service(POSTGRES_URL, "postgresql")
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    landing = project / "data" / "landing"
    landing.mkdir(parents=True)
    (landing / "first.csv").write_text("a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(10)))
    warehouse = f"sqlite:///{tmp_path / 'warehouse.db'}"
    common = "  label: label\nschedule:\n  triggers: [{name: %s}]\n"
    (project / "jobs" / "landing.yaml").write_text(
        "version: 1\nname: landing\ndata:\n  source: {format: csv, path: data/landing/*.csv}\n"
        f"  collect: {{url: '{warehouse}', table: landing, mode: append}}\n  dataset: {{name: landing}}\n"
        + common
        % "files, new_files: {every: 1s}"
    )
    table = f"raymlp_scheduled_events_{os.getpid()}"
    engine = sa.create_engine(with_installed_driver(sa.engine.make_url(POSTGRES_URL)))
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        connection.execute(sa.text(f"CREATE TABLE {table} (id INTEGER, a DOUBLE PRECISION, label INTEGER)"))
        connection.execute(sa.text(f"INSERT INTO {table} SELECT g, g * 0.5, g % 2 FROM generate_series(1, 20) g"))
    (project / "jobs" / "events.yaml").write_text(
        f"version: 1\nname: events\ndata:\n  source: {{format: sql, sql: {{url: '{POSTGRES_URL}', table: {table}}}}}\n"
        f"  collect: {{url: '{warehouse}', table: events, mode: append}}\n  dataset: {{name: events}}\n"
        + common
        % "rows, new_rows: {column: id, every: 1s}"
    )
    home = tmp_path / ".raymlp"
    env = {"RAYMLP_HOME": str(home), "RAY_ADDRESS": ray_4_cpus, "RAYMLP_SCHEDULER_TICK_S": "0.5"}
    catalog = Catalog(f"sqlite:///{home / 'catalog.db'}")

    def cli(*args: str):
        result = run_cli(*args, cwd=project, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    def versions(name: str):
        return [item for item in catalog.list_dataset_versions() if item.name == name]

    try:
        for job in ("landing", "events"):
            cli("run", f"jobs/{job}.yaml")
            cli("schedule", "add", f"jobs/{job}.yaml")
        cli("scheduler", "start", "--name", "data")
        try:
            _until("the first looks", lambda: all(t.state.get("started") for t in catalog.list_triggers()), 60)
        except AssertionError:
            raise AssertionError(run_cli("scheduler", "status", "--json", cwd=project, env=env).stdout) from None

        shutil.copy(landing / "first.csv", landing / "first-again.csv")  # the same bytes: nothing
        (landing / "second.csv").write_text("a,b,label\n100,1,1\n101,2,0\n102,3,1\n")
        with engine.begin() as connection:
            connection.execute(sa.text(f"INSERT INTO {table} SELECT g, g * 0.5, g % 2 FROM generate_series(21, 25) g"))
        second = _until("landing@2", lambda: versions("landing")[1:], timeout=180)[0]
        events = _until("events@2", lambda: versions("events")[1:], timeout=180)[0]
        assert (second.row_count, second.source["parent"]) == (13, "landing@1")
        assert [(item["rows"], item["source"].endswith("second.csv")) for item in second.source["appended"]] == [
            (3, True)
        ]
        assert (events.row_count, events.source["parent"]) == (25, "events@1")
        assert [item["rows"] for item in events.source["appended"]] == [5]
        shown = json_output(cli("data", "show", "landing@2", "--json"))
        assert any(step.startswith("parent landing@1 + 3 rows appended from ") for step in shown["lineage"])

        (landing / "second-copy.csv").write_bytes((landing / "second.csv").read_bytes())
        time.sleep(4)  # several looks: the copy's content was collected
        assert len(versions("landing")) == 2
        fired = {(f.pipeline, f.trigger, f.state) for f in catalog.list_firings(limit=100)}
        assert fired == {("landing", "files", "succeeded"), ("events", "rows", "succeeded")}
        assert len(catalog.list_firings(limit=100)) == 2
        assert catalog.list_firings("events")[0].reason == f"5 new row(s) in {table} past id = 20 (up to 25)"
    finally:
        for name in running_names():
            stop_actor(name)
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()
        catalog.close()


def test_bad_candidates_stop_at_the_gates_and_say_why(tmp_path, ray_4_cpus):
    """Three scheduled runs: the first is promoted; the second, a model too weak to learn, is worse than the
    champion on the same test rows; the third, trained on shuffled labels, misses the absolute bar. The alias
    stays on the first, and `models why` and the history say why."""
    import csv
    import random

    from raymlp.scheduler.actor import running_names, stop_actor

    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "data").mkdir()
    home = tmp_path / ".raymlp"
    env = {"RAYMLP_HOME": str(home), "RAY_ADDRESS": ray_4_cpus, "RAYMLP_SCHEDULER_TICK_S": "0.5"}
    assert run_cli("data", "sample", "wine", "-o", "data/wine.csv", cwd=project, env=env).returncode == 0

    def job(strength: float, bar: float) -> None:
        (project / "jobs" / "wine.yaml").write_text(
            "version: 1\nname: wine-gated\ndata:\n  source: {format: csv, path: data/wine.csv}\n"
            "  dataset: {name: wine-gated}\n  label: target\n  split: {validation: 0.2, test: 0.2, seed: 7}\n"
            "preprocess:\n  - {type: standard_scaler, columns: [alcohol, malic_acid, ash, flavanoids, proline]}\n"
            "train:\n  framework: sklearn\n  model: {type: sklearn.linear_model.LogisticRegression, "
            f"params: {{max_iter: 500, C: {strength:.6f}}}}}\n"
            f"register:\n  model: wine-gated\n  alias: champion\n  require: {{test_accuracy: '>= {bar}'}}\n"
            "  beat_champion: {metric: accuracy, max_drop: 0.02}\n"
        )

    catalog = Catalog(f"sqlite:///{home / 'catalog.db'}")

    def cli(*args: str):
        result = run_cli(*args, cwd=project, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    def run_once(reason: str):
        cli("schedule", "add", "jobs/wine.yaml")  # a new snapshot of the project as it is now
        firing = json_output(cli("trigger", "wine-gated", "--reason", reason, "--json"))
        return _until(
            f"firing {firing['id']}",
            lambda: (
                catalog.get_firing(firing["id"]).state in ("succeeded", "failed") and catalog.get_firing(firing["id"])
            ),
            timeout=240,
        )

    try:
        cli("scheduler", "start", "--name", "gate")
        job(strength=1.0, bar=0.3)
        first = run_once("first model")
        assert first.state == "succeeded" and first.details["outcome"] == "wine-gated:1: alias 'champion' -> version 1"
        job(strength=0.00001, bar=0.3)  # all but blind: it learns the majority class
        weak = run_once("a weak model")
        job(strength=1.0, bar=0.8)
        rows = list(csv.reader((project / "data" / "wine.csv").open()))
        label = rows[0].index("target")
        shuffled = [row[label] for row in rows[1:]]
        random.Random(3).shuffle(shuffled)
        for row, value in zip(rows[1:], shuffled, strict=True):
            row[label] = value
        with (project / "data" / "wine.csv").open("w", newline="") as out:
            csv.writer(out).writerows(rows)
        noise = run_once("shuffled labels")
    finally:
        for name in running_names():
            stop_actor(name)
    assert weak.state == noise.state == "succeeded"  # the runs worked; the gates stopped the models
    assert weak.details["outcome"].startswith("wine-gated:2: alias 'champion' not moved: champion: accuracy ")
    assert noise.details["outcome"].startswith("wine-gated:3: alias 'champion' not moved: test_accuracy is ")
    models = {m["version"]: m["aliases"] for m in json_output(cli("models", "list", "--json"))}
    assert models == {1: ["champion"], 2: [], 3: []}

    why = json_output(cli("models", "why", "wine-gated:2", "--json"))
    assert [(item["step"], item["outcome"]) for item in why["chain"]] == [
        ("trigger", "info"),
        ("data", "info"),
        ("run", "info"),
        ("gate", "passed"),
        ("gate", "failed"),
        ("promotion", "stopped"),
    ]
    assert why["chain"][0]["summary"].startswith(
        f"firing {weak.id} (request): a weak model [Ray job raymlp-wine-gated-"
    )
    gate = why["chain"][4]
    assert gate["details"]["champion_version"] == 1 and gate["details"]["drop"] > 0.02
    assert gate["summary"].startswith("champion: accuracy ") and "beyond max_drop 0.02" in gate["summary"]

    why = json_output(cli("models", "why", "wine-gated:3", "--json"))
    assert [(item["step"], item["outcome"]) for item in why["chain"]][3:] == [
        ("gate", "failed"),
        ("promotion", "stopped"),
    ]
    assert why["chain"][1]["summary"] == "wine-gated@2"  # the weak model reused version 1: same rows
    text = cli("models", "why", "wine-gated:3").stdout
    assert "promotion  stopped: alias 'champion' not moved: test_accuracy is " in text
    history = cli("schedule", "history", "wine-gated").stdout
    assert "shuffled labels" in history and "not moved" in history
    catalog.close()
