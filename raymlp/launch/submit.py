"""`raymlp submit` and `raymlp jobs`: a job file sent to a cluster as a Ray job, and Ray jobs watched.

A submission is `raymlp run JOB.yaml` run by Ray's Jobs API with the project folder as its
working_dir, so `ray job submit --working-dir . -- raymlp run JOB.yaml` runs the same thing.
"""

from __future__ import annotations

import secrets
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from raymlp.errors import UsageError, WorkFailed

from .client import Cluster, connect, guard

FINISHED = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass(frozen=True)
class SubmitRequest:
    """What `raymlp submit` was asked for."""

    job_file: Path
    address: str | None = None
    env: str | None = None
    overrides: list[str] = field(default_factory=list)
    env_vars: dict[str, str] = field(default_factory=dict)
    excludes: list[str] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)
    submission_id: str | None = None
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None


@dataclass(frozen=True)
class Submission:
    submission_id: str
    dashboard_url: str
    job_url: str
    entrypoint: str
    runtime_env: dict[str, Any]
    uploaded_files: int
    uploaded_bytes: int
    carried: tuple[str, ...] = ()  # files --include added that .gitignore, .rayignore or the excludes leave out


def submit(request: SubmitRequest, *, root: Path | None = None) -> tuple[Submission, Cluster]:
    """Check the job file, what it reads and the project folder here, then submit; nothing is uploaded
    when a check fails."""
    import tempfile

    from .workdir import write_package

    root = (root or Path.cwd()).resolve()
    loaded, relative_job, folder = plan_project(
        request.job_file, root, request.overrides, request.excludes, request.includes
    )

    with tempfile.TemporaryDirectory(prefix="raymlp-submit-") as scratch:
        package = write_package(folder, Path(scratch)) if folder.carried else None
        runtime_env = {**job_runtime_env(loaded, request.env, root), **folder.runtime_env(package)}
        if request.env_vars:
            runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **request.env_vars}
        warn_if_state_stays_in_the_upload(loaded, runtime_env)
        entrypoint = shlex.join(
            [
                "raymlp",
                "run",
                relative_job.as_posix(),
                *[part for override in request.overrides for part in ("--set", override)],
            ]
        )
        submission_id = request.submission_id or _submission_id(loaded.config.name)
        cluster = connect(request.address)
        resources = {
            key: value
            for key, value in (
                ("entrypoint_num_cpus", request.entrypoint_num_cpus),
                ("entrypoint_num_gpus", request.entrypoint_num_gpus),
                ("entrypoint_memory", request.entrypoint_memory),
            )
            if value is not None
        }
        metadata = {
            "raymlp.job": loaded.config.name,
            "raymlp.file": relative_job.as_posix(),
            "raymlp.stages": ",".join(loaded.config.stages()),
        }
        submitted = guard(
            lambda: _submit_job(cluster, entrypoint, runtime_env, submission_id, metadata, resources),
            cluster.dashboard_url,
            cluster.token,
        )
    return Submission(
        submission_id=submitted,
        dashboard_url=cluster.dashboard_url,
        job_url=job_url(cluster.dashboard_url, submitted),
        entrypoint=entrypoint,
        runtime_env=runtime_env,
        uploaded_files=len(folder.files),
        uploaded_bytes=folder.total_bytes,
        carried=folder.carried,
    ), cluster


def plan_project(
    job_file: Path, root: Path, overrides: list[str], excludes: list[str], includes: list[str]
) -> tuple[Any, Path, Any]:
    """The job (loaded with `overrides`), its path inside the project folder `root`, and the folder as Ray will
    package it, after every check a submission makes (the job file is uploaded, what it reads is there, the
    folder fits); warnings go to stderr."""
    from raymlp.config import load_job

    from .reads import check_reads
    from .workdir import check_fits, plan_working_dir

    try:
        relative_job = job_file.resolve().relative_to(root)
    except ValueError:
        raise UsageError(
            f"{job_file}: the job file must be inside the project folder {root}, which is "
            "uploaded as the job's working_dir; run raymlp from the project root"
        ) from None
    loaded = load_job(job_file.resolve(), list(overrides))
    folder = plan_working_dir(root, excludes, includes)
    if not folder.uploads(str(relative_job)):
        raise UsageError(
            f"{relative_job}: excluded from the upload (.gitignore, .rayignore or --exclude); the "
            "cluster would not find it"
        )
    warnings = check_reads(loaded, folder, excludes)
    check_fits(folder)
    for warning in warnings:
        print(warning, file=sys.stderr)
    return loaded, relative_job, folder


def warn_if_state_stays_in_the_upload(loaded, runtime_env: dict[str, Any]) -> None:
    """A job whose catalog, MLflow store or artifacts resolve inside its working_dir keeps them in the
    cluster's unpacked copy of the upload, which Ray removes with its cache."""
    storage = loaded.config.storage
    if "RAYMLP_HOME" in (runtime_env.get("env_vars") or {}):
        return
    local = [
        name
        for name in ("root", "catalog", "tracking")
        if getattr(storage, name) is None or not _outside_the_upload(getattr(storage, name))
    ]
    if local:
        print(
            f"warning: the job's storage ({', '.join(local)}) resolves inside its working_dir on the cluster "
            "(RAYMLP_HOME defaults to ./.raymlp), which Ray deletes with the uploaded files; give the job "
            "shared storage (storage: in the job file, or --env-var RAYMLP_HOME=/mnt/shared/raymlp)",
            file=sys.stderr,
        )


def _outside_the_upload(location: str) -> bool:
    """s3://, postgresql://..., an absolute path or sqlite:////abs/path: not inside the job's folder."""
    if location.startswith("sqlite:///"):
        return location[len("sqlite:///") :].startswith("/")
    return "://" in location or location.startswith("/")


def _submit_job(
    cluster: Cluster, entrypoint: str, runtime_env: dict, submission_id: str, metadata: dict, resources: dict
) -> str:
    try:
        return cluster.client.submit_job(
            entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id, metadata=metadata, **resources
        )
    except RuntimeError as error:  # the Jobs API refused the request: say what it said
        raise WorkFailed(
            f"the cluster at {cluster.dashboard_url} refused the job: {_first_lines(str(error))}"
        ) from None


def job_runtime_env(loaded, env_name: str | None, root: Path) -> dict[str, Any]:
    """The runtime environment the submission carries: --env NAME, else the job file's `env`."""
    chosen = env_name if env_name is not None else loaded.config.env
    if chosen == "default":
        return {}
    from raymlp.config.envs import named_runtime_env

    return dict(named_runtime_env(chosen, root) or {})


def _submission_id(job_name: str) -> str:
    return f"raymlp-{job_name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def job_url(dashboard_url: str, submission_id: str) -> str:
    """The job's page in the Ray dashboard."""
    return f"{dashboard_url}/#/jobs/{submission_id}"


# --- watching jobs ------------------------------------------------------------------------------


def follow(
    cluster: Cluster, submission_id: str, out: TextIO = sys.stdout, poll_s: float = 1.0, timeout_s: float | None = None
) -> Any:
    """Stream a job's logs until it finishes; return its final JobDetails."""
    import asyncio

    async def tail() -> None:
        async for lines in cluster.client.tail_job_logs(submission_id):
            out.write(lines)
            out.flush()

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    guard(
        lambda: asyncio.run(_until_finished(tail(), cluster, submission_id, poll_s, deadline)),
        cluster.dashboard_url,
        cluster.token,
    )
    return details(cluster, submission_id)


async def _until_finished(tailing, cluster: Cluster, submission_id: str, poll_s: float, deadline: float | None) -> None:
    """Tail the logs; stop when the job has finished (the log stream ends then, or shortly after)."""
    import asyncio

    task = asyncio.ensure_future(tailing)
    try:
        while not task.done():
            status = await asyncio.to_thread(cluster.client.get_job_status, submission_id)
            if str(status) in FINISHED:
                try:
                    await asyncio.wait_for(asyncio.shield(task), timeout=5)
                except (TimeoutError, Exception):
                    pass
                return
            if deadline is not None and time.monotonic() > deadline:
                raise WorkFailed(f"job {submission_id} is still {status} after the timeout")
            await asyncio.wait({task}, timeout=poll_s)
        task.result()
    finally:
        task.cancel()


def details(cluster: Cluster, submission_id: str) -> Any:
    """A job's JobDetails, or a clear error when the cluster has no such job."""

    def get():
        try:
            return cluster.client.get_job_info(submission_id)
        except RuntimeError as error:
            if "does not exist" in str(error) or "404" in str(error):
                raise UsageError(
                    f"no job {submission_id} on the cluster at {cluster.dashboard_url} "
                    "(raymlp jobs list shows the jobs there)"
                ) from None
            raise

    return guard(get, cluster.dashboard_url, cluster.token)


def list_jobs(cluster: Cluster) -> list[Any]:
    """The cluster's jobs, newest first."""
    jobs = guard(cluster.client.list_jobs, cluster.dashboard_url, cluster.token)
    return sorted(jobs, key=lambda job: job.start_time or 0, reverse=True)


def logs(cluster: Cluster, submission_id: str) -> str:
    details(cluster, submission_id)
    return guard(lambda: cluster.client.get_job_logs(submission_id), cluster.dashboard_url, cluster.token)


def stop(cluster: Cluster, submission_id: str, *, wait_s: float = 30.0) -> Any:
    """Ask Ray to stop a job and wait (up to `wait_s`) until it has."""
    info = details(cluster, submission_id)
    if str(info.status) in FINISHED:
        return info
    guard(lambda: cluster.client.stop_job(submission_id), cluster.dashboard_url, cluster.token)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        info = details(cluster, submission_id)
        if str(info.status) in FINISHED:
            break
        time.sleep(0.5)
    return info


def summary(info: Any, dashboard_url: str) -> dict[str, Any]:
    """The fields of a JobDetails a user reads, as plain JSON."""

    def stamp(ms: int | None) -> str | None:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else None

    seconds = round((info.end_time - info.start_time) / 1000, 1) if info.end_time and info.start_time else None
    return {
        "submission_id": info.submission_id,
        "job_id": info.job_id,
        "status": str(info.status),
        "raymlp_job": (info.metadata or {}).get("raymlp.job"),
        "entrypoint": info.entrypoint,
        "message": info.message,
        "started": stamp(info.start_time),
        "ended": stamp(info.end_time),
        "seconds": seconds,
        "url": job_url(dashboard_url, info.submission_id) if info.submission_id else None,
    }


def _first_lines(text: str, count: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[:count])


#: For tests and the CLI: how a finished job maps to an exit code.
def exit_code(info: Any) -> int:
    return 0 if str(info.status) == "SUCCEEDED" else 1


def describe_failure(info: Any) -> str:
    return f"job {info.submission_id} {str(info.status).lower()}: {_first_lines(info.message or 'no message', 12)}"
