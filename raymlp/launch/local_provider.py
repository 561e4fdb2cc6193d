"""Ray's fake_multinode node provider, with each worker node keeping its runtime environments apart.

Ray's fake nodes are raylets on one machine sharing one session folder, so they also share the
folder where runtime environments are unpacked. A node that sets up a job's working_dir unpacks it
with `overwrite=True`, deleting the copy the job's driver on the head is running in (its working
directory vanishes mid-job). Real nodes each have their own disk; here each fake worker node gets
its own `runtime_resources_<node id>` folder, as Ray's `RayParams(runtime_env_dir_name=...)` allows.
Everything else is Ray's provider. `raymlp cluster up --local` runs it as an `external` provider.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from raymlp import ray_internals

#: What `raymlp cluster up --local` puts in provider.module.
MODULE = f"{__name__}.LocalNodeProvider"

_patching = threading.Lock()


class LocalNodeProvider(ray_internals.fake_multinode_provider()):  # type: ignore[misc]
    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels) -> None:
        with _own_runtime_env_dir(f"runtime_resources_{uuid.uuid4().hex[:12]}"):
            super()._create_node_with_resources_and_labels(node_config, tags, count, resources, labels)


@contextmanager
def _own_runtime_env_dir(name: str) -> Iterator[None]:
    """While Ray's provider builds a node's RayParams, give them `runtime_env_dir_name=name`."""
    with _patching, ray_internals.node_params_default("runtime_env_dir_name", name):
        yield
