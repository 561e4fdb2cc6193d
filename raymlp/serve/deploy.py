"""Deploy a model package on Ray Serve and prove it answers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from raymlp.config.schema import ServeConfig
from raymlp.errors import UsageError, WorkFailed

from .app import EndpointSpec, key_digest


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
            raise UsageError(f"serve.api_keys_env: the environment variable {config.api_keys_env} is not set or holds no keys "
                             "(comma-separated API keys)")
        digests = [key_digest(key) for key in keys]
    registry = storage is not None and any(ref not in packages for ref in traffic)
    return EndpointSpec(
        model=model, traffic=traffic, packages=packages,
        tracking_uri=storage.tracking_uri if registry else None,
        storage_root=str(storage.root) if registry else None,
        cache_dir=str(storage.folder("cache", "models")) if registry else None,
        follow_aliases_s=config.follow_aliases_s,
        batching=config.batching.model_dump() if config.batching else None,
        max_body_bytes=config.max_body_bytes, max_records=config.max_records,
        api_key_sha256=digests, api_keys_env=config.api_keys_env if keys_from_replica_env else None, run_id=run_id,
        job=job, route=config.route,
    )


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
        "applications": [{
            "name": app_name,
            "route_prefix": config.route,
            "import_path": "raymlp.serve.app:app_builder",
            "args": {"spec": spec.model_dump(exclude_none=True),
                     # serve.env is resolved here, into the deployment's ray_actor_options.runtime_env
                     # (envs/ is not on the cluster): the builder there must not look it up again.
                     "serve": config.model_dump(exclude_none=True, exclude={"host", "port", "route", "env"})},
            "deployments": [deployment],
        }],
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
    controller_options = {"runtime_env": {"env_vars": haproxy_env(this_cluster=True)}} if config.ingress == "haproxy" else None
    serve.start(http_options=http_options, logging_config={"log_level": "WARNING" if quiet else "INFO"},
                controller_options=controller_options)


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
    import hashlib
    import tempfile

    import ray

    # Short: Serve adds the node id (56 characters) below it and HAProxy allows 97 for a socket path.
    cluster = hashlib.sha256(ray.get_runtime_context().gcs_address.encode()).hexdigest()[:8]
    folder = os.path.join(tempfile.gettempdir(), f"rmlp-{cluster}")
    stats_port, metrics_port, fallback_http_port, fallback_grpc_port = _free_ports(4)
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
    """Wait until the endpoint's /health answers 200."""
    import requests

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = requests.get(endpoint.health_url, timeout=10)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except requests.RequestException as error:
            last = str(error)
        time.sleep(0.5)
    raise WorkFailed(f"the endpoint {endpoint.health_url} did not become healthy: {last}")


def smoke_request(endpoint: Endpoint, records: list[dict[str, Any]], timeout_s: float = 60.0,
                  api_key: str | None = None) -> dict[str, Any]:
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
