"""`raymlp env check` against the session's Ray: an environment is really built (pip from the
package index) and its packages imported on the cluster; a package that does not exist fails with
pip's own words. Also: inside a submitted Ray job, the job file's env reaches `ray.init` without
clashing with the submission's runtime_env.

Ray builds a pip environment by cloning the virtualenv the cluster runs from (several GB here,
30-60 s), so the checks run at once and the built environment is removed afterwards."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from raymlp.launch import env_check

pytestmark = [pytest.mark.integration]

ENVS = {
    "tab": "description: a small pure-Python package\npip: [tabulate==0.9.0]\n",
    "vars": "env_vars: {RAYMLP_CHECK_PROBE: hello, RAYMLP_CHECK_NUMBER: 3}\nimports: [json]\n",
    "nosuch": "pip: [raymlp-no-such-package-xyz==1.0]\n",
}


def _start(name: str, cwd: Path, address: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "raymlp", "env", "check", name, "--timeout", "400"],
        cwd=cwd,
        env={**os.environ, "RAY_ADDRESS": address},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def jobs_api(ray_4_cpus):
    """The session cluster's Jobs API, once it accepts jobs. Ray's job agent listens on port 52365
    whatever ray.init is told: where another Ray on the machine holds that port, this cluster has
    none and cannot run a submitted job at all (its dashboard says so: "No available agent")."""
    from raymlp.launch.client import connect

    client = connect(os.environ.get("RAY_API_SERVER_ADDRESS") or ray_4_cpus, warn_unauthenticated=False).client
    deadline = time.monotonic() + 30
    while True:
        try:
            probe = client.submit_job(entrypoint="true")
            break
        except RuntimeError as error:
            if "No available agent" not in str(error):
                raise
            if time.monotonic() > deadline:
                message = "the session's Ray has no job agent: its port 52365 is held by another Ray on this machine"
                if os.environ.get("CI") == "true":  # a CI machine runs no other Ray: there this is a failure
                    pytest.fail(message)
                pytest.skip(message)
            time.sleep(1.0)
    while str(client.get_job_status(probe).value) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        time.sleep(0.5)
    env_check._delete(client, probe, sys.stderr)
    return client


def _check_jobs(client) -> list[str]:
    return [
        job.submission_id for job in client.list_jobs() if (job.submission_id or "").startswith("raymlp-env-check-")
    ]


def _remove_built_env(requirement: str) -> None:
    """The session cluster keeps a built environment (a clone of the whole virtualenv) until it stops,
    and its folder after that: remove this test's."""
    import ray

    node = ray._private.worker._global_node
    folder = Path(node.get_session_dir_path()) / "runtime_resources" / "pip"
    for built in folder.glob("*"):
        requirements = built / "ray_runtime_env_internal_pip_requirements.txt"
        if requirements.is_file() and requirement in requirements.read_text():
            shutil.rmtree(built, ignore_errors=True)


def _wait_for_ray_to_give_up(err: str, limit_s: float = 480) -> None:
    """`env check` stops at the installer's first failure, but Ray's agent builds the environment again
    (RUNTIME_ENV_RETRY_TIMES attempts, each cloning the virtualenv, each deleted when pip fails): wait
    for the last, so that no half-built clone is left in the session folder when the cluster stops."""
    import re

    import ray
    from ray._private.runtime_env.agent.runtime_env_consts import RUNTIME_ENV_RETRY_TIMES

    submission = re.search(r"as Ray job (raymlp-env-check-\S+)", err).group(1)
    log = Path(ray._private.worker._global_node.get_logs_dir_path()) / f"{submission}.log"
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if log.is_file() and log.read_text().count("Failed to install pip packages") >= RUNTIME_ENV_RETRY_TIMES:
            return
        time.sleep(2)


def test_env_check_builds_imports_and_reports_pip_errors(tmp_path, ray_4_cpus, jobs_api):
    for name, text in ENVS.items():
        (tmp_path / "envs").mkdir(exist_ok=True)
        (tmp_path / "envs" / f"{name}.yaml").write_text(text)
    before = set(_check_jobs(jobs_api))
    started = time.monotonic()
    running = {name: _start(name, tmp_path, ray_4_cpus) for name in ENVS}
    try:
        results = {name: process.communicate(timeout=600) + (process.returncode,) for name, process in running.items()}
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
        _remove_built_env("tabulate==0.9.0")
    print(f"three env checks in {time.monotonic() - started:.0f}s")
    _wait_for_ray_to_give_up(results["nosuch"][1])
    print(f"Ray's own attempts at 'nosuch' ended after {time.monotonic() - started:.0f}s")
    _remove_built_env("raymlp-no-such-package-xyz")

    out, err, code = results["tab"]
    assert code == 0, err[-4000:]
    row = next(line for line in out.splitlines() if "tabulate" in line)
    assert "0.9.0" in row and "runtime_resources" in row  # imported from the environment Ray built
    assert "Successfully installed tabulate-0.9.0" in err  # the build log is shown

    out, err, code = results["vars"]
    assert code == 0, err[-4000:]
    assert "$RAYMLP_CHECK_PROBE" in out and "$RAYMLP_CHECK_NUMBER" in out and "MISSING" not in out

    out, err, code = results["nosuch"]
    assert code == 1, err[-4000:]
    error = err[err.index("error: ") :]
    assert error.startswith("error: environment 'nosuch' could not be built on http://")
    assert "No matching distribution found for raymlp-no-such-package-xyz==1.0" in error
    assert "Traceback" not in error

    # The check jobs are deleted once they end; one stopped during its build stays, under its name.
    left = set(_check_jobs(jobs_api)) - before
    assert [job.split("-")[3] for job in left] == ["nosuch"], {
        name: result[1][-600:] for name, result in results.items()
    }
    assert f"stays in the cluster's job list as {left.pop()} (stopped)" in results["nosuch"][1]


def test_a_submitted_job_gets_the_job_files_env_without_a_conflict(tmp_path, ray_4_cpus, jobs_api):
    """Ray refuses ray.init's runtime_env when a key (an env var name) is also in the submission's;
    raymlp gives ray.init only what the submission lacks, and the workers get both. (The driver is
    given the cluster's address: Ray sets a submitted driver's RAY_ADDRESS from /tmp/ray's latest
    `ray start` cluster, which on a machine shared with other clusters may be another one.)"""
    job = tmp_path / "job.yaml"
    job.write_text(
        textwrap.dedent("""\
        version: 1
        name: envs-in-a-job
        env: {env_vars: {RAYMLP_FROM_SUBMISSION: "same", RAYMLP_FROM_JOB_FILE: "added"}}
        data:
          source: {format: sklearn, sklearn: {name: wine}}
          dataset: {name: wine}
        """)
    )
    script = textwrap.dedent(f"""\
        import json, os, ray
        from raymlp.config import load_job
        from raymlp.pipeline import _runtime_env
        from raymlp.runtime.envs import outside_the_submission
        given = _runtime_env(load_job({str(job)!r}))  # what ray_runtime reconciles, as it does
        runtime_env = outside_the_submission(given["runtime_env"], given["env_described"])
        ray.init({ray_4_cpus!r}, runtime_env=runtime_env, logging_level="WARNING")
        seen = ray.get(ray.remote(lambda: {{name: os.environ.get(name) for name in
                       ("RAYMLP_FROM_SUBMISSION", "RAYMLP_FROM_JOB_FILE")}}).remote())
        print("RESULT " + json.dumps({{"given": runtime_env, "seen": seen}}))
        """)
    client = jobs_api
    submission = client.submit_job(
        entrypoint=f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}",
        runtime_env={"env_vars": {"RAYMLP_FROM_SUBMISSION": "same"}},
    )
    try:
        deadline = time.monotonic() + 180
        while str(client.get_job_status(submission).value) not in ("SUCCEEDED", "FAILED", "STOPPED"):
            assert time.monotonic() < deadline, "the submitted job did not finish"
            time.sleep(0.5)
        logs = client.get_job_logs(submission)
        assert str(client.get_job_status(submission).value) == "SUCCEEDED", logs[-3000:]
    finally:
        env_check._delete(client, submission, sys.stderr)
    result = json.loads(next(line for line in logs.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    assert result["given"] == {"env_vars": {"RAYMLP_FROM_JOB_FILE": "added"}}
    assert result["seen"] == {"RAYMLP_FROM_SUBMISSION": "same", "RAYMLP_FROM_JOB_FILE": "added"}
