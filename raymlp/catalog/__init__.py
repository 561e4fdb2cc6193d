"""The catalog: a SQL metadata store of dataset versions, collections, runs and model lineage."""

from raymlp.catalog.store import (
    Catalog,
    CatalogError,
    CollectionRecord,
    DatasetRecord,
    DatasetVersionExists,
    DatasetVersionRecord,
    ModelVersionRecord,
    RunRecord,
    default_url,
    head_revision,
    migrate,
    redact_url,
    with_installed_driver,
)

__all__ = [
    "Catalog",
    "CatalogError",
    "CollectionRecord",
    "DatasetRecord",
    "DatasetVersionExists",
    "DatasetVersionRecord",
    "ModelVersionRecord",
    "RunRecord",
    "default_url",
    "head_revision",
    "migrate",
    "redact_url",
    "with_installed_driver",
]
