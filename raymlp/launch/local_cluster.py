"""`raymlp cluster up|down --local`: an autoscaling Ray cluster on this machine (Ray's fake_multinode provider).

The head is `ray start --head --block --autoscaling-config=...` run in its own process group; Ray's
autoscaler (the head's monitor process) starts and stops worker raylets in that group as work
arrives and idles. `down` ends the group. State lives in RAYMLP_HOME/clusters/NAME/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raymlp import settings
from raymlp.errors import UsageError, WorkFailed

DEFAULT_DASHBOARD_PORT = 8265
#: Ports the cluster's own servers take: above Ray's worker ports (10002-19999), below the ephemeral range.
SPARE_PORTS = (20000, 32768)
#: The head answers within seconds; a loaded machine (CI) may take a minute.
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class LocalCluster:
    name: str
    pid: int
    gcs_address: str
    dashboard_url: str
    config: str
    log: str
    token_source: str
    temp_dir: str


def up(config_file: Path, *, port: int | None = None, dashboard_port: int | None = None) -> LocalCluster:
    """Start the head of `config_file`'s cluster here; returns once its dashboard answers."""
    from raymlp.runtime.tokens import find_token

    from .clusters import validate_cluster_file

    checked = validate_cluster_file(config_file)
    config = _load(config_file)
    provider = config.get("provider", {}).get("type")
    if provider != "fake_multinode":
        raise UsageError(
            f"{config_file}: provider.type: --local needs fake_multinode (this file's is {provider!r}); "
            "for a cloud or on-prem cluster drop --local (raymlp cluster up wraps ray up)"
        )
    name = checked.name
    state_dir = _state_dir(name)
    running = _running(name)
    if running:
        raise UsageError(
            f"cluster {name} is already up (dashboard {running.dashboard_url}, pid {running.pid}); "
            f"raymlp cluster down --local {config_file} stops it"
        )
    state_dir.mkdir(parents=True, exist_ok=True)

    from ray.util import get_node_ip_address

    port = port or spare_port(0)
    dashboard_port = dashboard_port or spare_port(DEFAULT_DASHBOARD_PORT)
    gcs_address = f"{get_node_ip_address()}:{port}"
    from .local_provider import MODULE

    # Ray's fake_multinode provider, run as an external one that keeps each node's unpacked
    # runtime environments apart (see local_provider), told where the head's GCS listens.
    config["provider"] = {**config["provider"], "type": "external", "module": MODULE, "gcs_address": gcs_address}
    effective = state_dir / "autoscaling.yaml"
    effective.write_text(json.dumps(config, indent=2))
    head = config["available_node_types"][config["head_node_type"]].get("resources", {})

    token = find_token()
    if token is None:
        token = _new_token()
    dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    command = [
        _ray_cli(),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={spare_port(0)}",
        f"--ray-client-server-port={spare_port(0)}",
        f"--autoscaling-config={effective}",
        "--disable-usage-stats",
        f"--num-cpus={int(head.get('CPU', 1))}",
        f"--num-gpus={int(head.get('GPU', 0))}",
    ]
    environment = {
        **os.environ,
        "RAY_FAKE_CLUSTER": "1",
        # The autoscaler looks every 5 s by default; one second keeps joins and idle exits prompt.
        "AUTOSCALER_UPDATE_INTERVAL_S": os.environ.get("AUTOSCALER_UPDATE_INTERVAL_S", "1"),
        "RAY_AUTH_MODE": "token",
        # Every node is this machine: a job's local storage root is the same folder on all of them.
        settings.STORAGE_SHARED_ENV: "1",
        "RAY_AUTH_TOKEN": token.value,
        # Its processes ask their own dashboard for Ray's state, not whichever cluster /tmp/ray names.
        "RAY_API_SERVER_ADDRESS": dashboard_url,
        # Jobs run `raymlp` and `python` from the installation that started the cluster.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    environment.pop("RAY_ADDRESS", None)
    # Its own Ray temp folder: jobs' drivers find their cluster through `ray_current_cluster` there
    # (Ray gives them RAY_ADDRESS=auto), never through /tmp/ray, which another Ray may own. Short,
    # since Ray's socket paths live under it.
    temp_dir = tempfile.mkdtemp(prefix=f"raymlp-{name}-", dir="/tmp" if Path("/tmp").is_dir() else None)
    command.append(f"--temp-dir={temp_dir}")
    log = state_dir / "head.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,
        )
    cluster = LocalCluster(
        name=name,
        pid=process.pid,
        gcs_address=gcs_address,
        dashboard_url=dashboard_url,
        config=str(config_file.resolve()),
        log=str(log),
        token_source=token.source,
        temp_dir=temp_dir,
    )
    (state_dir / "state.json").write_text(json.dumps(asdict(cluster), indent=2))
    _wait_until_up(process, cluster, token.value)
    return cluster


def down(config_file: Path, *, grace_s: float = 10.0) -> LocalCluster | None:
    """Stop the cluster `up` started from `config_file` (its head, autoscaler and every worker node)."""
    name = _load(config_file).get("cluster_name") or config_file.stem
    cluster = _read_state(name)
    if cluster is None:
        return None
    _end_group(cluster.pid, grace_s)
    (_state_dir(name) / "state.json").unlink(missing_ok=True)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    return cluster


def status(config_file: Path) -> LocalCluster | None:
    """The running cluster of `config_file`, if `up` started one that is still alive."""
    return _running(_load(config_file).get("cluster_name") or config_file.stem)


def _wait_until_up(process: subprocess.Popen, cluster: LocalCluster, token: str) -> None:
    import requests

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise WorkFailed(
                f"ray start exited with code {process.returncode}; its output ({cluster.log}):\n"
                + _tail(Path(cluster.log))
            )
        try:
            reply = requests.get(
                f"{cluster.dashboard_url}/api/jobs/", timeout=2, headers={"Authorization": f"Bearer {token}"}
            )
            if reply.ok and _still_running(process, seconds=3.0):
                return
        except requests.exceptions.RequestException:
            pass
        time.sleep(0.5)
    _end_group(process.pid, 5.0)
    raise WorkFailed(
        f"the head's dashboard did not answer within {START_TIMEOUT_S:.0f} s; its output "
        f"({cluster.log}):\n{_tail(Path(cluster.log))}"
    )


def _still_running(process: subprocess.Popen, seconds: float) -> bool:
    """The head's processes can die just after the dashboard first answers (a bad autoscaling config
    stops the monitor, and `ray start --block` then ends them all): give them a moment."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return True
    return False


def _end_group(pid: int, grace_s: float) -> None:
    """SIGTERM `ray start --block` (it stops the processes it started), then SIGKILL what is left of its
    group (worker nodes the autoscaler started)."""
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return
    os.kill(pid, signal.SIGTERM)
    if group != pid:  # not the group `up` made: never signal anyone else's processes
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _group_members(group) & {pid}:
        time.sleep(0.25)
    if _group_members(group):
        os.killpg(group, signal.SIGKILL)


def _group_members(group: int) -> set[int]:
    """The group's processes that still run (zombies do not count: nobody may reap them here)."""
    proc = Path("/proc")
    if not proc.is_dir():  # no /proc (macOS): only the group leader can be asked about
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return set()
        return {group}
    members = set()
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.add(int(stat.parent.name))
    return members


def _running(name: str) -> LocalCluster | None:
    cluster = _read_state(name)
    if cluster is None:
        return None
    try:
        os.kill(cluster.pid, 0)
    except ProcessLookupError:
        return None
    return cluster


def _read_state(name: str) -> LocalCluster | None:
    try:
        return LocalCluster(**json.loads((_state_dir(name) / "state.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _state_dir(name: str) -> Path:
    return settings.home().resolve() / "clusters" / name


def _load(config_file: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(config_file.read_text())
    except OSError as error:
        raise UsageError(f"{config_file}: cannot read: {error.strerror}") from None
    return loaded if isinstance(loaded, dict) else {}


def _new_token():
    """A new token saved where Ray looks (~/.ray/auth_token), as `ray get-auth-token --generate` does."""
    import secrets

    from raymlp.runtime.tokens import Token

    path = Path.home() / ".ray" / "auth_token"
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value)
    print(f"created a Ray auth token in {path}", file=sys.stderr)
    return Token(value, "~/.ray/auth_token")


def _ray_cli() -> str:
    beside = Path(sys.executable).parent / "ray"
    if beside.exists():
        return str(beside)
    found = shutil.which("ray")
    if not found:
        raise WorkFailed("the `ray` command is not installed next to this Python or on PATH")
    return found


def spare_port(preferred: int = 0) -> int:
    """`preferred` when free, else a free port below the kernel's ephemeral range (32768+): a port
    taken from that range could be handed to another process's connection before Ray binds it."""
    import random

    candidates = ([preferred] if preferred else []) + random.sample(range(*SPARE_PORTS), 200)
    for candidate in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("", candidate))
            except OSError:
                continue
            return candidate
    raise WorkFailed(f"no free port in {SPARE_PORTS[0]}-{SPARE_PORTS[1] - 1} on this machine")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"
