"""The catalog: a SQL metadata store of dataset versions, collections, runs, model lineage and modules."""

from raymlp.catalog.engine import default_url, with_installed_driver
from raymlp.catalog.errors import CatalogError, DatasetVersionExists
from raymlp.catalog.records import (
    CollectionRecord,
    DatasetRecord,
    DatasetVersionRecord,
    FiringRecord,
    LockRecord,
    ModelStepRecord,
    ModelVersionRecord,
    ModuleAdded,
    ModuleRecord,
    MonitorReportRecord,
    PipelineRecord,
    RunRecord,
    TriggerRecord,
)
from raymlp.catalog.redact import redact_url
from raymlp.catalog.revisions import head_revision, migrate
from raymlp.catalog.store import Catalog

__all__ = [
    "Catalog",
    "CatalogError",
    "CollectionRecord",
    "DatasetRecord",
    "DatasetVersionExists",
    "DatasetVersionRecord",
    "FiringRecord",
    "LockRecord",
    "ModelStepRecord",
    "PipelineRecord",
    "TriggerRecord",
    "ModelVersionRecord",
    "ModuleAdded",
    "ModuleRecord",
    "MonitorReportRecord",
    "RunRecord",
    "default_url",
    "head_revision",
    "migrate",
    "redact_url",
    "with_installed_driver",
]
