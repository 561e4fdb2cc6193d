"""The scheduler's decisions on a real catalog (SQLite): due times, catch-up, two schedulers, concurrency policies,
locks; the `schedule` section's errors; the KubeRay and Airflow exports.

The Ray Jobs API is the one thing stood in for here (`RecordingLauncher`, which records submissions and answers
states the test sets): tests/integration/test_scheduler.py runs the same scheduler against real Ray jobs.
"""

from __future__ import annotations

import ast
import datetime
import gzip
import os
import subprocess
import sys
import threading
from pathlib import Path

import jsonschema
import pytest
import yaml

from raymlp.catalog import Catalog
from raymlp.errors import UsageError
from raymlp.scheduler.engine import ABANDONED_START_S, Scheduler
from raymlp.scheduler.times import due_between, next_due

UTC = datetime.UTC
T0 = datetime.datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
CRD = Path(__file__).resolve().parents[1] / "data" / "kuberay" / "ray.io_raycronjobs.yaml.gz"


class Clock:
    def __init__(self, moment: datetime.datetime) -> None:
        self.now = moment

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


class RecordingLauncher:
    """Records submissions; a submitted job RUNs until the test finishes it."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.states: dict[str, tuple[str, str | None]] = {}
        self.stopped: list[str] = []
        self.checks: list[tuple[list[str], str]] = []
        self.refuse: str | None = None
        self.lock = threading.Lock()

    def submit(self, pipeline, firing, submission_id) -> None:
        if self.refuse:
            raise RuntimeError(self.refuse)
        with self.lock:
            assert submission_id not in self.submitted, f"{submission_id} submitted twice"
            self.submitted.append(submission_id)
            self.states[submission_id] = ("RUNNING", None)

    def submit_check(self, pipeline, arguments, submission_id) -> None:
        self.checks.append((arguments, submission_id))
        self.states[submission_id] = ("RUNNING", None)

    def status(self, submission_id):
        return self.states.get(submission_id, ("MISSING", None))

    def stop(self, submission_id) -> None:
        self.stopped.append(submission_id)
        self.states[submission_id] = ("STOPPED", "stopped")

    def finish(self, state: str = "SUCCEEDED", message: str | None = None) -> None:
        for name, (current, _) in list(self.states.items()):
            if current == "RUNNING":
                self.states[name] = (state, message)


@pytest.fixture
def catalog(tmp_path):
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as opened:
        yield opened


def add(catalog: Catalog, clock: Clock, *triggers: dict, **settings) -> None:
    """A pipeline `job` whose triggers count from the clock's time."""
    import raymlp.catalog.store as store

    saved = store.utcnow
    store.utcnow = clock  # the triggers' anchor is when they were added
    try:
        catalog.put_pipeline(
            "job",
            "jobs/job.yaml",
            "/p.zip",
            "0" * 64,
            {"concurrency": "skip", "catch_up": "once", **settings},
            [{"kind": "cron" if "cron" in t else "every", **t} for t in triggers],
        )
    finally:
        store.utcnow = saved


def firings(catalog: Catalog) -> list[tuple[str, str, str | None]]:
    return [
        (f.trigger, f.state, f.due_at.strftime("%H:%M:%S") if f.due_at else None)
        for f in reversed(catalog.list_firings())
    ]


# --------------------------------------------------------------------------- times


def test_cron_with_seconds_and_a_time_zone_across_daylight_saving():
    every_ten_seconds = {"cron": "*/10 * * * * *"}
    assert next_due(every_ten_seconds, T0, T0 + datetime.timedelta(seconds=3)) == T0 + datetime.timedelta(seconds=10)
    two_thirty_berlin = {"cron": "30 2 * * *", "timezone": "Europe/Berlin"}
    winter = next_due(two_thirty_berlin, T0, datetime.datetime(2026, 12, 7, 12, tzinfo=UTC))
    assert winter == datetime.datetime(2026, 12, 8, 1, 30, tzinfo=UTC)  # CET is UTC+1
    summer = next_due(two_thirty_berlin, T0.replace(month=1), datetime.datetime(2026, 7, 1, 12, tzinfo=UTC))
    assert summer == datetime.datetime(2026, 7, 2, 0, 30, tzinfo=UTC)  # CEST is UTC+2
    # the schedule's zone applies where the trigger names none
    assert next_due({"cron": "0 9 * * *"}, T0, T0, "America/New_York") == datetime.datetime(2026, 12, 7, 14, tzinfo=UTC)


def test_intervals_count_from_when_the_trigger_was_added():
    anchor = T0 + datetime.timedelta(microseconds=700)
    every = {"every": "30s"}
    assert next_due(every, anchor, anchor) == T0 + datetime.timedelta(seconds=30)
    due = due_between(every, anchor, None, T0 + datetime.timedelta(seconds=95))
    assert (due.count, due.latest) == (3, T0 + datetime.timedelta(seconds=90))
    assert (
        due_between(every, anchor, T0 + datetime.timedelta(seconds=90), T0 + datetime.timedelta(seconds=95)).count == 0
    )
    years = due_between({"every": "1s"}, anchor, None, T0 + datetime.timedelta(days=400))
    assert years.count == 400 * 86400 and years.latest == T0 + datetime.timedelta(days=400)
    down = due_between({"cron": "*/2 * * * * *"}, T0, None, T0 + datetime.timedelta(days=2, seconds=7))
    assert down.count >= 10_000 and down.latest == T0 + datetime.timedelta(days=2, seconds=6)  # counted up to a cap


# --------------------------------------------------------------------------- firing


def test_each_due_time_fires_once_and_runs_as_one_ray_job(catalog):
    clock, launcher = Clock(T0), RecordingLauncher()
    add(catalog, clock, {"name": "tick", "cron": "*/5 * * * * *"})
    scheduler = Scheduler(catalog, launcher, "a", clock)
    for _ in range(3):
        scheduler.tick()  # nothing due yet: the trigger counts from T0
    assert firings(catalog) == []
    clock.advance(5)
    scheduler.tick()
    scheduler.tick()
    assert firings(catalog) == [("tick", "running", "12:00:05")]
    assert len(launcher.submitted) == 1
    launcher.finish()
    clock.advance(5)
    scheduler.tick()
    assert firings(catalog) == [("tick", "succeeded", "12:00:05"), ("tick", "running", "12:00:10")]
    history = catalog.list_firings()
    assert history[0].reason == "cron '*/5 * * * * *' due at 2026-12-07 12:00:10 UTC" and history[0].fired_by == "a"
    assert scheduler.errors == []


def test_two_schedulers_on_one_catalog_fire_each_time_once(catalog):
    clock, launcher = Clock(T0), RecordingLauncher()
    add(catalog, clock, {"name": "tick", "cron": "* * * * * *"}, concurrency="queue")
    first, second = Scheduler(catalog, launcher, "a", clock), Scheduler(catalog, launcher, "b", clock)
    for _ in range(20):
        clock.advance(1)
        threads = [threading.Thread(target=scheduler.tick) for scheduler in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        launcher.finish()
    due_times = [due for _, _, due in firings(catalog)]
    assert len(due_times) == len(set(due_times)) == 20  # every second once: none lost, none doubled
    assert len(launcher.submitted) == len(set(launcher.submitted))  # no run started twice
    assert {f.fired_by for f in catalog.list_firings()} <= {"a", "b"}
    assert first.errors == second.errors == []


def test_missed_firings_run_once_after_downtime_or_are_dropped(catalog, tmp_path):
    clock, launcher = Clock(T0), RecordingLauncher()
    add(catalog, clock, {"name": "tick", "every": "10s"})
    scheduler = Scheduler(catalog, launcher, "a", clock)
    clock.advance(10)
    scheduler.tick()
    launcher.finish()
    clock.advance(65)  # down from 12:00:10 to 12:01:15: 12:00:20 ... 12:01:10 missed
    Scheduler(catalog, launcher, "restarted", clock).tick()
    latest = catalog.list_firings()[0]
    assert (latest.due_at, latest.state, latest.details) == (
        T0 + datetime.timedelta(seconds=70),
        "running",
        {"missed": 5},
    )
    assert "6 firings missed while no scheduler ran" in latest.reason and "run once (catch_up: once)" in latest.reason
    assert len(catalog.list_firings()) == 2

    with Catalog(f"sqlite:///{tmp_path / 'other.db'}") as other:
        add(other, clock, {"name": "hourly", "every": "1h"}, catch_up="none")
        clock.advance(3.5 * 3600)  # down for 3.5 hours: the last due time is half an hour old
        Scheduler(other, launcher, "a", clock).tick()
        dropped = other.list_firings()
        assert [(f.state, f.details) for f in dropped] == [("skipped", {"missed": 2})]
        assert "every 1h: 3 firing(s) missed while no scheduler ran, dropped (catch_up: none)" == dropped[0].reason
        clock.advance(1800)  # back on time: the next one runs
        Scheduler(other, launcher, "a", clock).tick()
        assert other.list_firings()[0].state == "running"


@pytest.mark.parametrize("policy", ["skip", "queue", "replace"])
def test_a_firing_while_the_last_run_runs_follows_the_policy(catalog, policy):
    clock, launcher = Clock(T0), RecordingLauncher()
    add(catalog, clock, {"name": "tick", "every": "10s"}, concurrency=policy)
    scheduler = Scheduler(catalog, launcher, "a", clock)
    clock.advance(10)
    scheduler.tick()  # the first run starts and keeps running
    clock.advance(10)
    scheduler.tick()
    request = catalog.add_firing("job", "request", "by hand", "me")
    scheduler.tick()
    states = [(f.trigger, f.state) for f in reversed(catalog.list_firings())]
    if policy == "skip":
        assert states == [("tick", "running"), ("tick", "skipped"), ("request", "skipped")]
        assert catalog.get_firing(request.id).error == "firing 1 of job was still running (concurrency: skip)"
        assert len(launcher.submitted) == 1
    elif policy == "queue":
        assert states == [("tick", "running"), ("tick", "pending"), ("request", "pending")]
        launcher.finish()
        scheduler.tick()  # the run ends: the oldest waiting firing starts, the other waits on
        assert [f.state for f in reversed(catalog.list_firings())] == ["succeeded", "running", "pending"]
        launcher.finish()
        scheduler.tick()
        assert [f.state for f in reversed(catalog.list_firings())] == ["succeeded", "succeeded", "running"]
    else:
        assert states == [("tick", "replaced"), ("tick", "replaced"), ("request", "running")]
        assert launcher.stopped == launcher.submitted[:2]
        assert "stopped for firing 2 (tick) (concurrency: replace)" in catalog.get_firing(1).error
    assert len(catalog.list_locks()) == 1


def test_a_failed_run_or_submission_is_kept_with_its_reason_and_frees_the_job(catalog):
    clock, launcher = Clock(T0), RecordingLauncher()
    add(catalog, clock, {"name": "tick", "every": "10s"})
    scheduler = Scheduler(catalog, launcher, "a", clock)
    clock.advance(10)
    scheduler.tick()
    launcher.finish("FAILED", "the run failed (exit code 1): error: data.source.path: no file matches")
    scheduler.tick()
    failed = catalog.get_firing(1)
    assert (failed.state, failed.error) == (
        "failed",
        "the run failed (exit code 1): error: data.source.path: no file matches",
    )
    assert catalog.list_locks() == []
    launcher.refuse = "the cluster refused the job: runtime_env invalid"
    clock.advance(10)
    scheduler.tick()
    refused = catalog.get_firing(2)
    assert (
        refused.state == "failed"
        and refused.error == "could not submit: the cluster refused the job: runtime_env invalid"
    )
    assert catalog.list_locks() == []
    from raymlp.scheduler.pipelines import views

    view = views(catalog, clock())[0]
    assert (view.last.id, view.last.state, view.last_error) == (2, "failed", refused.error)
    assert view.next_run == T0 + datetime.timedelta(seconds=30)


def test_a_scheduler_that_died_mid_start_is_taken_over(catalog):
    clock, launcher = Clock(T0), RecordingLauncher()
    add(catalog, clock, {"name": "tick", "every": "1h"})
    firing = catalog.add_firing("job", "request", "by hand", "me")
    assert catalog.acquire_lock("job", firing.id, "dead scheduler")  # took the lock, died before submitting
    scheduler = Scheduler(catalog, launcher, "a", clock)
    scheduler.tick()
    assert catalog.get_firing(firing.id).state == "pending"  # maybe still starting: not taken over yet
    import raymlp.catalog.store as store

    saved, store.utcnow = store.utcnow, lambda: T0 - datetime.timedelta(seconds=ABANDONED_START_S + 1)
    try:
        catalog.release_lock("job", firing.id)
        catalog.acquire_lock("job", firing.id, "dead scheduler")
    finally:
        store.utcnow = saved
    scheduler.tick()
    assert catalog.get_firing(firing.id).state == "running" and len(launcher.submitted) == 1


def test_paused_jobs_do_not_fire_and_resume_without_making_up(catalog):
    clock, launcher = Clock(T0), RecordingLauncher()
    add(catalog, clock, {"name": "tick", "every": "10s"})
    scheduler = Scheduler(catalog, launcher, "a", clock)
    catalog.set_pipeline_paused("job", True)
    clock.advance(100)
    scheduler.tick()
    assert firings(catalog) == []
    import raymlp.catalog.store as store

    saved, store.utcnow = store.utcnow, clock
    try:
        catalog.set_pipeline_paused("job", False)
    finally:
        store.utcnow = saved
    scheduler.tick()
    assert firings(catalog) == []
    clock.advance(10)
    scheduler.tick()
    assert firings(catalog) == [("tick", "running", "12:01:50")]
    with pytest.raises(UsageError, match=r"no scheduled job named 'nope' \(scheduled: job\)"):
        catalog.set_pipeline_paused("nope", True)


# --------------------------------------------------------------------------- the job file


def _validate(tmp_path: Path, schedule: str, extra: str = "") -> subprocess.CompletedProcess:
    job = tmp_path / "job.yaml"
    job.write_text(
        "version: 1\nname: wine\ndata:\n  source: {format: csv, path: data/wine.csv}\n  dataset: {name: wine}\n"
        "  label: target\n  schema: {columns: {alcohol: {type: float}, target: {type: int}}}\n"
        f"{extra}schedule:\n{schedule}"
    )
    return subprocess.run([sys.executable, "-m", "raymlp", "validate", str(job)], capture_output=True, text=True)


def test_schedule_errors_name_the_file_line_and_what_is_allowed(tmp_path):
    bad = _validate(
        tmp_path,
        "  timezone: Mars/Olympus\n"
        "  triggers:\n"
        "    - {name: nightly, cron: '0 2 * * * * *'}\n"
        "    - {name: fast, cron: '61 * * * *'}\n"
        "    - {name: tick, every: 10x}\n"
        "    - {name: both, every: 10s, cron: '* * * * *'}\n"
        "    - {name: request, every: 1m}\n",
    )
    assert bad.returncode == 2
    job = tmp_path / "job.yaml"
    assert bad.stderr.splitlines()[:5] == [
        f"{job}:9: schedule.timezone: 'Mars/Olympus' is not a known time zone (IANA names such as UTC, "
        "Europe/Berlin, America/New_York)",
        f"{job}:11: schedule.triggers.0.cron: '0 2 * * * * *' has 7 fields; a cron expression has 5 (minute hour "
        "day month weekday) or 6 with seconds first (second minute hour day month weekday)",
        f"{job}:12: schedule.triggers.1.cron: '61 * * * *' is not a valid cron expression: [61 * * * *] is not "
        "acceptable, out of range",
        f"{job}:13: schedule.triggers.2.every: '10x' is not a duration like 30s, 5m, 24h, 7d (s, m, h, d, w)",
        f"{job}:14: schedule.triggers.3: a trigger has exactly one of cron, every, new_files, new_rows, monitor "
        "(found cron, every)",
    ]
    repeated = _validate(
        tmp_path,
        "  triggers:\n    - {name: a, every: 1m}\n    - {name: a, every: 2m}\n    - {name: request, every: 1m}\n",
    )
    assert repeated.stderr.splitlines()[0] == (
        f"{job}:9: schedule.triggers: trigger names must be unique and not 'request' (it is `raymlp trigger`'s): "
        "a, request"
    )

    mismatched = _validate(
        tmp_path,
        "  triggers:\n"
        "    - {name: drift, monitor: {model: someone-else}}\n"
        "    - {name: rows, new_rows: {column: updated_at}}\n",
        extra="train: {framework: sklearn, model: {type: sklearn.linear_model.LogisticRegression}}\n"
        "register: {model: wine-classifier}\n",
    )
    assert mismatched.returncode == 2
    assert mismatched.stderr.splitlines()[:2] == [
        f"{job}:12: schedule.triggers.0.monitor.model: 'someone-else' is not the model this job trains and "
        "registers ('wine-classifier'); a monitor trigger watches the model its job retrains",
        f"{job}:13: schedule.triggers.1.new_rows: new rows are read past a watermark of a table: the job needs "
        "data.source.sql.table",
    ]
    sql = tmp_path / "sql.yaml"
    sql.write_text(
        "version: 1\nname: rows\ndata:\n  source: {format: sql, sql: {url: 'sqlite:///x.db', table: events}}\n"
        "  dataset: {name: rows}\n  label: target\n  schema: {columns: {id: {type: int}, target: {type: int}}}\n"
        "schedule:\n  triggers:\n    - {name: rows, new_rows: {column: updated_at}}\n"
    )
    watermark = subprocess.run([sys.executable, "-m", "raymlp", "validate", str(sql)], capture_output=True, text=True)
    assert watermark.returncode == 2
    assert watermark.stderr.splitlines()[0] == (
        f"{sql}:10: schedule.triggers.0.new_rows.column: 'updated_at' is not a column of data.schema (columns: id, target)"
    )


# --------------------------------------------------------------------------- exports


def _project(tmp_path: Path, triggers: str) -> Path:
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "data").mkdir()
    (project / "data" / "wine.csv").write_text("alcohol,target\n1.0,0\n")
    (project / "jobs" / "wine.yaml").write_text(
        "version: 1\nname: wine\ndata:\n  source: {format: csv, path: data/wine.csv}\n  dataset: {name: wine}\n"
        f"  label: target\nschedule:\n  timezone: Europe/Berlin\n  overrides: [train.epochs=3]\n  triggers:\n{triggers}"
    )
    return project


def _crd_validator() -> jsonschema.Draft4Validator:
    """KubeRay's RayCronJob CRD (ray-operator/config/crd/bases/ray.io_raycronjobs.yaml at kuberay feeaf72) as a
    JSON Schema: Kubernetes' own keys dropped, unknown fields refused (kubectl's strict field validation)."""
    crd = yaml.safe_load(gzip.decompress(CRD.read_bytes()))
    version = next(item for item in crd["spec"]["versions"] if item["storage"])

    def plain(node):
        if isinstance(node, list):
            return [plain(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {
            key: plain(value) for key, value in node.items() if not key.startswith("x-kubernetes-") and key != "default"
        }
        for key in ("properties", "patternProperties"):
            if key in node:
                out[key] = {name: plain(value) for name, value in node[key].items()}
        if out.get("type") == "object" and "properties" in out and not node.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out

    return jsonschema.Draft4Validator(plain(version["schema"]["openAPIV3Schema"]))


def test_the_kuberay_export_is_a_valid_raycronjob_per_clock_trigger(tmp_path, monkeypatch):
    from raymlp.scheduler.exports import exported_job, kuberay_manifests

    project = _project(
        tmp_path, "    - {name: nightly, cron: '0 2 * * *'}\n    - {name: every-six-hours-and-a-half, every: 390m}\n"
    )
    monkeypatch.chdir(project)
    monkeypatch.setenv("RAYMLP_HOME", str(tmp_path / "home"))
    with pytest.raises(UsageError, match=r"cannot read the project from .*give the job a bucket"):
        exported_job(Path("jobs/wine.yaml"))
    job = exported_job(Path("jobs/wine.yaml"), working_dir="s3://bucket/wine-project.zip")
    text = kuberay_manifests(job, "raymlp")
    documents = list(yaml.safe_load_all(text))
    validator = _crd_validator()
    for document in documents:
        problems = [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(document)]
        assert problems == []
        assert len(document["metadata"]["name"]) <= 36
    nightly, interval = (document["spec"] for document in documents)
    assert (nightly["schedule"], nightly["timeZone"]) == ("0 2 * * *", "Europe/Berlin")
    assert (interval["schedule"], "timeZone" in interval) == ("@every 6h30m0s", False)
    template = nightly["jobTemplate"]
    assert template["entrypoint"] == "raymlp run jobs/wine.yaml --set train.epochs=3"
    assert yaml.safe_load(template["runtimeEnvYAML"]) == {"working_dir": "s3://bucket/wine-project.zip"}
    assert template["metadata"]["raymlp.trigger"] == "nightly" and template["clusterSelector"] == {
        "ray.io/cluster": "raymlp"
    }
    # the validator does refuse what KubeRay refuses
    broken = {**documents[0], "spec": {**documents[0]["spec"], "concurrencyPolicy": "Forbid"}}
    assert any("concurrencyPolicy" in error.message for error in validator.iter_errors(broken))


def test_the_airflow_export_parses_and_names_the_job(tmp_path, monkeypatch):
    from raymlp.scheduler.exports import airflow_dag, exported_job

    project = _project(
        tmp_path, "    - {name: nightly, cron: '0 2 * * *'}\n    - {name: seconds, cron: '*/5 * * * * *'}\n"
    )
    monkeypatch.chdir(project)
    with pytest.raises(UsageError, match=r"trigger seconds: cron '\*/5 \* \* \* \* \*' has seconds"):
        exported_job(Path("jobs/wine.yaml"), working_dir="s3://bucket/p.zip")
    (project / "jobs" / "wine.yaml").write_text(
        (project / "jobs" / "wine.yaml").read_text().replace("    - {name: seconds, cron: '*/5 * * * * *'}\n", "")
    )
    source = airflow_dag(exported_job(Path("jobs/wine.yaml"), working_dir="s3://bucket/p.zip"), "http://head:8265")
    tree = ast.parse(source)
    dag = next(
        node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DAG"
    )
    keywords = {keyword.arg: keyword.value for keyword in dag.keywords}
    assert ast.literal_eval(keywords["dag_id"]) == "raymlp-wine"
    assert ast.literal_eval(keywords["schedule"]) == "0 2 * * *"
    assert ast.literal_eval(keywords["catchup"]) is False and ast.literal_eval(keywords["max_active_runs"]) == 1
    job = next(node for node in tree.body if isinstance(node, ast.Assign) and node.targets[0].id == "JOB")
    assert ast.literal_eval(job.value)["entrypoint"] == "raymlp run jobs/wine.yaml --set train.epochs=3"
    assert "Europe/Berlin" in source and "http://head:8265" in source
    compile(source, "raymlp_wine.py", "exec")


# --------------------------------------------------------------------------- new data


def _data_pipeline(catalog: Catalog, clock: Clock, trigger: dict) -> None:
    import raymlp.catalog.store as store

    saved, store.utcnow = store.utcnow, clock
    try:
        catalog.put_pipeline("job", "jobs/job.yaml", "/p.zip", "0" * 64, {"concurrency": "skip"}, [trigger])
    finally:
        store.utcnow = saved


def test_new_files_are_collected_once_per_content(catalog, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "first.csv").write_text("a,label\n1,0\n")
    clock, launcher = Clock(T0), RecordingLauncher()
    _data_pipeline(
        catalog,
        clock,
        {
            "kind": "new_files",
            "name": "files",
            "new_files": {"every": "10s"},
            "watch": [str(landing / "*.csv")],
            "format": "csv",
        },
    )
    scheduler = Scheduler(catalog, launcher, "a", clock)
    scheduler.tick()  # the first look: what is there is the baseline
    assert firings(catalog) == []
    (landing / "second.csv").write_text("a,label\n2,1\n3,0\n")
    scheduler.tick()  # within the interval: no look
    assert firings(catalog) == []
    clock.advance(10)
    scheduler.tick()
    firing = catalog.list_firings()[0]
    assert (firing.trigger, firing.state, firing.reason) == ("files", "running", "1 new file(s): second.csv")
    assert firing.details["overrides"] == [f'data.source.path=["{landing / "second.csv"}"]', "schedule=null"]
    (landing / "copy-of-second.csv").write_bytes((landing / "second.csv").read_bytes())
    clock.advance(10)
    scheduler.tick()  # a run is collecting: no look until it ends
    assert len(catalog.list_firings()) == 1
    launcher.finish()
    scheduler.tick()
    clock.advance(10)
    scheduler.tick()  # the same bytes under another name: nothing
    assert [f.state for f in catalog.list_firings()] == ["succeeded"]
    (landing / "third.csv").write_text("a,label\n4,1\n")
    clock.advance(10)
    scheduler.tick()
    assert catalog.list_firings()[0].reason == "1 new file(s): third.csv"
    launcher.finish("FAILED", "the run failed")
    scheduler.tick()
    clock.advance(10)
    scheduler.tick()  # a failure doubles the pause before the next look
    assert len(catalog.list_firings()) == 2
    clock.advance(10)
    scheduler.tick()  # not collected: found again
    again = catalog.list_firings()[0]
    assert (again.reason, again.state, again.id) == ("1 new file(s): third.csv", "running", 3)
    assert scheduler.errors == []


def test_new_rows_past_the_watermark_are_collected_once(catalog, tmp_path):
    import sqlite3

    database = tmp_path / "events.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE events (id INTEGER, x REAL)")
        connection.executemany("INSERT INTO events VALUES (?, ?)", [(1, 0.1), (2, 0.2), (3, 0.3)])
    clock, launcher = Clock(T0), RecordingLauncher()
    _data_pipeline(
        catalog,
        clock,
        {
            "kind": "new_rows",
            "name": "rows",
            "new_rows": {"column": "id", "every": "5s"},
            "url": f"sqlite:///{database}",
            "table": "events",
            "column": "id",
        },
    )
    scheduler = Scheduler(catalog, launcher, "a", clock)
    scheduler.tick()
    assert firings(catalog) == [] and catalog.list_triggers()[0].state["watermark"] == 3
    with sqlite3.connect(database) as connection:
        connection.executemany("INSERT INTO events VALUES (?, ?)", [(4, 0.4), (5, 0.5)])
    clock.advance(5)
    scheduler.tick()
    firing = catalog.list_firings()[0]
    assert firing.reason == "2 new row(s) in events past id = 3 (up to 5)"
    assert firing.details["overrides"] == [
        "data.source.sql.table=null",
        'data.source.sql.query="SELECT * FROM events WHERE events.id > 3 AND events.id <= 5"',
        "schedule=null",
    ]
    launcher.finish()
    scheduler.tick()
    assert catalog.list_triggers()[0].state["watermark"] == 5
    clock.advance(5)
    scheduler.tick()
    assert len(catalog.list_firings()) == 1  # nothing new
    assert scheduler.errors == []


def test_a_monitor_check_that_finds_drift_or_a_breach_fires_a_retrain(catalog):
    clock, launcher = Clock(T0), RecordingLauncher()
    _data_pipeline(
        catalog,
        clock,
        {
            "kind": "monitor",
            "name": "drift",
            "monitor": {"every": "1h", "drift": True, "performance": {"accuracy": ">= 0.85"}},
            "model": "wine-classifier@champion",
            "job_file": "jobs/wine.yaml",
        },
    )
    scheduler = Scheduler(catalog, launcher, "a", clock)
    scheduler.tick()
    ((arguments, check),) = launcher.checks
    assert arguments == ["monitor", "wine-classifier@champion", "--job", "jobs/wine.yaml"]
    scheduler.tick()  # the check runs: nothing to decide yet
    assert firings(catalog) == [] and len(launcher.checks) == 1

    def report(drifted: bool, measured: float | None, estimated: float) -> None:
        clock.advance(1)
        catalog.record_monitor_report(
            "wine-classifier",
            ["1"],
            None,
            None,
            500,
            "wine@1 (train split)",
            0.6 if drifted else 0.0,
            drifted,
            {
                "columns_drifted": ["alcohol", "ash"] if drifted else [],
                "measured": None if measured is None else {"accuracy": measured},
                "estimated": {"accuracy": estimated},
            },
            "/reports/report.html",
        )

    report(drifted=False, measured=None, estimated=0.95)
    launcher.finish()
    scheduler.tick()
    assert firings(catalog) == [] and catalog.list_triggers()[0].state["check"] is None
    clock.advance(3600)
    scheduler.tick()  # the next check, an hour later
    assert len(launcher.checks) == 2
    report(drifted=True, measured=0.7, estimated=0.95)
    launcher.finish()
    scheduler.tick()
    firing = catalog.list_firings()[0]
    assert firing.reason == (
        "monitor wine-classifier@champion: the data drifts (60% of columns: alcohol, ash); "
        "measured accuracy 0.7 breaks '>= 0.85'"
    )
    assert firing.details["report"] == "/reports/report.html" and firing.state == "running"
    assert scheduler.errors == []


def test_schedule_add_checks_the_watermark_column_against_the_table(tmp_path):
    import sqlite3

    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    with sqlite3.connect(tmp_path / "events.db") as connection:
        connection.execute("CREATE TABLE events (id INTEGER, a REAL, label INTEGER)")
    job = project / "jobs" / "events.yaml"
    job.write_text(
        "version: 1\nname: events\ndata:\n"
        f"  source: {{format: sql, sql: {{url: 'sqlite:///{tmp_path / 'events.db'}', table: events}}}}\n"
        f"  collect: {{url: 'sqlite:///{tmp_path / 'warehouse.db'}', table: events, mode: append}}\n"
        "  dataset: {name: events}\n  label: label\nschedule:\n  triggers:\n"
        "    - {name: rows, new_rows: {column: updated_at}}\n"
    )
    env = {**os.environ, "RAYMLP_HOME": str(tmp_path / "home")}
    added = subprocess.run(
        [sys.executable, "-m", "raymlp", "schedule", "add", "jobs/events.yaml"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert added.returncode == 2
    problem = f"{job}:10: schedule.triggers.0.new_rows.column: 'updated_at' is not a column of events"
    assert f"{problem} (columns: id, a, label)" in added.stderr.splitlines()
    job.write_text(job.read_text().replace("column: updated_at", "column: id"))
    added = subprocess.run(
        [sys.executable, "-m", "raymlp", "schedule", "add", "jobs/events.yaml", "--json"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert added.returncode == 0, added.stderr
    assert '"column": "id"' in added.stdout and '"table": "events"' in added.stdout
