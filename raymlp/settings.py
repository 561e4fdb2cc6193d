"""Every RAYMLP_* setting, read from the environment in one place, with its default."""

from __future__ import annotations

import os
from pathlib import Path

#: Where the catalog, the MLflow store and local artifacts live (project-local, like ``mlruns/``).
HOME_ENV = "RAYMLP_HOME"
DEFAULT_HOME = ".raymlp"

#: Set to 1 to print full tracebacks instead of one-line errors.
DEBUG_ENV = "RAYMLP_DEBUG"

#: Set to 1 (what `raymlp -v` does) to let Ray, MLflow and the other libraries print their own lines.
VERBOSE_ENV = "RAYMLP_VERBOSE"

#: Address of a Ray cluster to join; Ray's own variable, honoured as Ray does.
RAY_ADDRESS_ENV = "RAY_ADDRESS"

#: CPUs for an embedded local Ray (default: every core of this machine).
LOCAL_CPUS_ENV = "RAYMLP_LOCAL_CPUS"

#: Object store size in bytes for an embedded local Ray (default: Ray's own choice).
LOCAL_OBJECT_STORE_ENV = "RAYMLP_LOCAL_OBJECT_STORE_BYTES"

#: Where a job keeps its state when its `storage` section does not say: the root (a folder, or a
#: bucket's prefix s3://BUCKET/PREFIX, gs://...), the catalog's SQLAlchemy URL and MLflow's
#: tracking URI. A cluster sets them on every node (clusters/), so one job file runs unchanged on a
#: laptop and on a cluster without a shared disk.
STORAGE_ROOT_ENV = "RAYMLP_STORAGE_ROOT"
CATALOG_ENV = "RAYMLP_CATALOG"
TRACKING_ENV = "RAYMLP_TRACKING"

#: Set to 1 where every node of the cluster sees the same local storage (`raymlp cluster up --local`
#: sets it for its jobs: all its nodes are one machine); the same as a job's `storage.shared: true`.
STORAGE_SHARED_ENV = "RAYMLP_STORAGE_SHARED"

#: How often Ray Train's controller polls workers (Ray's default is 2 s). A report waits for
#: that poll, so with Ray's default every epoch shorter than 2 s costs 2 s.
TRAIN_POLL_INTERVAL_ENV = "RAYMLP_TRAIN_POLL_INTERVAL_S"
DEFAULT_TRAIN_POLL_INTERVAL_S = 0.2


#: A scheduled run's firing: its id, trigger and reason (set by the scheduler in the run's environment).
FIRING_ENV = "RAYMLP_FIRING"
FIRING_TRIGGER_ENV = "RAYMLP_FIRING_TRIGGER"
FIRING_REASON_ENV = "RAYMLP_FIRING_REASON"

#: How often a scheduler looks at the catalog (seconds); cron triggers may be due every second.
SCHEDULER_TICK_ENV = "RAYMLP_SCHEDULER_TICK_S"
DEFAULT_SCHEDULER_TICK_S = 1.0


def scheduler_tick_s() -> float:
    """Seconds between a scheduler's looks at the catalog."""
    return float(os.environ.get(SCHEDULER_TICK_ENV) or DEFAULT_SCHEDULER_TICK_S)


def home() -> Path:
    """The RAYMLP_HOME folder (not created here)."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME)


def debug() -> bool:
    """True when tracebacks should be shown."""
    return os.environ.get(DEBUG_ENV, "").lower() in {"1", "true", "yes"}


def verbose() -> bool:
    """True when the libraries' own output should reach the terminal (`-v`, or debugging)."""
    return debug() or os.environ.get(VERBOSE_ENV, "").lower() in {"1", "true", "yes"}


def ray_address() -> str | None:
    """The cluster address from the environment, if any."""
    return os.environ.get(RAY_ADDRESS_ENV) or None


def storage_root() -> str | None:
    """The default storage root from the environment, if any."""
    return os.environ.get(STORAGE_ROOT_ENV) or None


def catalog_url() -> str | None:
    """The default catalog URL from the environment, if any."""
    return os.environ.get(CATALOG_ENV) or None


def tracking_uri() -> str | None:
    """The default MLflow tracking URI from the environment, if any."""
    return os.environ.get(TRACKING_ENV) or None


def storage_shared() -> bool:
    """True when the environment says local storage is the same on every node."""
    return os.environ.get(STORAGE_SHARED_ENV, "").lower() in {"1", "true", "yes"}


def local_cpus() -> int:
    """CPUs to give an embedded local Ray."""
    value = os.environ.get(LOCAL_CPUS_ENV)
    return int(value) if value else (os.cpu_count() or 1)


def local_object_store_bytes() -> int | None:
    """Object store size for an embedded local Ray, or None for Ray's default."""
    value = os.environ.get(LOCAL_OBJECT_STORE_ENV)
    return int(value) if value else None


def train_poll_interval_s() -> float:
    """Seconds between Ray Train controller polls."""
    return float(os.environ.get(TRAIN_POLL_INTERVAL_ENV) or DEFAULT_TRAIN_POLL_INTERVAL_S)
