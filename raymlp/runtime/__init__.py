"""How a process gets Ray: join RAY_ADDRESS / --address, else start an embedded local Ray.

This is the one place that decides; every command goes through `ray_runtime`. It is also the one place
that reconciles the job's runtime_env with a submitted job's own (`envs.outside_the_submission`).
Below it: `envs` (stage and submission runtime envs), `tokens` (Ray's auth token, the dashboard
line), `upload` (what Ray's working_dir upload leaves out, and why).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from raymlp import settings
from raymlp.errors import WorkFailed


@dataclass(frozen=True)
class RayRuntime:
    """The Ray this process uses."""

    address: str | None
    embedded: bool
    startup_seconds: float
    dashboard_url: str | None

    @property
    def dashboard(self) -> str | None:
        """The dashboard link as printed: with how to get past its token prompt when token auth is on."""
        if self.dashboard_url is None:
            return None
        from .tokens import dashboard_line, find_token, local_token_auth

        try:
            token = find_token()
        except Exception:  # an unreadable RAY_AUTH_TOKEN_PATH: the link alone
            token = None
        return dashboard_line(self.dashboard_url, token, local_token_auth())


@contextmanager
def ray_runtime(
    address: str | None = None,
    *,
    runtime_env: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    env_described: str = "the job file's env",
) -> Iterator[RayRuntime]:
    """Connect to Ray for the duration of the block; an embedded Ray started here is shut down after.

    `runtime_env` (the job's `env`, as `raymlp.config.envs` resolves it) is what `ray.init` gets;
    inside a submitted Ray job only what the submission's own runtime_env lacks
    (`envs.outside_the_submission`, `env_described` naming it in its messages): a submission that
    disagrees on packages or image is a `UsageError`, raised before anything connects.
    `metadata` labels this driver's Ray job (the dashboard's Jobs view); a connection that already
    exists (a notebook, a test session) keeps its own.
    """
    import ray

    from .envs import outside_the_submission

    if ray.is_initialized():
        outside_the_submission(runtime_env, env_described)  # the same refusal; the connection is not changed
        context = ray.get_runtime_context()
        yield RayRuntime(address=context.gcs_address, embedded=False, startup_seconds=0.0, dashboard_url=None)
        return

    address = address or settings.ray_address()
    started = time.perf_counter()
    dashboard_port = None if address else _dashboard_port()
    # Ray's own state API (which Ray Train's placement-group cleaner uses to see whether a run's
    # controller is alive) finds "the" cluster of this machine through /tmp/ray unless told: with
    # two clusters on one machine it asked the other one, found no controller, and removed a live
    # run's placement group. The job's processes are told which dashboard is theirs: the embedded
    # cluster's own, or for a cluster joined, the one RAY_API_SERVER_ADDRESS names if set.
    # The embedded cluster's processes inherit this process's environment (its raylet is a child of
    # this one), so there it is set here rather than in the job's runtime_env: a job with a
    # runtime_env cannot use the workers Ray prestarts, and each of its tasks waits for a new one.
    # An embedded Ray is one machine that no cloud preempts: Ray Train's preemption watcher (one more
    # process started before a run's first step) has nothing to watch there, unless asked for.
    embedded_env = (
        {
            API_SERVER_ENV: f"http://127.0.0.1:{dashboard_port}",
            PREEMPTION_WATCHER_ENV: os.environ.get(PREEMPTION_WATCHER_ENV, "0"),
        }
        if dashboard_port
        else {}
    )
    # A joined cluster's job gets this driver's RAY_API_SERVER_ADDRESS forwarded in its runtime_env;
    # inside a submitted job whose runtime_env already sets it, Ray would refuse the same name twice.
    forwarded = (
        {API_SERVER_ENV: os.environ[API_SERVER_ENV]} if not dashboard_port and os.environ.get(API_SERVER_ENV) else None
    )
    runtime_env = outside_the_submission(runtime_env, env_described, forwarded)
    outer_env = {name: os.environ.get(name) for name in embedded_env}
    os.environ.update(embedded_env)
    try:
        with _ray_connected(address, runtime_env, dashboard_port, started, metadata) as runtime:
            yield runtime
    finally:
        for name, value in outer_env.items():
            _restore_env(name, value)


@contextmanager
def _ray_connected(
    address: str | None,
    runtime_env: dict[str, Any] | None,
    dashboard_port: int | None,
    started: float,
    metadata: dict[str, str] | None = None,
) -> Iterator[RayRuntime]:
    import ray
    from ray.job_config import JobConfig

    from raymlp.verbosity import quiet_ray_driver, ray_init_options

    quiet_ray_driver()

    common: dict[str, Any] = {
        **ray_init_options(),
        "runtime_env": runtime_env or None,
        "job_config": JobConfig(metadata={key: str(value) for key, value in (metadata or {}).items()}),
    }
    try:
        if address:
            info = ray.init(address=address, **common)
        else:
            info = ray.init(
                # Never whichever cluster `ray start` last left in /tmp/ray (Ray joins it on a bare init).
                address="local",
                num_cpus=settings.local_cpus(),
                object_store_memory=settings.local_object_store_bytes(),
                dashboard_host="127.0.0.1",
                dashboard_port=dashboard_port,
                **common,
            )
    except ConnectionError as error:
        raise WorkFailed(f"cannot reach the Ray cluster at {address}: {error}") from None
    except Exception as error:  # Ray raises many kinds here; name the cause and the address
        where = f"the Ray cluster at {address}" if address else "an embedded local Ray"
        raise WorkFailed(f"could not start or join {where}: {type(error).__name__}: {error}") from None
    runtime = RayRuntime(
        address=address,
        embedded=not address,
        startup_seconds=time.perf_counter() - started,
        dashboard_url=f"http://{info.dashboard_url}" if getattr(info, "dashboard_url", None) else None,
    )
    try:
        yield runtime
    finally:
        if runtime.embedded:
            _shutdown_serve_quietly()
        ray.shutdown()


#: The dashboard (API server) URL Ray's state API uses; forwarded to a job's processes.
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def _dashboard_port() -> int:
    """8265, Ray's usual dashboard port, when it is free; else any free port."""
    import socket

    for port in (8265, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise WorkFailed("no free port for the Ray dashboard")


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _shutdown_serve_quietly() -> None:
    import sys

    if "ray.serve" not in sys.modules:
        return
    from ray import serve

    try:
        serve.shutdown()
    except Exception:  # Serve never started in this cluster, or is already gone
        pass
    for hook in _AFTER_SERVE_SHUTDOWN:
        hook()


#: What raymlp's layers above ask to be run once Serve has shut down in an embedded Ray, before Ray
#: stops (serve: remove the HAProxy ingress folder of the cluster).
_AFTER_SERVE_SHUTDOWN: list[Callable[[], None]] = []


def after_serve_shutdown(hook: Callable[[], None]) -> None:
    """Run `hook` whenever an embedded Ray this process started shuts down after Serve ran in it
    (once Serve is shut down, while Ray is still connected). Registering the same hook again is a no-op."""
    if hook not in _AFTER_SERVE_SHUTDOWN:
        _AFTER_SERVE_SHUTDOWN.append(hook)
