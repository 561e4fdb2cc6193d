"""SQLAlchemy ORM tables of the catalog; the migrations in ``migrations/versions`` create them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.mysql import MEDIUMTEXT
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Alembic's version table for the catalog; not ``alembic_version``, so the catalog never
#: mistakes another Alembic-managed schema (MLflow's, for one) for its own.
VERSION_TABLE = "raymlp_alembic_version"

#: Run states; a run starts ``running`` and is finished as one of the others (``stopped``: a sweep's trial
#: that its scheduler stopped early; since revision 0005).
RUN_STATUSES = ("running", "succeeded", "failed", "stopped")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC; backends without time zones (SQLite, MySQL) store it naive."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value.isoformat()} has no time zone; give a UTC one")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to naive values and normalise aware ones to UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the catalog tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Dataset(Base):
    """A named dataset; its content lives in numbered versions."""

    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DatasetVersion(Base):
    """One immutable, numbered version of a dataset."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_dataset_versions_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(
        String(255), ForeignKey("datasets.name", name="fk_dataset_versions_name_datasets")
    )
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    row_count: Mapped[int] = mapped_column(BigInteger)
    content_digest: Mapped[str] = mapped_column(String(128))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Collection(Base):
    """One collection of a source into a database table."""

    __tablename__ = "collections"
    __table_args__ = (Index("ix_collections_target_table", "target_table"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_uri: Mapped[str] = mapped_column(Text)
    source_sha256: Mapped[str | None] = mapped_column(String(128), nullable=True)
    target_url: Mapped[str] = mapped_column(Text)
    target_table: Mapped[str] = mapped_column(String(255))
    mode: Mapped[str] = mapped_column(String(32))
    row_count: Mapped[int] = mapped_column(BigInteger)
    column_types: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    rows_rejected: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    rejects_table: Mapped[str | None] = mapped_column(String(255), nullable=True)


class Run(Base):
    """One execution of a job."""

    __tablename__ = "runs"
    __table_args__ = (
        # "status" becomes ck_runs_status through the naming convention.
        CheckConstraint("status IN ('running', 'succeeded', 'failed', 'stopped')", name="status"),
        Index("ix_runs_job_name_started_at", "job_name", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_name: Mapped[str] = mapped_column(String(255))
    job_path: Mapped[str] = mapped_column(Text)
    job_sha256: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    stages: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class ModelVersion(Base):
    """One registered model version and the run and dataset version it came from."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_name", "model_version", name="uq_model_versions_model_name_model_version"),
        Index("ix_model_versions_dataset_name_dataset_version", "dataset_name", "dataset_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("runs.id", name="fk_model_versions_run_id_runs"), nullable=True
    )
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dataset_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    dataset_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dataset_digest: Mapped[str | None] = mapped_column(String(128), nullable=True)
    package_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    framework: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


#: Module sources are kept whole; MySQL's TEXT holds only 64 KiB.
SourceText = Text().with_variant(MEDIUMTEXT(), "mysql", "mariadb")


class Module(Base):
    """One version of a registered preprocessing module: its exact source text and its sha256."""

    __tablename__ = "modules"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_modules_name_version"),
        Index("ix_modules_name_sha256", "name", "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(SourceText)
    filename: Mapped[str] = mapped_column(Text)
    functions: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MonitorReport(Base):
    """One `raymlp monitor` analysis: the model, the window, its reference, the verdict, where the report is."""

    __tablename__ = "monitor_reports"
    __table_args__ = (Index("ix_monitor_reports_model_name_created_at", "model_name", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(255))
    versions: Mapped[str] = mapped_column(String(255))
    window_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    window_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    rows: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str] = mapped_column(Text)
    drift_share: Mapped[float] = mapped_column(Float)
    drifted: Mapped[bool] = mapped_column(Boolean)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    report_path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


#: Firing states: `pending` (recorded, waiting for the job's lock: a queued firing stays so), `running` (its Ray
#: job submitted), then one of the others (`skipped`: the policy or a missed time dropped it; `replaced`: a later
#: firing's `replace` policy stopped it; `stopped`: stopped from outside).
FIRING_STATES = ("pending", "running", "succeeded", "failed", "skipped", "replaced", "stopped")


class Pipeline(Base):
    """A job the scheduler runs by itself: where its project snapshot is, its policy and its triggers."""

    __tablename__ = "pipelines"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    job_file: Mapped[str] = mapped_column(Text)
    project: Mapped[str] = mapped_column(Text)
    project_sha256: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PipelineTrigger(Base):
    """One trigger of a pipeline: its definition, since when it counts, the last time it fired for."""

    __tablename__ = "pipeline_triggers"

    pipeline: Mapped[str] = mapped_column(
        String(100), ForeignKey("pipelines.name", name="fk_pipeline_triggers_pipeline_pipelines"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    anchor: Mapped[datetime] = mapped_column(UTCDateTime())
    last_due: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)


class Firing(Base):
    """One firing of a pipeline: which trigger, for what time, why, who fired it, what became of it."""

    __tablename__ = "pipeline_firings"
    __table_args__ = (
        UniqueConstraint("pipeline", "trigger", "due_at", name="uq_pipeline_firings_pipeline_trigger_due_at"),
        Index("ix_pipeline_firings_pipeline_id", "pipeline", "id"),
        Index("ix_pipeline_firings_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(100))
    trigger: Mapped[str] = mapped_column(String(100))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    fired_by: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    submission_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class PipelineLock(Base):
    """Held by the one firing of a pipeline that runs: a row per running pipeline, so a job never runs twice."""

    __tablename__ = "pipeline_locks"

    pipeline: Mapped[str] = mapped_column(String(100), primary_key=True)
    firing_id: Mapped[int] = mapped_column(Integer)
    holder: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModelStep(Base):
    """One step on a model version's way to an alias: its trigger, a gate, shadow, canary, the promotion."""

    __tablename__ = "model_steps"
    __table_args__ = (Index("ix_model_steps_model_name_model_version", "model_name", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
