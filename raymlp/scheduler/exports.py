"""The job's clock triggers for schedulers users already run: a KubeRay RayCronJob manifest, an Airflow DAG file.

Both submit the Ray job raymlp's own scheduler submits (`raymlp run JOB.yaml` with the project as working_dir)
and need nothing of raymlp's scheduler. The project must be at a URL the cluster can read: the storage root's
bucket (`raymlp schedule export` puts a snapshot there) or `--working-dir URL`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raymlp.config.schema import duration_seconds
from raymlp.errors import UsageError
from raymlp.storage import files, resolve_storage

#: KubeRay names each RayJob `<RayCronJob name>-<minutes>` and refuses RayCronJob names longer than this.
KUBERAY_NAME_LIMIT = 36


@dataclass(frozen=True)
class ExportedJob:
    name: str
    job_file: str
    entrypoint: str
    working_dir: str
    env_vars: dict[str, str]
    triggers: list[dict[str, Any]]  # the clock triggers: name, cron (5 fields) or every, timezone
    concurrency: str
    catch_up: str


def _go_duration(text: str) -> str:
    """`90m` -> `1h30m0s`: the form robfig/cron's `@every` takes."""
    seconds = int(duration_seconds(text))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes}m{seconds}s"


def _wrapped_snapshot(folder: Any, scratch: Path) -> Path:
    """The project zip with every file under one top-level folder, which Ray strips from a remote working_dir."""
    package = scratch / "project.zip"
    with zipfile.ZipFile(package, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for relative in sorted(path for path, _ in folder.files):
            entry = zipfile.ZipInfo(f"project/{relative}", date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = ((folder.root / relative).stat().st_mode & 0xFFFF) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, (folder.root / relative).read_bytes())
    return package


def exported_job(job_file: Path, working_dir: str | None = None, root: Path | None = None) -> ExportedJob:
    """The job as an export needs it: its clock triggers and a working_dir URL (the snapshot put in the storage
    root's bucket unless `working_dir` names one)."""
    from raymlp.launch.submit import plan_project

    root = (root or Path.cwd()).resolve()
    loaded, relative_job, folder = plan_project(job_file, root, [], [], [])
    job = loaded.config
    schedule = job.schedule
    clocks = [trigger for trigger in (schedule.triggers if schedule else []) if trigger.kind in ("cron", "every")]
    if not clocks:
        raise UsageError(
            f"{job_file}: schedule.triggers has no cron or every trigger to export (new data, monitor and "
            "request triggers need raymlp's scheduler: raymlp scheduler start)"
        )
    triggers = []
    for trigger in clocks:
        if trigger.cron and len(trigger.cron.split()) == 6:
            raise UsageError(
                f"{job_file}: trigger {trigger.name}: cron '{trigger.cron}' has seconds; KubeRay and Airflow "
                "schedules have 5 fields (minute hour day month weekday)"
            )
        triggers.append(
            {
                "name": trigger.name,
                "cron": trigger.cron,
                "every": trigger.every,
                "timezone": trigger.timezone or (schedule.timezone if schedule else "UTC"),
            }
        )
    if working_dir is None:
        storage = resolve_storage(job.storage)
        if not storage.remote:
            raise UsageError(
                f"the cluster cannot read the project from {storage.root}: give the job a bucket "
                "(storage.root: s3://... or RAYMLP_STORAGE_ROOT) or --working-dir URL (a zip it can read)"
            )
        with tempfile.TemporaryDirectory(prefix="raymlp-export-") as scratch:
            package = _wrapped_snapshot(folder, Path(scratch))
            digest = files.sha256_of(package)
            working_dir = files.join(storage.root, "pipelines", job.name, f"export-{digest[:16]}.zip")
            if not files.exists(working_dir):
                files.write_bytes(working_dir, package.read_bytes())
    overrides = [part for override in (schedule.overrides if schedule else []) for part in ("--set", override)]
    return ExportedJob(
        name=job.name,
        job_file=relative_job.as_posix(),
        entrypoint=shlex.join(["raymlp", "run", relative_job.as_posix(), *overrides]),
        working_dir=working_dir,
        env_vars={},
        triggers=triggers,
        concurrency=schedule.concurrency if schedule else "skip",
        catch_up=schedule.catch_up if schedule else "once",
    )


def kubernetes_name(*parts: str, limit: int = KUBERAY_NAME_LIMIT) -> str:
    """A DNS-1123 name from `parts` within `limit` characters (a short hash keeps shortened names apart)."""
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-") or "raymlp"
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    return f"{text[: limit - 7].rstrip('-')}-{digest}"


def kuberay_manifests(job: ExportedJob, cluster: str) -> str:
    """One RayCronJob (ray.io/v1, KubeRay >= 1.6 with its RayCronJob feature gate on) per clock trigger, each
    submitting the job to the RayCluster named `cluster`."""
    documents = []
    for trigger in job.triggers:
        spec: dict[str, Any] = {
            "schedule": trigger["cron"] or f"@every {_go_duration(trigger['every'])}",
            "jobTemplate": {
                "entrypoint": job.entrypoint,
                "runtimeEnvYAML": yaml.safe_dump({"working_dir": job.working_dir}, sort_keys=False),
                "metadata": {
                    "raymlp.job": job.name,
                    "raymlp.file": job.job_file,
                    "raymlp.trigger": trigger["name"],
                    "raymlp.fired_by": "kuberay-raycronjob",
                },
                "clusterSelector": {"ray.io/cluster": cluster},
                "submissionMode": "HTTPMode",
            },
        }
        if trigger["cron"] and trigger["timezone"] != "UTC":
            spec["timeZone"] = trigger["timezone"]  # KubeRay >= 1.7
        documents.append(
            {
                "apiVersion": "ray.io/v1",
                "kind": "RayCronJob",
                "metadata": {
                    "name": kubernetes_name("raymlp", job.name, trigger["name"]),
                    "labels": {
                        "app.kubernetes.io/managed-by": "raymlp",
                        "raymlp.job": kubernetes_name(job.name, limit=63),
                    },
                },
                "spec": spec,
            }
        )
    header = (
        f"# raymlp job {job.name} ({job.job_file}) on KubeRay's RayCronJob (KubeRay >= 1.6, operator flag\n"
        "# --feature-gates=RayCronJob=true; helm: featureGates RayCronJob enabled). Written by\n"
        f"# `raymlp schedule export {job.job_file} --kuberay`. Each firing submits `{job.entrypoint}`\n"
        f"# to the RayCluster {cluster}. KubeRay starts a run at every firing, also while the last one still\n"
        f"# runs: it has no concurrency policy (the job file's is {job.concurrency}), and misses no catch-up.\n"
    )
    return header + "---\n".join(yaml.safe_dump(document, sort_keys=False) for document in documents)


_AIRFLOW_TEMPLATE = '''"""raymlp job {name} ({job_file}) as an Airflow DAG: each run submits the Ray job raymlp's scheduler would.

Written by `raymlp schedule export {job_file} --airflow`. Needs no raymlp or Ray on the Airflow workers: the
job is sent to the cluster's Jobs API over HTTP (RAY_DASHBOARD_URL, and RAY_AUTH_TOKEN when the cluster checks
tokens, from the worker's environment) and followed until it ends; a failed Ray job fails the task.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import pendulum
from airflow import DAG
from airflow.operators.python import PythonOperator

JOB = {job_json}
TRIGGER = {trigger_json}


def _call(method: str, path: str, body: dict | None = None) -> dict:
    url = os.environ.get("RAY_DASHBOARD_URL", {dashboard_json}).rstrip("/") + path
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if os.environ.get("RAY_AUTH_TOKEN"):
        request.add_header("Authorization", "Bearer " + os.environ["RAY_AUTH_TOKEN"])
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read() or b"{{}}")


def submit_and_follow(run_id: str, **_: object) -> None:
    submission = "raymlp-{name}-airflow-" + "".join(ch if ch.isalnum() else "-" for ch in run_id)[:80]
    body = {{
        "entrypoint": JOB["entrypoint"],
        "submission_id": submission,
        "runtime_env": {{"working_dir": JOB["working_dir"]}},
        "metadata": {{**JOB["metadata"], "raymlp.trigger": TRIGGER["name"], "raymlp.reason": "airflow run " + run_id}},
    }}
    try:
        _call("POST", "/api/jobs/", body)
    except urllib.error.HTTPError as error:
        if "already exists" not in error.read().decode(errors="replace"):  # a retried task: follow the same job
            raise
    while True:
        status = _call("GET", "/api/jobs/" + submission)
        if status.get("status") in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(10)
    if status["status"] != "SUCCEEDED":
        raise RuntimeError("Ray job " + submission + " " + status["status"].lower() + ": " + str(status.get("message")))


with DAG(
    dag_id={dag_id_json},
    schedule={schedule_json},
    start_date=pendulum.datetime(2026, 1, 1, tz={timezone_json}),
    catchup=False,  # missed runs: the latest once (the job file's catch_up: {catch_up})
    max_active_runs=1,  # the job never runs twice at once (a firing meanwhile waits: concurrency {concurrency})
    tags=["raymlp"],
) as dag:
    PythonOperator(task_id="raymlp_run", python_callable=submit_and_follow)  # Airflow passes run_id
'''


def airflow_dag(job: ExportedJob, dashboard_url: str, trigger_name: str | None = None) -> str:
    """An Airflow DAG file for one clock trigger (the first, unless `trigger_name` names one)."""
    trigger = next((item for item in job.triggers if trigger_name in (None, item["name"])), None)
    if trigger is None:
        names = ", ".join(item["name"] for item in job.triggers)
        raise UsageError(f"--trigger {trigger_name}: not a cron or every trigger of the job (those: {names})")
    schedule = trigger["cron"] or f"timedelta(seconds={int(duration_seconds(trigger['every']))})"
    source = _AIRFLOW_TEMPLATE.format(
        name=job.name,
        job_file=job.job_file,
        job_json=json.dumps(
            {
                "entrypoint": job.entrypoint,
                "working_dir": job.working_dir,
                "metadata": {"raymlp.job": job.name, "raymlp.file": job.job_file, "raymlp.fired_by": "airflow"},
            },
            indent=4,
        ),
        trigger_json=json.dumps({"name": trigger["name"]}),
        dashboard_json=json.dumps(dashboard_url),
        dag_id_json=json.dumps(f"raymlp-{job.name}"),
        schedule_json=json.dumps(schedule) if trigger["cron"] else schedule,
        timezone_json=json.dumps(trigger["timezone"]),
        catch_up=job.catch_up,
        concurrency=job.concurrency,
    )
    if not trigger["cron"]:
        source = source.replace("import pendulum\n", "from datetime import timedelta\n\nimport pendulum\n")
    return source
