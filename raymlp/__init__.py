"""raymlp: one YAML job from raw files to a served model, on Ray.

The public API is what this module exports; everything else may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Catalog", "ConfigError", "JobConfig", "load_job", "load_package", "predict", "run_job"]

if TYPE_CHECKING:
    from raymlp.catalog import Catalog
    from raymlp.config import ConfigError, JobConfig, load_job
    from raymlp.package import load_package
    from raymlp.pipeline import run_job

_LAZY = {
    "Catalog": "raymlp.catalog",
    "ConfigError": "raymlp.config",
    "JobConfig": "raymlp.config",
    "load_job": "raymlp.config",
    "run_job": "raymlp.pipeline",
    "load_package": "raymlp.package",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "predict":
        from raymlp.serve.batch import predict_batch

        return predict_batch
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raymlp' has no attribute {name!r}")
