"""The `storage` section: artifact root, catalog and tracking URLs."""

from __future__ import annotations

from pydantic import Field

from .base import Location, Section


class StorageConfig(Section):
    root: Location | None = Field(
        default=None,
        description="Artifact root: a local folder, or a bucket's prefix (s3://BUCKET/PREFIX, gs://BUCKET/PREFIX), which "
        "every node of a cluster reaches without a shared disk. Default: RAYMLP_HOME.",
        min_length=1,
    )
    shared: bool = Field(
        default=False,
        description="The local root is the same storage on every node (an NFS or similar mount at the same path): "
        "required to train on a cluster of several nodes with a local root.",
    )
    catalog: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalog. Default: sqlite:///<RAYMLP_HOME>/catalog.db.",
        min_length=1,
    )
    tracking: str | None = Field(
        default=None,
        description="MLflow tracking URI. Default: sqlite:///<RAYMLP_HOME>/mlflow.db.",
        min_length=1,
    )
