"""One local Ray for every integration test, and helpers to drive the CLI against it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def ray_4_cpus():
    """A local Ray with 4 logical CPUs, shared by the whole session; CLI subprocesses join it."""
    import tempfile

    import ray

    # Ray's workers keep the working directory the cluster started in. Start it in an empty one,
    # so a relative path that reaches a worker unresolved fails here as it would on a cluster.
    here = os.getcwd()
    os.chdir(tempfile.mkdtemp(prefix="raymlp-ray-cwd-"))
    try:
        # address="local": always a new cluster, even when another Ray runs on this machine. Its
        # processes, and raymlp subprocesses joining it (which forward the variable), ask its own
        # dashboard for Ray's state, not whichever cluster /tmp/ray points at.
        port = _free_port()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        # A runtime env that cannot build is tried twice, not three times (each a clone of the whole
        # virtualenv here): `raymlp env check`'s failing case stops its job at the first failure and
        # then waits out Ray's own last attempt.
        os.environ.setdefault("RUNTIME_ENV_RETRY_TIMES", "2")
        # As quiet as the command line: example jobs run in this process are checked for library output.
        from raymlp.verbosity import quiet_libraries, quiet_ray_driver, ray_init_options

        quiet_libraries()
        quiet_ray_driver()
        ray.init(
            address="local",
            num_cpus=4,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=port,
            object_store_memory=1_500_000_000,
            **ray_init_options(),
            runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": os.environ["RAY_API_SERVER_ADDRESS"]}},
        )
    finally:
        os.chdir(here)
    yield ray.get_runtime_context().gcs_address
    try:
        from ray import serve

        from raymlp.serve.deploy import remove_ingress_files

        serve.shutdown()
        remove_ingress_files()  # HAProxy's folder ($TMPDIR/rmlp-*), as an embedded Ray's shutdown does
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def serve_port(ray_4_cpus) -> int:
    """The one HTTP port Serve listens on in this session (Serve fixes it, and the ingress, when it first starts)."""
    from raymlp.config.schema import ServeConfig
    from raymlp.serve.deploy import start_serve

    port = _free_port()
    start_serve(ServeConfig(port=port), quiet=True)
    return port


def run_cli(*args: str, cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    """Run `raymlp ARGS` as a user would, in `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "raymlp", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_on_terminal(*args: str, cwd: Path, env: dict[str, str], timeout: int = 600) -> tuple[int, str]:
    """Run `raymlp ARGS` on a pseudo-terminal, as in a user's shell; its exit code and what the terminal got."""
    import pty
    import select
    import time

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "raymlp", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "120", **env},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal closed: every process holding it ended
                    break
                if not chunk:
                    break
                received += chunk
            elif process.poll() is not None:
                break
        else:
            process.kill()
    finally:
        os.close(controller)
    return process.wait(timeout=30), received.decode("utf-8", "replace")


def json_output(result: subprocess.CompletedProcess) -> object:
    """The JSON document a `--json` command printed (Ray may add lines of its own around it)."""
    text = result.stdout
    start = min(index for index in (text.find("{\n"), text.find("[\n"), text.find("[]")) if index >= 0)
    return json.JSONDecoder().raw_decode(text[start:])[0]
