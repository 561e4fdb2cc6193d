"""The catalog: a SQL metadata store of dataset versions, collections, runs, model lineage and modules."""

from raymlp.catalog.store import (
    Catalog,
    CatalogError,
    CollectionRecord,
    DatasetRecord,
    DatasetVersionExists,
    DatasetVersionRecord,
    ModelVersionRecord,
    ModuleAdded,
    ModuleRecord,
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
    "ModuleAdded",
    "ModuleRecord",
    "RunRecord",
    "default_url",
    "head_revision",
    "migrate",
    "redact_url",
    "with_installed_driver",
]
