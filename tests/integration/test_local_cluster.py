"""A cluster as users meet one: `raymlp cluster up --local clusters/local-autoscaling.yaml` (a head of
one CPU, with token auth and the dashboard), the quickstart sent with `raymlp submit --follow` and
with Ray's own `ray job submit`, worker nodes joining for the training and leaving when idle."""

from __future__ import annotations

import os
import re
import secrets
import shutil
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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    project = tmp_path_factory.mktemp("cluster-project")
    (project / "jobs").mkdir()
    shutil.copy(REPO / "jobs" / "quickstart.yaml", project / "jobs" / "quickstart.yaml")
    token = secrets.token_hex(32)
    # This cluster's own token, so that "no token" below cannot be rescued by another cluster's.
    env = {"RAYMLP_HOME": str(project / ".raymlp"), "RAY_ADDRESS": "", "RAY_AUTH_TOKEN": token}
    assert run_cli("data", "sample", "wine", "-o", "data/wine.csv", cwd=project, env=env).returncode == 0
    up = run_cli("cluster", "up", "--local", str(CLUSTER_FILE), cwd=project, env=env, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    url = re.search(r"dashboard (http://\S+)", up.stdout).group(1)
    state = {"project": project, "env": env, "url": url, "token": token, "workers_seen": set(),
             "serve_port": spare_port()}  # Serve keeps the port it first started with, as on any cluster
    try:
        yield state
    finally:
        down = run_cli("cluster", "down", "--local", str(CLUSTER_FILE), cwd=project, env=env, timeout=120)
        assert down.returncode == 0, down.stderr
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/api/version", timeout=5)


def _shell(*overrides: dict[str, str], drop: tuple[str, ...] = ()) -> dict[str, str]:
    """A laptop's shell for Ray's own CLI: Ray lets RAY_API_SERVER_ADDRESS and RAY_ADDRESS override
    `--address`, and this test process has them set for the session's cluster."""
    merged = {**os.environ}
    for extra in overrides:
        merged.update(extra)
    return {name: value for name, value in merged.items()
            if name not in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS", *drop)}


def _nodes(cluster) -> list[dict]:
    reply = requests.get(f"{cluster['url']}/api/v0/nodes?limit=100", timeout=10,
                         headers={"Authorization": f"Bearer {cluster['token']}"})
    reply.raise_for_status()
    return reply.json()["data"]["result"]["result"]


def _workers(cluster, state: str) -> set[str]:
    return {node["node_id"] for node in _nodes(cluster) if not node["is_head_node"] and node["state"] == state}


def test_a_submission_without_the_right_token_is_refused_and_told_how_to_supply_one(cluster, tmp_path):
    no_token = {**cluster["env"], "RAY_AUTH_TOKEN": "", "HOME": str(tmp_path)}
    refused = run_cli("submit", "jobs/quickstart.yaml", "--address", cluster["url"], cwd=cluster["project"],
                      env=no_token)
    assert refused.returncode == 1
    assert f"the Ray cluster at {cluster['url']} requires a token and none was found" in refused.stderr
    assert "RAY_AUTH_TOKEN" in refused.stderr and "~/.ray/auth_token" in refused.stderr
    wrong = run_cli("jobs", "list", "--address", cluster["url"], cwd=cluster["project"],
                    env={**cluster["env"], "RAY_AUTH_TOKEN": "not-this-clusters-token"})
    assert wrong.returncode == 1 and "refused the token from RAY_AUTH_TOKEN" in wrong.stderr

    ray_cli = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", cluster["url"], "--working-dir", ".",
         "--", "raymlp", "run", "jobs/quickstart.yaml"],
        cwd=cluster["project"], capture_output=True, text=True, timeout=120,
        env=_shell(no_token, drop=("RAY_AUTH_MODE",)))
    assert ray_cli.returncode != 0  # a laptop's shell: no RAY_AUTH_MODE, no token; the cluster says 401
    assert "Authentication required" in ray_cli.stderr and "RAY_AUTH_TOKEN" in ray_cli.stderr
    assert json_output(run_cli("jobs", "list", "--json", "--address", cluster["url"], cwd=cluster["project"],
                               env=cluster["env"])) == []


def test_the_quickstart_runs_through_raymlp_submit_and_through_ray_job_submit_on_workers_that_join(cluster):
    assert _workers(cluster, "ALIVE") == set()  # the head alone: one CPU, and training wants two workers
    home, ray_home = cluster["project"] / "state-submit", cluster["project"] / "state-ray-cli"
    # Ray's own CLI sends the same job at the same time (its own name and route: both stay served).
    by_ray = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", cluster["url"], "--working-dir", ".",
         "--runtime-env-json", f'{{"env_vars": {{"RAYMLP_HOME": "{ray_home}"}}}}',
         "--", "raymlp", "run", "jobs/quickstart.yaml", "--set", f"serve.port={cluster['serve_port']}",
         "--set", "name=wine-by-ray", "--set", "serve.route=/wine-by-ray"],
        cwd=cluster["project"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_shell(cluster["env"], {"RAY_AUTH_MODE": "token"}))
    try:
        submitted = run_cli("submit", "jobs/quickstart.yaml", "--address", cluster["url"], "--follow",
                            "--env-var", f"RAYMLP_HOME={home}", "--set", f"serve.port={cluster['serve_port']}",
                            cwd=cluster["project"], env=cluster["env"], timeout=900)
        ray_out, ray_err = by_ray.communicate(timeout=900)
    finally:
        if by_ray.poll() is None:
            by_ray.kill()
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    submission_id = re.search(r"submitted (raymlp-wine-quickstart-\S+)", submitted.stderr).group(1)
    assert f"dashboard: {cluster['url']}/#/jobs/{submission_id}" in submitted.stderr
    assert re.search(r"Adding \d node\(s\) of type ray.worker.cpu", submitted.stdout)  # the autoscaler, in the job's log
    assert "answered: 'class_" in submitted.stdout and f"{submission_id}: SUCCEEDED" in submitted.stderr

    assert by_ray.returncode == 0, ray_out[-3000:] + ray_err[-3000:]
    assert re.search(r"Job 'raysubmit_\w+' succeeded", ray_out + ray_err)
    assert "/wine-by-ray/predict (answered: 'class_" in ray_out

    cluster["workers_seen"] |= _workers(cluster, "ALIVE") | _workers(cluster, "DEAD")
    assert cluster["workers_seen"]
    for state, job in ((home, "wine"), (ray_home, "wine")):
        made = json_output(run_cli("data", "list", "--json", cwd=cluster["project"], env={"RAYMLP_HOME": str(state)}))
        assert [(item["name"], item["version"], item["rows"]) for item in made] == [(job, 1, 178)]
    status = json_output(run_cli("jobs", "status", submission_id, "--json", "--address", cluster["url"],
                                 cwd=cluster["project"], env=cluster["env"]))
    assert status["status"] == "SUCCEEDED" and status["raymlp_job"] == "wine-quickstart"
    logs = run_cli("jobs", "logs", submission_id, "--address", cluster["url"], cwd=cluster["project"],
                   env=cluster["env"])
    assert logs.returncode == 0 and "wine@1: 178 rows" in logs.stdout
    listed = json_output(run_cli("jobs", "list", "--json", "--address", cluster["url"], cwd=cluster["project"],
                                 env=cluster["env"]))
    assert sorted(job["status"] for job in listed) == ["SUCCEEDED", "SUCCEEDED"]


def test_idle_worker_nodes_leave(cluster):
    # The quickstart leaves its endpoint up; once the Serve apps are gone nothing holds the workers.
    deleted = requests.delete(f"{cluster['url']}/api/serve/applications/", timeout=60,
                              headers={"Authorization": f"Bearer {cluster['token']}"})
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
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={spare_port()}",
         f"--ray-client-server-port={spare_port()}", "--num-cpus=0", "--disable-usage-stats"],
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)
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
