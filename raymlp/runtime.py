"""How a process gets Ray: join RAY_ADDRESS / --address, else start an embedded local Ray.

This is the one place that decides; every command goes through `ray_runtime`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
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


@contextmanager
def ray_runtime(address: str | None = None, *, runtime_env: dict[str, Any] | None = None) -> Iterator[RayRuntime]:
    """Connect to Ray for the duration of the block; an embedded Ray started here is shut down after."""
    import ray

    if ray.is_initialized():
        context = ray.get_runtime_context()
        yield RayRuntime(address=context.gcs_address, embedded=False, startup_seconds=0.0, dashboard_url=None)
        return

    address = address or settings.ray_address()
    started = time.perf_counter()
    common: dict[str, Any] = {"logging_level": logging.WARNING, "runtime_env": runtime_env or None}
    try:
        if address:
            info = ray.init(address=address, **common)
        else:
            info = ray.init(
                num_cpus=settings.local_cpus(),
                object_store_memory=settings.local_object_store_bytes(),
                dashboard_host="127.0.0.1",
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


def _shutdown_serve_quietly() -> None:
    import sys

    if "ray.serve" not in sys.modules:
        return
    from ray import serve

    try:
        serve.shutdown()
    except Exception:  # Serve never started in this cluster, or is already gone
        pass

