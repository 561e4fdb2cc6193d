"""A firing run as a Ray job: `raymlp run JOB.yaml` on the project snapshot, the trigger and reason in its metadata."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from raymlp.catalog import FiringRecord, PipelineRecord
from raymlp.storage import files


def entrypoint(pipeline: PipelineRecord, firing: FiringRecord | None = None) -> str:
    """The command each run of the pipeline is: `raymlp run JOB` as `raymlp submit` sends it, or, where no
    `raymlp` is on this node's PATH (a cluster started from a shell without the virtualenv's bin/), this
    Python's `-m raymlp`: the scheduler runs in the cluster's own Python, which has raymlp."""
    settings = [*pipeline.settings.get("overrides", []), *((firing.details.get("overrides") or []) if firing else [])]
    overrides = [part for override in settings for part in ("--set", override)]
    command = ["raymlp"] if shutil.which("raymlp") else [sys.executable, "-m", "raymlp"]
    return shlex.join([*command, "run", pipeline.job_file, *overrides])


def failure_summary(state: str, message: str | None) -> str:
    """A failed run's error as history keeps it: first the line that says why (raymlp's own `error:` line, else
    the log's last line), then Ray's message with the log's tail."""
    text = (message or "").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not re.fullmatch(r"\d+ problems? in the job file", line)]
    said = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "")
    code = re.search(r"exit code (\d+)", text)
    first = (
        f"the run {state.lower()}" + (f" (exit code {code.group(1)})" if code else "") + (f": {said}" if said else "")
    )
    return f"{first}\n{text}" if text else first


def runtime_env(pipeline: PipelineRecord, working_dir: str) -> dict[str, Any]:
    """The job's runtime environment with the snapshot as its working_dir and the storage it was added with."""
    environment = dict(pipeline.settings.get("runtime_env") or {})
    env_vars = {**(environment.get("env_vars") or {}), **(pipeline.settings.get("env_vars") or {})}
    environment["working_dir"] = working_dir
    if env_vars:
        environment["env_vars"] = env_vars
    return environment


def metadata(pipeline: PipelineRecord, firing: FiringRecord) -> dict[str, str]:
    """What the dashboard's Jobs view shows of the firing."""
    return {
        "raymlp.job": pipeline.name,
        "raymlp.file": pipeline.job_file,
        "raymlp.trigger": firing.trigger,
        "raymlp.reason": firing.reason[:1000],
        "raymlp.firing": str(firing.id),
        "raymlp.fired_by": firing.fired_by,
    }


def firing_env(firing: FiringRecord) -> dict[str, str]:
    """What tells a run which firing started it (`models why` shows it)."""
    from raymlp import settings

    return {
        settings.FIRING_ENV: str(firing.id),
        settings.FIRING_TRIGGER_ENV: firing.trigger,
        settings.FIRING_REASON_ENV: firing.reason[:1000],
    }


class RayJobLauncher:
    """Submits firings to the cluster's Jobs API (the one at `address`, else the one this process is in)."""

    def __init__(self, address: str | None) -> None:
        from raymlp.launch.client import connect

        self._cluster = connect(address, warn_unauthenticated=False)
        self._snapshots = Path(tempfile.gettempdir()) / "raymlp-pipelines"

    @property
    def dashboard_url(self) -> str:
        return self._cluster.dashboard_url

    def _local_snapshot(self, pipeline: PipelineRecord) -> str:
        """The project zip on this machine (fetched from a bucket once per content); Ray uploads it as it is."""
        if not files.is_remote(pipeline.project):
            return pipeline.project
        local = self._snapshots / f"{pipeline.project_sha256}.zip"
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            partial = local.with_suffix(".partial")
            partial.write_bytes(files.read_bytes(pipeline.project))
            partial.replace(local)
        return str(local)

    def submit(self, pipeline: PipelineRecord, firing: FiringRecord, submission_id: str) -> None:
        self._submit(
            pipeline, entrypoint(pipeline, firing), submission_id, metadata(pipeline, firing), firing_env(firing)
        )

    def submit_check(self, pipeline: PipelineRecord, arguments: list[str], submission_id: str) -> None:
        """A check a trigger runs on the cluster (`raymlp monitor ...`) in the job's project and environment."""
        command = ["raymlp"] if shutil.which("raymlp") else [sys.executable, "-m", "raymlp"]
        self._submit(
            pipeline,
            shlex.join([*command, *arguments]),
            submission_id,
            {"raymlp.job": pipeline.name, "raymlp.check": "monitor"},
        )

    def _submit(
        self,
        pipeline: PipelineRecord,
        command: str,
        submission_id: str,
        labels: dict[str, str],
        env_vars: dict[str, str] | None = None,
    ) -> None:
        environment = runtime_env(pipeline, self._local_snapshot(pipeline))
        if env_vars:
            environment["env_vars"] = {**environment.get("env_vars", {}), **env_vars}
        try:
            self._cluster.client.submit_job(
                entrypoint=command,
                runtime_env=environment,
                submission_id=submission_id,
                metadata=labels,
                **(pipeline.settings.get("resources") or {}),
            )
        except RuntimeError as error:
            if "already exists" not in str(error):  # submitted before this scheduler died: it runs
                raise

    def status(self, submission_id: str) -> tuple[str, str | None]:
        try:
            info = self._cluster.client.get_job_info(submission_id)
        except RuntimeError as error:
            if "does not exist" in str(error) or "404" in str(error):
                return "MISSING", None
            raise
        state = str(getattr(info.status, "value", info.status))
        message = failure_summary(state, info.message) if state in ("FAILED", "STOPPED") else None
        return state, message

    def stop(self, submission_id: str) -> None:
        try:
            self._cluster.client.stop_job(submission_id)
        except RuntimeError as error:
            if "does not exist" not in str(error):
                raise
