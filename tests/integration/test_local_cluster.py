"""A cluster as users meet one, driven by the commands of README.md's section 8 as written there, in a
copy of the project folder after `raymlp data sample wine -o data/wine.csv` (data/ is in .gitignore):
`raymlp cluster up --local clusters/local-autoscaling.yaml` (a head of one CPU, with token auth and
the dashboard) takes the quickstart from Ray's own `ray job submit`, worker nodes joining for the
training and leaving when idle; a plain `ray start --head` takes it from `raymlp submit --include
data/wine.csv --follow`."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from raymlp.launch.local_cluster import spare_port

from .conftest import REPO, json_output, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLUSTER_FILE = REPO / "clusters" / "local-autoscaling.yaml"
README_ADDRESS = "http://127.0.0.1:8265"

# README.md section 8's commands, each run below as written there. What the test changes, and why:
# the address becomes the cluster's own (8265 may be taken on a test machine), `--set serve.port=N`
# is added (so is 8000), and `ray start --head` gets --block, its own temp folder and ports (other
# Rays run beside this one; --block lets the test end it, since `ray stop` would end them all).
RAY_START = "ray start --head"
CLUSTER_UP = "raymlp cluster up --local clusters/local-autoscaling.yaml"
SUBMIT = "raymlp submit jobs/quickstart.yaml"
JOBS_LIST = "raymlp jobs list"
CLUSTER_DOWN = "raymlp cluster down --local clusters/local-autoscaling.yaml"
RAY_JOB_SUBMIT = "RAY_AUTH_MODE=token ray job submit"


def readme_commands() -> list[str]:
    """The command lines of README.md's section 8 (its bash blocks, comments dropped)."""
    section = (REPO / "README.md").read_text().split("### 8. Run it on a cluster", 1)[1]
    section = re.split(r"\n##+ ", section, maxsplit=1)[0]
    lines = [
        re.sub(r"(^|\s)#.*$", "", line).strip()
        for block in re.findall(r"```bash\n(.*?)```", section, re.S)
        for line in block.splitlines()
    ]
    return [line for line in lines if line]


def readme(start: str) -> str:
    """The one README command (however often it appears) that begins with `start`."""
    found = {line for line in readme_commands() if line.startswith(start)}
    assert len(found) == 1, f"README section 8 has {len(found)} different commands starting {start!r}: {found}"
    return found.pop()


def test_every_command_of_the_readmes_cluster_section_is_run_here():
    known = (RAY_START, CLUSTER_UP, SUBMIT, JOBS_LIST, CLUSTER_DOWN, RAY_JOB_SUBMIT)
    assert [line for line in readme_commands() if not line.startswith(known)] == []
    assert all(readme(start) for start in known)


def run_readme(
    start: str,
    cluster_url: str,
    env: dict[str, str],
    cwd: Path,
    *,
    extra: str = "",
    background=False,
    timeout: int = 900,
    output=subprocess.PIPE,
):
    """A README command through bash (as pasted into a shell), with this environment's address."""
    line = readme(start).replace(README_ADDRESS, cluster_url) + extra
    shell_env = {**_shell(env), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if "RAY_API_SERVER_ADDRESS" in env:  # a head's own processes are told their dashboard
        shell_env["RAY_API_SERVER_ADDRESS"] = env["RAY_API_SERVER_ADDRESS"]
    if background:
        return subprocess.Popen(
            ["bash", "-c", line],
            cwd=cwd,
            env=shell_env,
            stdout=output,
            stderr=subprocess.STDOUT if output is not subprocess.PIPE else subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=shell_env, capture_output=True, text=True, timeout=timeout)


def _project_copy(tmp_path_factory) -> Path:
    """This project folder as a user has it: its files (not .git, .venv, state), data/ written by `data sample`."""
    project = tmp_path_factory.mktemp("cluster-project")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        if (REPO / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, project / name)
    assert "/data/" in (project / ".gitignore").read_text().splitlines()
    return project


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    project = _project_copy(tmp_path_factory)
    token = secrets.token_hex(32)
    # This cluster's own token, so that "no token" below cannot be rescued by another cluster's.
    env = {"RAYMLP_HOME": str(project / ".raymlp"), "RAY_ADDRESS": "", "RAY_AUTH_TOKEN": token}
    assert run_cli("data", "sample", "wine", "-o", "data/wine.csv", cwd=project, env=env).returncode == 0
    up = run_readme(CLUSTER_UP, README_ADDRESS, env, project, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    url = re.search(r"dashboard (http://\S+)", up.stdout).group(1)
    # where to get the token the dashboard asks for, never the token
    assert "(the dashboard asks for a token: `ray get-auth-token` prints it; it is in $RAY_AUTH_TOKEN)" in up.stdout
    assert token not in up.stdout + up.stderr
    state = {"project": project, "env": env, "url": url, "token": token, "workers_seen": set()}
    try:
        yield state
    finally:
        down = run_readme(CLUSTER_DOWN, url, env, project, timeout=120)
        assert down.returncode == 0, down.stderr
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/api/version", timeout=5)


@pytest.fixture(scope="module")
def ray_start_head(cluster, tmp_path_factory):
    """README's `ray start --head`, as a user who ran `make demo` (a token exists, so Ray turns token auth on)."""
    import tempfile

    from raymlp.launch.local_cluster import _end_group

    dashboard = spare_port()
    url = f"http://127.0.0.1:{dashboard}"
    temp_dir = tempfile.mkdtemp(prefix="rmlp-head-", dir="/tmp")  # short: Ray's socket paths live under it
    own = (
        f" --block --temp-dir={temp_dir} --port={spare_port()} --dashboard-port={dashboard}"
        f" --dashboard-agent-listen-port={spare_port()} --ray-client-server-port={spare_port()}"
    )
    env = {**cluster["env"], "RAY_API_SERVER_ADDRESS": url}
    env.pop("RAYMLP_HOME")  # the job keeps its state in its working_dir, as README's users' does (and is warned)
    log = tmp_path_factory.mktemp("ray-start") / "head.log"
    with log.open("w") as sink:
        head = run_readme(RAY_START, url, env, cluster["project"], extra=own, background=True, output=sink)
    try:
        deadline = time.monotonic() + 180
        while head.poll() is None and time.monotonic() < deadline:
            try:
                if requests.get(
                    f"{url}/api/jobs/", timeout=2, headers={"Authorization": f"Bearer {cluster['token']}"}
                ).ok:
                    break
            except requests.exceptions.RequestException:
                pass
            time.sleep(0.5)
        assert head.poll() is None, log.read_text()[-3000:]
        yield {
            **cluster,
            "url": url,
            "env": {name: value for name, value in env.items() if name != "RAY_API_SERVER_ADDRESS"},
        }
    finally:
        _end_group(head.pid, 30.0)
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _shell(*overrides: dict[str, str], drop: tuple[str, ...] = ()) -> dict[str, str]:
    """A laptop's shell for Ray's own CLI: Ray lets RAY_API_SERVER_ADDRESS and RAY_ADDRESS override
    `--address`, and this test process has them set for the session's cluster."""
    merged = {**os.environ}
    for extra in overrides:
        merged.update(extra)
    return {
        name: value for name, value in merged.items() if name not in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS", *drop)
    }


def _nodes(cluster) -> list[dict]:
    reply = requests.get(
        f"{cluster['url']}/api/v0/nodes?limit=100", timeout=10, headers={"Authorization": f"Bearer {cluster['token']}"}
    )
    reply.raise_for_status()
    return reply.json()["data"]["result"]["result"]


def _workers(cluster, state: str) -> set[str]:
    return {node["node_id"] for node in _nodes(cluster) if not node["is_head_node"] and node["state"] == state}


def test_a_submission_without_the_right_token_is_refused_and_told_how_to_supply_one(cluster, tmp_path):
    no_token = {**cluster["env"], "RAY_AUTH_TOKEN": "", "HOME": str(tmp_path)}
    refused = run_cli(
        "submit",
        "jobs/quickstart.yaml",
        "--include",
        "data/wine.csv",
        "--address",
        cluster["url"],
        cwd=cluster["project"],
        env=no_token,
    )
    assert refused.returncode == 1
    assert f"the Ray cluster at {cluster['url']} requires a token and none was found" in refused.stderr
    assert "RAY_AUTH_TOKEN" in refused.stderr and "~/.ray/auth_token" in refused.stderr
    wrong = run_cli(
        "jobs",
        "list",
        "--address",
        cluster["url"],
        cwd=cluster["project"],
        env={**cluster["env"], "RAY_AUTH_TOKEN": "not-this-clusters-token"},
    )
    assert wrong.returncode == 1 and "refused the token from RAY_AUTH_TOKEN" in wrong.stderr

    ray_cli = subprocess.run(
        [
            str(Path(sys.executable).parent / "ray"),
            "job",
            "submit",
            "--address",
            cluster["url"],
            "--working-dir",
            ".",
            "--",
            "raymlp",
            "run",
            "jobs/quickstart.yaml",
        ],
        cwd=cluster["project"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_shell(no_token, drop=("RAY_AUTH_MODE",)),
    )
    assert ray_cli.returncode != 0  # a laptop's shell: no RAY_AUTH_MODE, no token; the cluster says 401
    assert "Authentication required" in ray_cli.stderr and "RAY_AUTH_TOKEN" in ray_cli.stderr
    assert (
        json_output(
            run_cli("jobs", "list", "--json", "--address", cluster["url"], cwd=cluster["project"], env=cluster["env"])
        )
        == []
    )


def test_the_readmes_quickstart_runs_through_ray_job_submit_on_workers_that_join_and_raymlp_submit_on_ray_start(
    cluster, ray_start_head
):
    assert _workers(cluster, "ALIVE") == set()  # the head alone: one CPU, and training wants two workers
    project = cluster["project"]
    # Ray's own CLI on the autoscaling cluster, raymlp's on `ray start --head`, at the same time.
    by_ray = run_readme(
        RAY_JOB_SUBMIT,
        cluster["url"],
        cluster["env"],
        project,
        background=True,
        extra=f" --set serve.port={spare_port()}",
    )
    try:
        submitted = run_readme(
            SUBMIT, ray_start_head["url"], ray_start_head["env"], project, extra=f" --set serve.port={spare_port()}"
        )
        ray_out, ray_err = by_ray.communicate(timeout=900)
    finally:
        if by_ray.poll() is None:
            os.killpg(by_ray.pid, signal.SIGKILL)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    submission_id = re.search(r"submitted (raymlp-wine-quickstart-\S+)", submitted.stderr).group(1)
    assert re.search(r"files, \d+ KiB; --include carried data/wine.csv\)", submitted.stderr)
    assert (
        f"dashboard: {ray_start_head['url']}/#/jobs/{submission_id} (the dashboard asks for a token: "
        "`ray get-auth-token` prints it; it is in $RAY_AUTH_TOKEN)"
    ) in submitted.stderr
    assert "answered: 'class_" in submitted.stdout and f"{submission_id}: SUCCEEDED" in submitted.stderr

    assert by_ray.returncode == 0, ray_out[-3000:] + ray_err[-3000:]
    assert re.search(r"Job 'raysubmit_\w+' succeeded", ray_out + ray_err)
    assert "/wine/predict (answered: 'class_" in ray_out

    cluster["workers_seen"] |= _workers(cluster, "ALIVE") | _workers(cluster, "DEAD")
    assert cluster["workers_seen"]  # the autoscaler added worker nodes for the training
    head = ray_start_head
    status = json_output(
        run_cli("jobs", "status", submission_id, "--json", "--address", head["url"], cwd=project, env=head["env"])
    )
    assert status["status"] == "SUCCEEDED" and status["raymlp_job"] == "wine-quickstart"
    logs = run_cli("jobs", "logs", submission_id, "--address", head["url"], cwd=project, env=head["env"])
    assert logs.returncode == 0 and "wine@1: 178 rows" in logs.stdout
    listed = run_readme(JOBS_LIST, cluster["url"], cluster["env"], project)
    assert listed.returncode == 0 and re.search(r"raysubmit_\w+\s.*SUCCEEDED", listed.stdout), listed.stdout


def test_idle_worker_nodes_leave(cluster):
    # The quickstart leaves its endpoint up; once the Serve apps are gone nothing holds the workers.
    deleted = requests.delete(
        f"{cluster['url']}/api/serve/applications/", timeout=60, headers={"Authorization": f"Bearer {cluster['token']}"}
    )
    assert deleted.ok, deleted.text
    cluster["workers_seen"] |= _workers(cluster, "ALIVE") | _workers(cluster, "DEAD")
    assert cluster["workers_seen"], "no worker node ever joined"
    deadline = time.monotonic() + 180  # idle_timeout_minutes: 0.25, plus the autoscaler's and raylets' own pace
    while _workers(cluster, "ALIVE") and time.monotonic() < deadline:
        time.sleep(2)
    assert _workers(cluster, "ALIVE") == set()
    assert cluster["workers_seen"] <= _workers(cluster, "DEAD")


def test_a_cluster_that_takes_jobs_without_a_token_gets_a_warning(tmp_path):
    import signal

    port, dashboard = spare_port(), spare_port()
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--dashboard-agent-listen-port={spare_port()}",
            f"--ray-client-server-port={spare_port()}",
            "--num-cpus=0",
            "--disable-usage-stats",
        ],
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{dashboard}/api/jobs/", timeout=2).ok:
                    break
            except requests.exceptions.ConnectionError:
                time.sleep(0.5)
        listed = run_cli("jobs", "list", "--address", f"http://127.0.0.1:{dashboard}", cwd=tmp_path, env={})
        assert listed.returncode == 0, listed.stderr
        assert "accepts jobs without a token: anyone who can reach its dashboard can run code there" in listed.stderr
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=60)
