"""The scheduler on the cluster: a detached Ray actor that outlives the laptop that started it.

Ray restarts it when its process dies (`max_restarts=-1`); it reads where it was from the catalog. Without a
cluster, `raymlp scheduler start` runs the same loop in the foreground on an embedded Ray.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Any

from raymlp import settings
from raymlp.errors import UsageError, WorkFailed

from .engine import Scheduler, utcnow

NAMESPACE = "raymlp"
ACTOR_PREFIX = "raymlp-scheduler-"


def actor_name(name: str) -> str:
    return f"{ACTOR_PREFIX}{name}"


class SchedulerLoop:
    """A scheduler looking at its catalog every `tick_s` on a thread, until stopped."""

    def __init__(self, catalog_url: str, address: str | None, name: str, tick_s: float) -> None:
        from raymlp.catalog import Catalog

        from .launcher import RayJobLauncher

        if address is None:
            import ray

            if ray.is_initialized():
                from raymlp import ray_internals

                address = ray_internals.connected_dashboard_url()
        self._catalog = Catalog(catalog_url)
        self._launcher = RayJobLauncher(address)
        self.name = name
        self.tick_s = tick_s
        self._scheduler = Scheduler(self._catalog, self._launcher, f"{name}@{socket.gethostname()}:{os.getpid()}")
        self._started = utcnow()
        self._ticks = 0
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="raymlp-scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._scheduler.tick()
                self._errors = list(self._scheduler.errors)
            except Exception as error:  # the catalog unreachable for a while: say so and look again
                self._errors = [f"{type(error).__name__}: {error}"]
            for line in self._errors:
                print(f"raymlp scheduler {self.name}: {line}", file=sys.stderr, flush=True)
            self._ticks += 1
            self._wake.wait(self.tick_s)
            self._wake.clear()

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "catalog": self._catalog.url,
            "dashboard": self._launcher.dashboard_url,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self._started.isoformat(),
            "ticks": self._ticks,
            "tick_s": self.tick_s,
            "errors": list(self._errors),
        }

    def wake(self) -> None:
        """Look now (a request was recorded)."""
        self._wake.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self._catalog.close()

    def wait(self) -> None:
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)


def _actor_class() -> Any:
    import ray

    return ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(SchedulerLoop)


def start_actor(catalog_url: str, name: str, address: str | None, tick_s: float | None = None) -> dict[str, Any]:
    """Start the named scheduler as a detached actor of the cluster this process is connected to (or say which
    runs already); its status."""
    import ray

    existing = find(name)
    if existing is not None:
        status = ray.get(existing.status.remote(), timeout=60)
        if status["catalog"] != _redacted(catalog_url):
            raise UsageError(
                f"a scheduler named {name!r} already runs on this cluster for the catalog {status['catalog']}; "
                "stop it first (raymlp scheduler stop) or give another --name"
            )
        return {**status, "already_running": True}
    handle = (
        _actor_class()
        .options(name=actor_name(name), namespace=NAMESPACE, lifetime="detached", get_if_exists=False)
        .remote(catalog_url, address, name, tick_s or settings.scheduler_tick_s())
    )
    return {**ray.get(handle.status.remote(), timeout=120), "already_running": False}


def _redacted(url: str) -> str:
    from raymlp.catalog import redact_url

    return redact_url(url)


def find(name: str) -> Any:
    """The running scheduler actor named `name`, or None."""
    import ray

    try:
        return ray.get_actor(actor_name(name), namespace=NAMESPACE)
    except ValueError:
        return None


def running_names() -> list[str]:
    """Names of the schedulers running on this cluster."""
    import ray.util

    return sorted(
        entry["name"][len(ACTOR_PREFIX) :]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry.get("namespace") == NAMESPACE and entry["name"].startswith(ACTOR_PREFIX)
    )


def statuses() -> list[dict[str, Any]]:
    import ray

    found = []
    for name in running_names():
        handle = find(name)
        if handle is None:
            continue
        try:
            found.append(ray.get(handle.status.remote(), timeout=30))
        except Exception as error:  # restarting, or its node is gone
            found.append({"name": name, "errors": [f"not answering: {type(error).__name__}"]})
    return found


def stop_actor(name: str) -> bool:
    """Stop the scheduler named `name` (a run it started goes on); False when none runs."""
    import ray

    handle = find(name)
    if handle is None:
        return False
    try:
        ray.get(handle.shutdown.remote(), timeout=60)
    except Exception:  # stopping it anyway
        pass
    ray.kill(handle, no_restart=True)
    return True


def wake_all() -> None:
    """Ask every scheduler of this cluster to look now."""
    for name in running_names():
        handle = find(name)
        if handle is not None:
            handle.wake.remote()


def start(
    catalog_url: str, name: str, address: str | None, tick_s: float | None = None, on_started: Any = None
) -> dict[str, Any]:
    """`raymlp scheduler start`: a detached actor on the cluster at `address` (RAY_ADDRESS); with neither, the
    loop in this process on an embedded Ray until Ctrl-C (`on_started(status)` is called once it runs).
    A dashboard address (http://HEAD:8265) starts the actor through a Ray job, so no Ray Client is needed."""
    from raymlp.runtime import ray_runtime

    address = address or settings.ray_address()
    if address and address.startswith(("http://", "https://")):
        return _start_through_a_job(catalog_url, name, address, tick_s)
    with ray_runtime(address) as runtime:
        if runtime.embedded:
            loop = SchedulerLoop(catalog_url, runtime.dashboard_url, name, tick_s or settings.scheduler_tick_s())
            status = {**loop.status(), "foreground": True}
            if on_started is not None:
                on_started(status)
            try:
                loop.wait()
            except KeyboardInterrupt:
                pass
            finally:
                loop.shutdown()
            return status
        return start_actor(catalog_url, name, runtime.dashboard_url, tick_s)


def _start_through_a_job(catalog_url: str, name: str, address: str, tick_s: float | None) -> dict[str, Any]:
    """Run `raymlp scheduler start` as a Ray job on the cluster (where RAY_ADDRESS is its own): the detached
    actor it starts outlives the job."""
    import shlex

    from raymlp.launch.client import connect
    from raymlp.launch.submit import describe_failure, details, follow

    command = ["raymlp", "scheduler", "start", "--catalog", catalog_url, "--name", name]
    if tick_s:
        command += ["--tick", str(tick_s)]
    cluster = connect(address)
    submitted = cluster.client.submit_job(
        entrypoint=shlex.join(command), metadata={"raymlp.scheduler": name}, submission_id=None
    )
    follow(cluster, submitted, out=sys.stderr, timeout_s=300)
    info = details(cluster, submitted)
    if str(info.status) != "SUCCEEDED":
        raise WorkFailed(f"the scheduler did not start: {describe_failure(info)}")
    return {
        "name": name,
        "catalog": _redacted(catalog_url),
        "dashboard": cluster.dashboard_url,
        "started_by": submitted,
    }
