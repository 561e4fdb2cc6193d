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
    document = {
        "proxy_location": "EveryNode",
        "http_options": http_options,
        "applications": [{
            "name": app_name,
            "route_prefix": config.route,
            "import_path": "raymlp.serve.app:app_builder",
            "args": {"spec": spec.model_dump(exclude_none=True),
                     "serve": config.model_dump(exclude_none=True, exclude={"host", "port", "route"})},
            "deployments": [deployment],
        }],
    }
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
    """Start Serve's HTTP proxy where the job says and run the application on its route.

    `quiet` keeps Serve's INFO lines (access logs, controller steps) off the console.
    """
    from ray import serve

    from .app import build_app

    logging_config = {"log_level": "WARNING"} if quiet else None
    http_options: dict[str, Any] = {"host": config.host, "port": config.port}
    if config.request_timeout_s is not None:
        http_options["request_timeout_s"] = config.request_timeout_s
    serve.start(http_options=http_options, logging_config=logging_config)
    try:
        serve.run(build_app(spec, config), name=app_name, route_prefix=config.route,
                  blocking=False, logging_config=logging_config)
    except Exception as error:
        raise WorkFailed(f"Serve could not start application '{app_name}': {error}") from None
    base = f"http://{_display_host(config.host)}:{config.port}{config.route.rstrip('/')}"
    return Endpoint(app_name=app_name, url=f"{base}/predict", health_url=f"{base}/health")


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
