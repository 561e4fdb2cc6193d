"""`raymlp env check NAME`: build a named environment on a cluster through a Ray job and import its
modules there.

The job (`raymlp-env-check-NAME-<hex>`) has the environment as its runtime_env and a stdlib-only
`python -c` probe as its entrypoint; its build log is streamed, pip's first failure stops it, and it
is deleted once it ended. The environment files are read by `raymlp.config.envs`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from raymlp.config.envs import NamedEnv, distribution, file_label, import_name, load_env
from raymlp.errors import WorkFailed

#: Printed by the check job before its JSON report.
REPORT_MARKER = "RAYMLP_ENV_CHECK "

# Runs on the cluster under `python -c`, in the environment being checked: standard library only.
_CHECK_SCRIPT = """
import importlib, importlib.metadata as md, json, os, sys
spec = json.loads(sys.argv[1])
report = {"python": sys.version.split()[0], "executable": sys.executable, "ray": None,
          "modules": {}, "failed": {}, "env_vars": {}}
try:
    report["ray"] = md.version("ray")
except md.PackageNotFoundError:
    pass
owners = None
for module, distribution in spec["imports"].items():
    try:
        imported = importlib.import_module(module)
    except BaseException as error:
        report["failed"][module] = type(error).__name__ + ": " + str(error)
        continue
    if owners is None:
        try:
            owners = md.packages_distributions()
        except Exception:
            owners = {}
    version = None
    for name in ([distribution] if distribution else []) + owners.get(module.split(".")[0], []):
        try:
            version = md.version(name)
            break
        except md.PackageNotFoundError:
            pass
    version = version or str(getattr(imported, "__version__", "") or "") or None
    report["modules"][module] = {"version": version, "file": getattr(imported, "__file__", None)}
for name in spec["env_vars"]:
    report["env_vars"][name] = name in os.environ
print("RAYMLP_ENV_CHECK " + json.dumps(report), flush=True)
sys.exit(1 if report["failed"] or not all(report["env_vars"].values()) else 0)
"""


@dataclass
class EnvCheck:
    """What `check_env` found: the environment built and its modules imported on the cluster."""

    name: str
    submission_id: str
    dashboard_url: str
    seconds: float
    python: str | None = None
    executable: str | None = None
    ray: str | None = None
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    env_vars: dict[str, bool] = field(default_factory=dict)
    build_log: str = ""
    job_log: str = ""


def check_entrypoint(named: NamedEnv, python: str | None = None) -> str:
    """The check job's shell command, run by the Python a job's `python ...` entrypoint gets: a pip/uv
    environment's virtualenv (Ray activates it), else `python` (`python`: the one on the nodes' PATH,
    as for `ray job submit -- python ...`; an embedded Ray's is this process's interpreter)."""
    distributions = {import_name(requirement): distribution(requirement) for requirement in named.requirements}
    spec = {
        "imports": {module: distributions.get(module) for module in named.imports()},
        "env_vars": sorted(named.config.env_vars),
    }
    script = base64.b64encode(_CHECK_SCRIPT.strip().encode()).decode()
    loader = f"import base64; exec(base64.b64decode('{script}'))"  # one line in Ray's "Running entrypoint" log
    base = shlex.quote(python) if python else '"$(command -v python || command -v python3)"'
    return (
        f'if [ -n "$VIRTUAL_ENV" ]; then PY="$VIRTUAL_ENV/bin/python"; else PY={base}; fi; '
        f'exec "$PY" -c {shlex.quote(loader)} {shlex.quote(json.dumps(spec))}'
    )


def _shown_output(job_log: str) -> str:
    """The check job's log without Ray's echo of the entrypoint and the report line (shown as a table)."""
    return "\n".join(
        line for line in job_log.splitlines() if not line.startswith(("Running entrypoint for job", REPORT_MARKER))
    )


def check_env(
    name: str,
    address: str | None = None,
    root: str | os.PathLike[str] | None = None,
    out: TextIO | None = None,
    timeout_s: float | None = None,
) -> EnvCheck:
    """Build environment NAME on a cluster and import its modules there, through a Ray job.

    The cluster: `address` (a dashboard URL), else RAY_ADDRESS, else an embedded local Ray started for
    the check. The job (`raymlp-env-check-NAME-<8 hex>`) has the environment as its runtime_env and a
    `python -c` entrypoint that needs nothing but the standard library; the build log and the job's
    output go to `out` (stderr by default). The job is deleted once it ends. Raises `WorkFailed` when
    the build fails (with pip's or uv's error lines) or a module does not import; `EnvLookupError` /
    `ConfigError` for an unknown name or a bad file, before anything is submitted.
    """
    from raymlp import settings

    out = out if out is not None else sys.stderr
    named = load_env(name, Path(root) if root is not None else None)
    timeout_s = timeout_s if timeout_s is not None else max(900.0, (named.config.setup_timeout_s or 600) + 300.0)
    address = address or settings.ray_address()
    if address:
        from .client import connect

        return _check_on(connect(address), named, out, timeout_s)
    from raymlp.runtime import ray_runtime

    with ray_runtime() as runtime:
        print(f"env check: started an embedded local Ray; dashboard {runtime.dashboard}", file=out, flush=True)
        return _check_on(_connect_when_ready(runtime.dashboard_url), named, out, timeout_s, python=sys.executable)


def _connect_when_ready(dashboard_url: str | None, wait_s: float = 60.0) -> Any:
    """The embedded Ray's Jobs API, once its dashboard answers (it starts a moment after ray.init)."""
    from .client import connect

    if not dashboard_url:
        raise WorkFailed("the embedded Ray has no dashboard, which runs jobs; install ray[default]")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return connect(dashboard_url, warn_unauthenticated=False)
        except WorkFailed:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _check_on(cluster: Any, named: NamedEnv, out: TextIO, timeout_s: float, python: str | None = None) -> EnvCheck:
    from .client import guard

    client, url = cluster.client, cluster.dashboard_url
    submission_id = f"raymlp-env-check-{named.name}-{uuid.uuid4().hex[:8]}"
    build_log_file = f"{submission_id}.log"
    runtime_env = named.runtime_env()
    # Ray's runtime-env agent writes the build's log to this file too (relative: in the node's log
    # folder), which the dashboard serves; its own runtime_env_setup-<job>.log mixes every job's.
    runtime_env["config"] = {**runtime_env.get("config", {}), "log_files": [build_log_file]}
    print(
        f"env check {named.name}: {named.describe()}\n  building on {url} as Ray job {submission_id}",
        file=out,
        flush=True,
    )
    started = time.monotonic()
    while True:
        try:
            guard(
                lambda: client.submit_job(
                    entrypoint=check_entrypoint(named, python),
                    runtime_env=runtime_env,
                    submission_id=submission_id,
                    metadata={"raymlp": "env-check", "env": named.name},
                ),
                url,
                cluster.token,
            )
            break
        except RuntimeError as error:  # the Jobs API refused the request
            # A cluster that has just started has no job agent for a few seconds ("try again later").
            if "try again later" in str(error) and time.monotonic() - started < 60:
                time.sleep(1.0)
                continue
            raise WorkFailed(f"the cluster at {url} refused the check job: {_first_lines(str(error), 5)}") from None
    build = _BuildLog(cluster, build_log_file)
    status = _wait(client, url, cluster.token, submission_id, started, timeout_s, out, build)
    info = guard(lambda: client.get_job_info(submission_id), url, cluster.token)
    job_log = _job_log(client, submission_id)
    build_log = build.text(getattr(info, "driver_node_id", None))
    seconds = time.monotonic() - started
    if build_log:
        print(f"--- runtime environment build log ({named.name}) ---\n{build_log.rstrip()}", file=out)
    if _shown_output(job_log).strip():
        print(f"--- check job output ---\n{_shown_output(job_log).rstrip()}", file=out)
    out.flush()
    if status is None:
        raise WorkFailed(
            f"env check {named.name}: the job did not finish within {timeout_s:.0f}s; it was stopped and kept "
            f"as {submission_id} (`ray job logs {submission_id}` shows it)"
        )
    report = _report(job_log)
    if status == _BUILD_FAILED:
        # Stopped while Ray still builds (and retries) its environment: Ray's job manager would write
        # a deleted job back once the build gives up, so it stays, under its name, as the record.
        print(f"  the check job stays in the cluster's job list as {submission_id} (stopped)", file=out)
        raise WorkFailed(_build_failure(named, url, build_log, first_attempt=True))
    _delete(client, submission_id, out)
    if status != "SUCCEEDED":
        raise WorkFailed(_failure(named, url, info, report, job_log, build_log))
    return EnvCheck(
        name=named.name,
        submission_id=submission_id,
        dashboard_url=url,
        seconds=round(seconds, 1),
        python=report.get("python"),
        executable=report.get("executable"),
        ray=report.get("ray"),
        modules=report.get("modules", {}),
        env_vars=report.get("env_vars", {}),
        build_log=build_log,
        job_log=job_log,
    )


#: `_wait`'s answer when the build log showed the installer failing (the job was then stopped).
_BUILD_FAILED = "BUILD_FAILED"
#: What Ray's pip and uv plugins log when an attempt to install fails.
_INSTALL_FAILED = re.compile(r"Failed to install (pip|uv) packages")


def _wait(
    client: Any,
    url: str,
    token: Any,
    submission_id: str,
    started: float,
    timeout_s: float,
    out: TextIO,
    build: _BuildLog,
) -> str | None:
    """The job's final status; `_BUILD_FAILED` when the build log shows the installer's first attempt
    failing (Ray tries 3 times, each from a fresh virtualenv: minutes for the same error), or None
    when it ran past `timeout_s`; in both cases the job is stopped."""
    from .client import guard

    terminal = {"SUCCEEDED", "FAILED", "STOPPED"}
    last, shown, looked = None, started, started
    while True:
        status = guard(lambda: client.get_job_status(submission_id), url, token)
        name = getattr(status, "value", str(status))
        if name in terminal:
            return name
        now = time.monotonic()
        if name != last or now - shown > 30:
            print(f"  {name.lower()} ({now - started:.0f}s)", file=out, flush=True)
            last, shown = name, now
        if name == "PENDING" and now - looked > 3:
            looked = now
            if _INSTALL_FAILED.search(build.text()):
                _stop(client, submission_id, wait_s=30)
                return _BUILD_FAILED
        if now - started > timeout_s:
            _stop(client, submission_id, wait_s=0)
            return None
        time.sleep(0.5)


def _stop(client: Any, submission_id: str, wait_s: float) -> None:
    try:
        client.stop_job(submission_id)
    except Exception:  # already ending
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:  # until it can be deleted
        try:
            if str(getattr(client.get_job_status(submission_id), "value", "")) in ("STOPPED", "FAILED", "SUCCEEDED"):
                return
        except Exception:
            return
        time.sleep(0.5)


def _job_log(client: Any, submission_id: str) -> str:
    try:
        return client.get_job_logs(submission_id) or ""
    except Exception:  # no log yet (the driver never started)
        return ""


class _BuildLog:
    """The runtime-env build log Ray's agent writes for the check job (`log_files` of its
    runtime_env config: a file in the log folder of the node that builds it), read through the
    dashboard's log API from that node: the driver's node once known, else the head, else the others."""

    def __init__(self, cluster: Any, filename: str):
        self.base = cluster.dashboard_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {cluster.token.value}"} if cluster.token else {}
        self.filename = filename
        self.nodes: list[str] | None = None
        self.found: str | None = None

    def _candidates(self) -> list[str]:
        import requests

        if self.nodes is None:
            self.nodes = []
            try:
                reply = requests.get(
                    f"{self.base}/api/v0/nodes",
                    params={"limit": "1000", "detail": "false"},
                    headers=self.headers,
                    timeout=10,
                )
                rows = reply.json().get("data", {}).get("result", {}).get("result", []) if reply.ok else []
                alive = [row for row in rows if row.get("state") == "ALIVE"]
                self.nodes = [row["node_id"] for row in alive if row.get("is_head_node")] + [
                    row["node_id"] for row in alive if not row.get("is_head_node")
                ][:16]
            except (requests.exceptions.RequestException, ValueError, KeyError, AttributeError, TypeError):
                pass
        return self.nodes

    def text(self, node: str | None = None) -> str:
        """The log as it is now; "" when it cannot be had (yet)."""
        import requests

        nodes = [self.found] if self.found else [node] if node else []
        nodes += [candidate for candidate in self._candidates() if candidate not in nodes]
        for candidate in nodes:
            try:
                reply = requests.get(
                    f"{self.base}/api/v0/logs/file",
                    headers=self.headers,
                    timeout=30,
                    params={"node_id": candidate, "filename": self.filename, "lines": "5000"},
                )
            except requests.exceptions.RequestException:
                continue
            if reply.status_code == 200 and reply.text.strip():
                self.found = candidate
                return reply.text
        return ""


def _delete(client: Any, submission_id: str, out: TextIO, settle_s: float = 3.0, limit_s: float = 30.0) -> None:
    """Delete the ended check job. Ray 2.60's job manager writes a job deleted right after it ended
    back (FAILED, "Job supervisor actor died") when its monitor then sees the supervisor exit, so the
    deletion is repeated until the job has stayed gone for `settle_s`."""
    started, gone_since, problem = time.monotonic(), None, None
    while time.monotonic() - started < limit_s:
        try:
            client.get_job_status(submission_id)
            exists = True
        except Exception:  # "does not exist" (or the dashboard is gone: nothing to clean then)
            exists = False
        if exists:
            gone_since = None
            try:
                client.delete_job(submission_id)
            except Exception as error:  # not ended yet as far as Ray knows, or refused
                problem = error
        else:
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since >= settle_s:
                return
        time.sleep(0.5)
    reason = f": {_first_lines(str(problem), 2)}" if problem else ""
    print(f"warning: could not delete the check job {submission_id}{reason}", file=out)


def _report(job_log: str) -> dict[str, Any]:
    for line in reversed(job_log.splitlines()):
        if line.startswith(REPORT_MARKER):
            try:
                return json.loads(line[len(REPORT_MARKER) :])
            except ValueError:
                break
    return {}


def _failure(named: NamedEnv, url: str, info: Any, report: dict[str, Any], job_log: str, build_log: str) -> str:
    """One message: why the environment could not be used, with the installer's own error lines."""
    message = str(getattr(info, "message", "") or "")
    error_type = str(getattr(info, "error_type", "") or "")
    if "RUNTIME_ENV" in error_type.upper() or "runtime_env setup failed" in message:
        return _build_failure(named, url, message + "\n" + build_log)
    if report.get("failed"):
        failed = "\n  ".join(f"{module}: {error}" for module, error in report["failed"].items())
        return (
            f"environment '{named.name}' was built on {url}, but these modules do not import there "
            f"({report.get('executable')}):\n  {failed}\n(check `imports` and the requirements in {file_label(named.path)})"
        )
    missing = [name for name, present in report.get("env_vars", {}).items() if not present]
    if missing:
        return f"environment '{named.name}': env_vars missing in the job's process: {', '.join(missing)}"
    tail = _first_lines("\n".join(job_log.strip().splitlines()[-20:]), 20) if job_log.strip() else message
    return f"environment '{named.name}': the check job failed on {url}: {tail or error_type or 'no reason given'}"


def _build_failure(named: NamedEnv, url: str, text: str, first_attempt: bool = False) -> str:
    lines = _error_lines(text) or _first_lines(text, 20).splitlines()
    attempt = " (its first attempt; Ray would try again from scratch, to the same end)" if first_attempt else ""
    return (
        f"environment '{named.name}' could not be built on {url}{attempt}:\n  "
        + "\n  ".join(lines)
        + f"\n(fix {named.label}; the build log is above)"
    )


def _error_lines(text: str) -> list[str]:
    """pip's and uv's error lines (ERROR: ..., error: ...) in a build's output, each once."""
    wanted = re.compile(
        r"(^|\s)(ERROR|error|Error):|No matching distribution|Could not find a version|Because .* unsatisfiable"
    )
    found: list[str] = []
    for line in text.splitlines():
        line = re.sub(r"^.*?\b(?:INFO|ERROR|WARNING)\s+\S+\.py:\d+\s+--\s+", "", line).strip()
        if line and wanted.search(line) and line not in found:
            found.append(line)
    return found[:20]


def _first_lines(text: str, count: int) -> str:
    return "\n".join(text.strip().splitlines()[:count])
