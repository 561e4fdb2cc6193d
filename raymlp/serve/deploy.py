"""Deploy a model package on Ray Serve and prove it answers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from raymlp.config.schema import ServeConfig
from raymlp.errors import WorkFailed


@dataclass(frozen=True)
class Endpoint:
    """A running endpoint."""

    app_name: str
    url: str
    health_url: str


def deploy(
    package_path: str, metadata: dict[str, Any], config: ServeConfig, app_name: str, *, quiet: bool = False
) -> Endpoint:
    """Start Serve's HTTP proxy where the job says and run the application on its route.

    `quiet` keeps Serve's INFO lines (access logs, controller steps) off the console.
    """
    from ray import serve

    from .app import build_app

    logging_config = {"log_level": "WARNING"} if quiet else None
    serve.start(http_options={"host": config.host, "port": config.port}, logging_config=logging_config)
    try:
        serve.run(build_app(package_path, metadata, config), name=app_name, route_prefix=config.route,
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


def smoke_request(endpoint: Endpoint, records: list[dict[str, Any]], timeout_s: float = 60.0) -> dict[str, Any]:
    """POST records to the endpoint (waiting for it to come up) and return the JSON answer."""
    import requests

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = requests.post(endpoint.url, json=records, timeout=10)
            if response.status_code == 200:
                return response.json()
            last = f"HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code not in (404, 503):
                break
        except requests.RequestException as error:
            last = str(error)
        time.sleep(0.5)
    raise WorkFailed(f"the endpoint {endpoint.url} did not answer a prediction: {last}")
