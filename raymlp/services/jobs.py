"""A job file as the services read it: loaded with overrides, and the storage it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raymlp.storage import Storage, resolve_storage


def load(job: Path, overrides: list[str] | None = None) -> Any:
    """The job file, loaded and checked (a ConfigError lists every problem)."""
    from raymlp.config import load_job

    return load_job(job, overrides or [])


def storage_for(job: Path | None) -> Storage:
    """The storage locations a job file names; without one, RAYMLP_HOME's."""
    return resolve_storage(load(job).config.storage if job else None)
