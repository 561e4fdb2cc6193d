"""What the catalog hands out: frozen records, each made from its table's row by `to_record`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from raymlp.catalog.models import (
    Collection,
    Dataset,
    DatasetVersion,
    Firing,
    ModelStep,
    ModelVersion,
    Module,
    MonitorReport,
    Pipeline,
    PipelineLock,
    PipelineTrigger,
    Run,
)


@dataclass(frozen=True)
class DatasetRecord:
    """A named dataset."""

    name: str
    created_at: datetime


@dataclass(frozen=True)
class DatasetVersionRecord:
    """One registered, immutable dataset version."""

    id: int
    name: str
    version: int
    path: str
    row_count: int
    content_digest: str
    manifest: dict[str, Any]
    source: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class CollectionRecord:
    """One collection of a source into a database table (target_url without its password)."""

    id: int
    source_uri: str
    source_sha256: str | None
    target_url: str
    target_table: str
    mode: str
    row_count: int
    column_types: dict[str, Any]
    created_at: datetime
    rows_rejected: int = 0  # malformed records kept in `rejects_table`
    rejects_table: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """One execution of a job."""

    id: str
    job_name: str
    job_path: str
    job_sha256: str
    config: dict[str, Any]
    stages: list[str]
    status: str
    started_at: datetime
    finished_at: datetime | None
    summary: dict[str, Any] | None
    error: str | None


@dataclass(frozen=True)
class ModelVersionRecord:
    """One model version with the run and dataset version it was trained from."""

    id: int
    model_name: str
    model_version: str
    run_id: str | None
    mlflow_run_id: str | None
    dataset_name: str | None
    dataset_version: int | None
    dataset_digest: str | None
    package_uri: str | None
    framework: str
    metrics: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ModuleRecord:
    """One version of a registered preprocessing module.

    ``functions`` lists the public functions the source defines, each ``{name, line, signature, doc}``;
    ``filename`` is the file it was added from (for people; the source here is what runs).
    """

    id: int
    name: str
    version: int
    sha256: str
    source: str
    filename: str
    functions: list[dict[str, Any]]
    created_at: datetime

    @property
    def function_names(self) -> list[str]:
        return [function["name"] for function in self.functions]


@dataclass(frozen=True)
class ModuleAdded:
    """What ``add_module`` did: ``created`` is False when the source equals the latest version's."""

    record: ModuleRecord
    created: bool
    #: An earlier (not the latest) version with the same content, when there is one.
    same_as: int | None = None


@dataclass(frozen=True)
class PipelineRecord:
    """A job the scheduler runs by itself."""

    name: str
    job_file: str
    project: str
    project_sha256: str
    settings: dict[str, Any]
    paused: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TriggerRecord:
    """One trigger of a pipeline and the last time it fired for."""

    pipeline: str
    name: str
    kind: str
    definition: dict[str, Any]
    anchor: datetime
    last_due: datetime | None
    state: dict[str, Any]


@dataclass(frozen=True)
class FiringRecord:
    """One firing of a pipeline and what became of it."""

    id: int
    pipeline: str
    trigger: str
    due_at: datetime | None
    reason: str
    fired_by: str
    state: str
    submission_id: str | None
    details: dict[str, Any]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class LockRecord:
    """The lock a pipeline's running firing holds."""

    pipeline: str
    firing_id: int
    holder: str
    acquired_at: datetime


@dataclass(frozen=True)
class ModelStepRecord:
    """One step on a model version's way to an alias."""

    id: int
    model_name: str
    model_version: str
    step: str
    outcome: str
    summary: str
    details: dict[str, Any]
    created_at: datetime


#: Each table's record, and how a column becomes a record's field where it is not taken as it is
#: (JSON values become the caller's own copies).
@dataclass(frozen=True)
class MonitorReportRecord:
    """One `raymlp monitor` analysis of a model's capture window."""

    id: int
    model_name: str
    versions: str
    window_since: datetime | None
    window_until: datetime | None
    rows: int
    reference: str
    drift_share: float
    drifted: bool
    summary: dict[str, Any]
    report_path: str
    created_at: datetime


_RECORDS: dict[type, tuple[type, dict[str, Callable[[Any], Any]]]] = {
    Dataset: (DatasetRecord, {}),
    DatasetVersion: (DatasetVersionRecord, {"manifest": dict, "source": dict}),
    Collection: (CollectionRecord, {"column_types": dict, "rows_rejected": lambda value: value or 0}),
    Run: (RunRecord, {"config": dict, "stages": list, "summary": lambda value: None if value is None else dict(value)}),
    ModelVersion: (ModelVersionRecord, {"metrics": dict}),
    Module: (ModuleRecord, {"functions": lambda value: [dict(function) for function in value]}),
    MonitorReport: (MonitorReportRecord, {"summary": dict, "drifted": bool}),
    Pipeline: (PipelineRecord, {"settings": dict, "paused": bool}),
    PipelineTrigger: (TriggerRecord, {"definition": dict, "state": dict}),
    Firing: (FiringRecord, {"details": dict}),
    PipelineLock: (LockRecord, {}),
    ModelStep: (ModelStepRecord, {"details": dict}),
}


def to_record(row: Any) -> Any:
    """The frozen record of a catalog row: each of the record's fields from the row's attribute of that name."""
    record_type, conversions = _RECORDS[type(row)]
    values = {}
    for field in fields(record_type):
        value = getattr(row, field.name)
        convert = conversions.get(field.name)
        values[field.name] = value if convert is None else convert(value)
    return record_type(**values)
