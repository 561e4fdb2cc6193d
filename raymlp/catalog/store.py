"""The catalog: dataset versions, collections, runs, model lineage and preprocessing modules in one SQL database.

`Catalog` is the API; what it builds on has a module each: records.py (the frozen records and `to_record`),
errors.py, redact.py (passwords out, JSON in), engine.py (the database engine, SQLite's locking), revisions.py
(Alembic migrations), models.py (the tables).
"""

from __future__ import annotations

import hashlib
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import URL, delete, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from raymlp.catalog.engine import WRITE_OPTION, create_catalog_engine, default_url
from raymlp.catalog.errors import CatalogError, DatasetVersionExists, NotInCatalog
from raymlp.catalog.models import (
    FIRING_STATES,
    RUN_STATUSES,
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
    utcnow,
)
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
    to_record,
)
from raymlp.catalog.redact import clean_json, redact_text, redact_url
from raymlp.catalog.revisions import current_revision, head_revision, migrate

_FINISHED_STATUSES = tuple(status for status in RUN_STATUSES if status != "running")


def _listing(items: Iterable[object], limit: int = 20) -> str:
    """``a, b, c`` (at most ``limit`` items, then how many more), or ``none``."""
    texts = [str(item) for item in items]
    if not texts:
        return "none"
    shown = ", ".join(texts[:limit])
    return shown if len(texts) <= limit else f"{shown}, ... ({len(texts) - limit} more)"


def _positive_int(value: Any, what: str) -> int:
    """``value`` if it is a positive int, else a CatalogError saying what it was."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CatalogError(f"{what} must be a positive integer, got {value!r}")
    return value


def _name(value: Any, what: str) -> str:
    """``value`` if it is a non-empty string, else a CatalogError."""
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _versioned(
    session: Session, table: type[DatasetVersion] | type[Module], kind: str, name: str, version: int | None
) -> Any:
    """The row of ``table`` for version ``version`` of ``name`` (None: the latest), or None when ``name`` has no
    versions; NotInCatalog naming the versions there are when it has others."""
    query = select(table).where(table.name == name)
    if version is None:
        query = query.order_by(table.version.desc()).limit(1)
    else:
        query = query.where(table.version == version)
    row = session.scalars(query).first()
    if row is not None or version is None:
        return row
    versions = session.scalars(select(table.version).where(table.name == name).order_by(table.version)).all()
    if versions:
        raise NotInCatalog(f"{kind} {name!r} has no version {version} (versions: {_listing(versions)})")
    return None


def _run(session: Session, run_id: str, lock: bool) -> Run:
    """The run ``run_id`` (locked for update when ``lock``); CatalogError if there is none."""
    row = session.get(Run, run_id, with_for_update=lock)
    if row is None:
        raise CatalogError(f"no run with id {run_id!r}")
    return row


def _added(session: Session, row: Any) -> Any:
    """``row`` added and flushed (so its id and defaults are set), as its record."""
    session.add(row)
    session.flush()
    return to_record(row)


# --------------------------------------------------------------------------- the catalog


class Catalog:
    """Dataset versions, collections, runs, model lineage and modules in one SQL database (SQLite or PostgreSQL)."""

    def __init__(self, url: str | URL | None = None) -> None:
        """Open the catalog at ``url`` (default: a SQLite file under RAYMLP_HOME), upgrading its schema."""
        raw = default_url() if url is None else url
        try:
            parsed = make_url(raw)
        except ArgumentError as exc:
            raise CatalogError(
                f"catalog URL {redact_url(str(raw))!r} is not a database URL "
                "(allowed: sqlite:///path/catalog.db, postgresql://user@host/db, mysql+pymysql://user@host/db)"
            ) from exc
        self._engine = create_catalog_engine(parsed)
        self._url = self._engine.url
        #: The catalog's URL without its password, safe to log.
        self.url = redact_url(self._url.render_as_string(hide_password=False))
        self._reading = sessionmaker(self._engine, expire_on_commit=False)
        self._writing = sessionmaker(self._engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False)
        self._closed = False
        try:
            self._open()
        except BaseException:
            self._engine.dispose()
            raise

    def _open(self) -> None:
        """Upgrade the schema to head unless it is there already (one cheap query when it is)."""
        try:
            with self._engine.connect() as connection:
                current = current_revision(connection)
            if current != head_revision():
                migrate(self._engine)
        except DBAPIError as exc:
            raise CatalogError(f"cannot open the catalog at {self.url}: {redact_text(str(exc.orig).strip())}") from exc

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _session(self, write: bool) -> Iterator[Session]:
        """A session in one transaction; database failures (other than integrity) become CatalogError."""
        if self._closed:
            raise CatalogError(f"the catalog at {self.url} is closed")
        factory = self._writing if write else self._reading
        try:
            with factory() as session, session.begin():
                yield session
        except IntegrityError:
            raise
        except DBAPIError as exc:
            raise CatalogError(f"catalog at {self.url}: {redact_text(str(exc.orig).strip())}") from exc

    def _records(self, query: Any) -> list[Any]:
        """The records of the rows ``query`` selects, in one read transaction."""
        with self._session(write=False) as session:
            return [to_record(row) for row in session.scalars(query)]

    def revision(self) -> str | None:
        """The schema revision the database is at."""
        with self._session(write=False) as session:
            return current_revision(session.connection())

    def close(self) -> None:
        """Release the database connections."""
        self._closed = True
        self._engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({self.url!r})"

    def __reduce__(self) -> tuple[type[Catalog], tuple[URL]]:
        """Pickle as the URL, so a catalog can be handed to Ray tasks, which reopen it."""
        return (Catalog, (self._url,))

    # ------------------------------------------------------------------ datasets

    @staticmethod
    def _ensure_dataset(session: Session, name: str) -> Dataset:
        """The dataset row for ``name``, created if missing (tolerating a concurrent creator)."""
        row = session.get(Dataset, name)
        if row is not None:
            return row
        try:
            with session.begin_nested():
                session.add(Dataset(name=name, created_at=utcnow()))
        except IntegrityError:
            pass
        row = session.get(Dataset, name)
        assert row is not None
        return row

    def ensure_dataset(self, name: str) -> DatasetRecord:
        """The dataset called ``name``, created if it does not exist yet."""
        _name(name, "dataset name")
        with self._session(write=True) as session:
            row = self._ensure_dataset(session, name)
            return to_record(row)

    def next_dataset_version(self, name: str) -> int:
        """The number the next version of ``name`` gets (1 for a new dataset)."""
        with self._session(write=False) as session:
            latest = session.scalar(select(func.max(DatasetVersion.version)).where(DatasetVersion.name == name))
        return 1 if latest is None else int(latest) + 1

    def register_dataset_version(
        self,
        name: str,
        version: int,
        path: str,
        manifest: dict[str, Any],
        row_count: int,
        content_digest: str,
        source: dict[str, Any],
    ) -> DatasetVersionRecord:
        """Record version ``version`` of dataset ``name``; DatasetVersionExists if it is taken."""
        _name(name, "dataset name")
        _positive_int(version, "dataset version")
        if isinstance(row_count, bool) or not isinstance(row_count, int) or row_count < 0:
            raise CatalogError(f"row_count must be a non-negative integer, got {row_count!r}")
        row = DatasetVersion(
            name=name,
            version=version,
            path=str(path),
            row_count=row_count,
            content_digest=_name(content_digest, "content_digest"),
            manifest=clean_json(dict(manifest), "manifest"),
            source=clean_json(dict(source), "source"),
            created_at=utcnow(),
        )
        try:
            with self._session(write=True) as session:
                self._ensure_dataset(session, name)
                return _added(session, row)
        except IntegrityError as exc:
            versions = [record.version for record in self.list_dataset_versions(name)]
            if version in versions:
                raise DatasetVersionExists(
                    f"dataset {name!r} already has version {version} (versions: {_listing(versions)}); "
                    f"the next free one is {max(versions) + 1}"
                ) from exc
            raise CatalogError(
                f"cannot register version {version} of dataset {name!r}: {redact_text(str(exc.orig))}"
            ) from exc

    def get_dataset_version(self, name: str, version: int | None = None) -> DatasetVersionRecord:
        """Version ``version`` of dataset ``name`` (None: the latest); CatalogError if there is none."""
        if version is not None:
            _positive_int(version, "dataset version")
        with self._session(write=False) as session:
            row = _versioned(session, DatasetVersion, "dataset", name, version)
            if row is not None:
                return to_record(row)
            if session.get(Dataset, name) is not None:
                raise NotInCatalog(f"dataset {name!r} has no versions yet")
            names = session.scalars(select(Dataset.name).order_by(Dataset.name)).all()
            raise NotInCatalog(f"no dataset named {name!r} (datasets: {_listing(names)})")

    def delete_dataset_version(self, name: str, version: int) -> None:
        """Forget version ``version`` of dataset ``name`` (its files are the caller's); CatalogError if there is none."""
        self.get_dataset_version(name, version)  # the usual error when it is not there
        with self._session(write=True) as session:
            session.execute(
                delete(DatasetVersion).where(DatasetVersion.name == name, DatasetVersion.version == version)
            )

    def list_dataset_versions(self, name: str | None = None) -> list[DatasetVersionRecord]:
        """Every registered dataset version (of ``name`` only, if given), by name then version."""
        query = select(DatasetVersion).order_by(DatasetVersion.name, DatasetVersion.version)
        if name is not None:
            query = query.where(DatasetVersion.name == name)
        return self._records(query)

    # ------------------------------------------------------------------ collections

    def record_collection(
        self,
        source_uri: str,
        source_sha256: str | None,
        target_url: str,
        target_table: str,
        mode: str,
        row_count: int,
        column_types: dict[str, Any],
        rows_rejected: int = 0,
        rejects_table: str | None = None,
    ) -> CollectionRecord:
        """Record that ``source_uri`` was collected into ``target_table`` (``rows_rejected`` malformed
        records kept in ``rejects_table``); URLs are stored without passwords."""
        row = Collection(
            source_uri=redact_url(str(source_uri)),
            source_sha256=source_sha256,
            target_url=redact_url(str(target_url)),
            target_table=_name(target_table, "target_table"),
            mode=_name(mode, "mode"),
            row_count=int(row_count),
            column_types=clean_json(dict(column_types), "column_types", redact_keys=False),
            created_at=utcnow(),
            rows_rejected=int(rows_rejected),
            rejects_table=None if rejects_table is None else _name(rejects_table, "rejects_table"),
        )
        with self._session(write=True) as session:
            return _added(session, row)

    def list_collections(self, target_table: str | None = None) -> list[CollectionRecord]:
        """Every recorded collection (into ``target_table`` only, if given), oldest first."""
        query = select(Collection).order_by(Collection.id)
        if target_table is not None:
            query = query.where(Collection.target_table == target_table)
        return self._records(query)

    # ------------------------------------------------------------------ monitoring

    def record_monitor_report(
        self,
        model_name: str,
        versions: list[str],
        window_since: datetime | None,
        window_until: datetime | None,
        rows: int,
        reference: str,
        drift_share: float,
        drifted: bool,
        summary: dict[str, Any],
        report_path: str,
    ) -> MonitorReportRecord:
        """Record one monitoring analysis of ``model_name``'s capture and where its report is."""
        row = MonitorReport(
            model_name=_name(model_name, "model_name"),
            versions=",".join(str(version) for version in versions)[:255],
            window_since=window_since,
            window_until=window_until,
            rows=int(rows),
            reference=str(reference),
            drift_share=float(drift_share),
            drifted=bool(drifted),
            summary=clean_json(dict(summary), "summary", redact_keys=False),
            report_path=str(report_path),
            created_at=utcnow(),
        )
        with self._session(write=True) as session:
            return _added(session, row)

    def list_monitor_reports(self, model_name: str | None = None, limit: int = 100) -> list[MonitorReportRecord]:
        """The latest monitoring analyses (of ``model_name`` only, if given), newest first."""
        query = select(MonitorReport).order_by(MonitorReport.id.desc()).limit(limit)
        if model_name is not None:
            query = query.where(MonitorReport.model_name == model_name)
        return self._records(query)

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        job_name: str,
        job_path: str,
        job_sha256: str,
        config: dict[str, Any],
        stages: list[str],
    ) -> RunRecord:
        """Record a new run of ``job_name``, status ``running``."""
        if not isinstance(stages, list | tuple) or not all(isinstance(stage, str) for stage in stages):
            raise CatalogError(f"stages must be a list of stage names, got {stages!r}")
        row = Run(
            id=uuid.uuid4().hex,
            job_name=_name(job_name, "job_name"),
            job_path=str(job_path),
            job_sha256=job_sha256,
            config=clean_json(dict(config), "config"),
            stages=list(stages),
            status="running",
            started_at=utcnow(),
        )
        with self._session(write=True) as session:
            return _added(session, row)

    def finish_run(
        self,
        run_id: str,
        status: str,
        summary: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> RunRecord:
        """Mark a running run ``succeeded``, ``failed`` or ``stopped`` (a sweep's trial that its scheduler
        stopped early), with its summary or error."""
        if status not in _FINISHED_STATUSES:
            raise CatalogError(f"a run finishes as one of {', '.join(_FINISHED_STATUSES)}, not {status!r}")
        cleaned = None if summary is None else clean_json(dict(summary), "summary")
        with self._session(write=True) as session:
            row = _run(session, run_id, lock=True)
            if row.status != "running":
                raise CatalogError(f"run {run_id} already finished as {row.status}; only a running run can be finished")
            row.status = status
            row.finished_at = utcnow()
            row.summary = cleaned
            row.error = None if error is None else redact_text(str(error))
            session.flush()
            return to_record(row)

    def reopen_run(self, run_id: str) -> RunRecord:
        """Mark a run that never finished (its driver died) or failed as ``running`` again, to resume it."""
        with self._session(write=True) as session:
            row = _run(session, run_id, lock=True)
            if row.status not in ("running", "failed"):
                raise CatalogError(
                    f"run {run_id} {row.status}; only a run that failed or never finished can be resumed"
                )
            row.status, row.finished_at, row.summary, row.error = "running", None, None, None
            session.flush()
            return to_record(row)

    def get_run(self, run_id: str) -> RunRecord:
        """The run with id ``run_id``; CatalogError if there is none."""
        with self._session(write=False) as session:
            return to_record(_run(session, run_id, lock=False))

    def list_runs(self, job_name: str | None = None, limit: int = 100) -> list[RunRecord]:
        """The ``limit`` newest runs (of ``job_name`` only, if given), newest first."""
        _positive_int(limit, "limit")
        query = select(Run).order_by(Run.started_at.desc(), Run.id.desc()).limit(limit)
        if job_name is not None:
            query = query.where(Run.job_name == job_name)
        return self._records(query)

    # ------------------------------------------------------------------ models

    def record_model_version(
        self,
        model_name: str,
        model_version: int | str,
        run_id: str | None,
        mlflow_run_id: str | None,
        dataset_name: str | None,
        dataset_version: int | None,
        dataset_digest: str | None,
        package_uri: str | None,
        framework: str,
        metrics: dict[str, Any],
    ) -> ModelVersionRecord:
        """Record a model version and its lineage (run, dataset version); versions are stored as strings."""
        if dataset_version is not None:
            _positive_int(dataset_version, "dataset_version")
        version = _name(str(model_version), "model_version")
        row = ModelVersion(
            model_name=_name(model_name, "model_name"),
            model_version=version,
            run_id=run_id,
            mlflow_run_id=mlflow_run_id,
            dataset_name=dataset_name,
            dataset_version=dataset_version,
            dataset_digest=dataset_digest,
            package_uri=None if package_uri is None else redact_url(str(package_uri)),
            framework=_name(framework, "framework"),
            metrics=clean_json(dict(metrics), "metrics"),
            created_at=utcnow(),
        )
        try:
            with self._session(write=True) as session:
                if run_id is not None and session.get(Run, run_id) is None:
                    raise CatalogError(f"no run with id {run_id!r} to link model {model_name!r} version {version} to")
                return _added(session, row)
        except IntegrityError as exc:
            taken = [record.model_version for record in self.list_model_versions(model_name)]
            if version in taken:
                raise CatalogError(
                    f"model {model_name!r} already has version {version} (versions: {_listing(taken)})"
                ) from exc
            raise CatalogError(
                f"cannot record model {model_name!r} version {version}: {redact_text(str(exc.orig))}"
            ) from exc

    def list_model_versions(self, model_name: str | None = None) -> list[ModelVersionRecord]:
        """Every recorded model version (of ``model_name`` only, if given), by name then recording order."""
        query = select(ModelVersion).order_by(ModelVersion.model_name, ModelVersion.id)
        if model_name is not None:
            query = query.where(ModelVersion.model_name == model_name)
        return self._records(query)

    def delete_model_version(self, model_name: str, model_version: int | str) -> int:
        """Forget the lineage of a model version (after the registry deleted it); the rows removed."""
        with self._session(write=True) as session:
            result = session.execute(
                delete(ModelVersion).where(
                    ModelVersion.model_name == model_name, ModelVersion.model_version == str(model_version)
                )
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]  # a DELETE's CursorResult

    def models_using_dataset(self, name: str, version: int | None = None) -> list[ModelVersionRecord]:
        """The model versions trained on dataset ``name`` (on ``version`` only, if given)."""
        query = (
            select(ModelVersion)
            .where(ModelVersion.dataset_name == name)
            .order_by(ModelVersion.model_name, ModelVersion.id)
        )
        if version is not None:
            query = query.where(ModelVersion.dataset_version == version)
        return self._records(query)

    # ------------------------------------------------------------------ preprocessing modules

    def add_module(
        self,
        name: str,
        source: str,
        filename: str,
        functions: list[dict[str, Any]],
    ) -> ModuleAdded:
        """Store ``source`` as the next version of module ``name``; nothing is stored when it equals the latest.

        A version is never overwritten: changed content always makes a new version, and content equal to an
        older (not the latest) version also makes a new one (``same_as`` names the older), so the latest is
        always what was added last.
        """
        from raymlp.config.schema import MODULE_NAME_PATTERN

        if not isinstance(name, str) or not re.match(MODULE_NAME_PATTERN, name):
            raise CatalogError(
                f"module name {name!r} is not a Python name (letters, digits and '_', not starting with a digit)"
            )
        if not isinstance(source, str):
            raise CatalogError(f"module source must be text, got {type(source).__name__}")
        digest = hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()
        cleaned = clean_json(list(functions), "functions", redact_keys=False)
        attempts = 50  # each conflict means another writer took a number; n writers need at most n - 1 retries
        for attempt in range(attempts):
            if attempt:
                time.sleep(random.uniform(0.001, 0.02))  # writers that collided try again apart
            try:
                with self._session(write=True) as session:
                    latest = _versioned(session, Module, "module", name, None)
                    if latest is not None and latest.sha256 == digest:
                        return ModuleAdded(to_record(latest), created=False)
                    same_as = session.scalar(
                        select(func.max(Module.version)).where(Module.name == name, Module.sha256 == digest)
                    )
                    row = Module(
                        name=name,
                        version=1 if latest is None else latest.version + 1,
                        sha256=digest,
                        source=source,
                        filename=str(filename),
                        functions=cleaned,
                        created_at=utcnow(),
                    )
                    session.add(row)
                    session.flush()
                    return ModuleAdded(to_record(row), created=True, same_as=same_as)
            except IntegrityError as exc:  # a concurrent add took the number: count again
                if attempt == attempts - 1:
                    raise CatalogError(f"cannot add module {name!r}: {redact_text(str(exc.orig))}") from exc
        raise AssertionError("unreachable")

    def get_module(self, name: str, version: int | None = None) -> ModuleRecord:
        """Version ``version`` of module ``name`` (None: the latest); CatalogError naming what exists."""
        if version is not None:
            _positive_int(version, "module version")
        with self._session(write=False) as session:
            row = _versioned(session, Module, "module", name, version)
            if row is not None:
                return to_record(row)
            names = session.scalars(select(Module.name).distinct().order_by(Module.name)).all()
            raise NotInCatalog(
                f"no module named {name!r} (modules: {_listing(names)}); add it with: raymlp data modules add FILE.py"
            )

    def list_modules(self, name: str | None = None) -> list[ModuleRecord]:
        """Every version of every module (of ``name`` only, if given), by name then version."""
        query = select(Module).order_by(Module.name, Module.version)
        if name is not None:
            query = query.where(Module.name == name)
        return self._records(query)

    # ------------------------------------------------------------------ pipelines

    def put_pipeline(
        self,
        name: str,
        job_file: str,
        project: str,
        project_sha256: str,
        settings: dict[str, Any],
        triggers: list[dict[str, Any]],
    ) -> PipelineRecord:
        """Add or update a pipeline. A trigger whose definition is unchanged keeps its last firing time; a new or
        changed one counts from now; one no longer named is removed. Pausing is kept as it was."""
        now = utcnow()
        settings = clean_json(dict(settings), "settings")
        with self._session(write=True) as session:
            row = session.get(Pipeline, _name(name, "name"), with_for_update=True)
            if row is None:
                row = Pipeline(name=name, paused=False, created_at=now)
                session.add(row)
            row.job_file, row.project, row.project_sha256 = str(job_file), str(project), project_sha256
            row.settings, row.updated_at = settings, now
            session.flush()
            existing = {
                trigger.name: trigger
                for trigger in session.scalars(select(PipelineTrigger).where(PipelineTrigger.pipeline == name))
            }
            for definition in triggers:
                definition = clean_json(dict(definition), "trigger", redact_keys=False)
                trigger = existing.pop(definition["name"], None)
                if trigger is not None and trigger.definition == definition:
                    continue
                if trigger is None:
                    trigger = PipelineTrigger(pipeline=name, name=definition["name"])
                    session.add(trigger)
                trigger.kind, trigger.definition = str(definition["kind"]), definition
                trigger.anchor, trigger.last_due, trigger.state = now.replace(microsecond=0), None, {}
            for gone in existing.values():
                session.delete(gone)
            session.flush()
            return to_record(row)

    def get_pipeline(self, name: str) -> PipelineRecord:
        """The pipeline ``name``; NotInCatalog naming the pipelines there are when it is not one."""
        with self._session(write=False) as session:
            row = session.get(Pipeline, name)
            if row is None:
                names = session.scalars(select(Pipeline.name).order_by(Pipeline.name)).all()
                raise NotInCatalog(
                    f"no scheduled job named {name!r} (scheduled: {_listing(names)}); add it with: "
                    "raymlp schedule add JOB.yaml"
                )
            return to_record(row)

    def list_pipelines(self) -> list[PipelineRecord]:
        """Every pipeline, by name."""
        return self._records(select(Pipeline).order_by(Pipeline.name))

    def set_pipeline_paused(self, name: str, paused: bool) -> PipelineRecord:
        """Pause (no trigger fires; a running firing goes on) or resume the pipeline ``name``; a resumed pipeline's
        clock triggers count from now (times passed while paused are not made up)."""
        self.get_pipeline(name)
        now = utcnow().replace(microsecond=0)
        with self._session(write=True) as session:
            row = session.get(Pipeline, name, with_for_update=True)
            if row is None:  # removed meanwhile
                raise NotInCatalog(f"no scheduled job named {name!r}")
            if row.paused and not paused:
                for trigger in session.scalars(select(PipelineTrigger).where(PipelineTrigger.pipeline == name)):
                    trigger.last_due = max(now, trigger.last_due) if trigger.last_due else now
            row.paused, row.updated_at = bool(paused), utcnow()
            session.flush()
            return to_record(row)

    def remove_pipeline(self, name: str) -> PipelineRecord:
        """Remove the pipeline ``name`` and its triggers; its history stays, and a running firing goes on."""
        record = self.get_pipeline(name)
        with self._session(write=True) as session:
            session.execute(delete(PipelineTrigger).where(PipelineTrigger.pipeline == name))
            session.execute(delete(Pipeline).where(Pipeline.name == name))
        return record

    def list_triggers(self, pipeline: str | None = None) -> list[TriggerRecord]:
        """The triggers (of ``pipeline`` only, if given), by pipeline and name."""
        query = select(PipelineTrigger).order_by(PipelineTrigger.pipeline, PipelineTrigger.name)
        if pipeline is not None:
            query = query.where(PipelineTrigger.pipeline == pipeline)
        return self._records(query)

    def claim_due(
        self,
        pipeline: str,
        trigger: str,
        previous_due: datetime | None,
        due: datetime,
        reason: str,
        fired_by: str,
        state: str = "pending",
        details: dict[str, Any] | None = None,
    ) -> FiringRecord | None:
        """Record the firing of ``trigger`` for the time ``due`` if its last firing time is still
        ``previous_due`` (so of two schedulers only one records it); None when another got there first."""
        if state not in FIRING_STATES:
            raise CatalogError(f"a firing's state is one of {', '.join(FIRING_STATES)}, not {state!r}")
        try:
            with self._session(write=True) as session:
                row = session.get(PipelineTrigger, (pipeline, trigger), with_for_update=True)
                if row is None or row.last_due != previous_due:
                    return None
                row.last_due = due
                return _added(session, self._firing(pipeline, trigger, due, reason, fired_by, state, details))
        except IntegrityError:
            return None

    def claim_check(self, pipeline: str, trigger: str, previous: datetime | None, now: datetime) -> bool:
        """Take the next look of a data trigger (its `last_due` is the last look's time) if no other scheduler took
        it since `previous`."""
        with self._session(write=True) as session:
            row = session.get(PipelineTrigger, (pipeline, trigger), with_for_update=True)
            if row is None or row.last_due != previous:
                return False
            row.last_due = now
            return True

    def update_trigger_state(
        self, pipeline: str, trigger: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> TriggerRecord | None:
        """Replace a trigger's state by `change(state)`, in one transaction (None: the trigger is gone)."""
        with self._session(write=True) as session:
            row = session.get(PipelineTrigger, (pipeline, trigger), with_for_update=True)
            if row is None:
                return None
            row.state = clean_json(dict(change(dict(row.state))), "state", redact_keys=False)
            session.flush()
            return to_record(row)

    def add_firing(
        self,
        pipeline: str,
        trigger: str,
        reason: str,
        fired_by: str,
        state: str = "pending",
        details: dict[str, Any] | None = None,
    ) -> FiringRecord:
        """Record a firing that no time names (a request, new data, a monitor check)."""
        self.get_pipeline(pipeline)
        with self._session(write=True) as session:
            return _added(session, self._firing(pipeline, trigger, None, reason, fired_by, state, details))

    @staticmethod
    def _firing(
        pipeline: str,
        trigger: str,
        due: datetime | None,
        reason: str,
        fired_by: str,
        state: str,
        details: dict[str, Any] | None,
    ) -> Firing:
        now = utcnow()
        return Firing(
            pipeline=pipeline,
            trigger=trigger,
            due_at=due,
            reason=redact_text(str(reason)),
            fired_by=str(fired_by)[:255],
            state=state,
            details=clean_json(dict(details or {}), "details", redact_keys=False),
            created_at=now,
            finished_at=now if state == "skipped" else None,
        )

    def list_firings(
        self, pipeline: str | None = None, states: Iterable[str] | None = None, limit: int = 100
    ) -> list[FiringRecord]:
        """The ``limit`` newest firings (of ``pipeline``, in ``states``, if given), newest first."""
        _positive_int(limit, "limit")
        query = select(Firing).order_by(Firing.id.desc()).limit(limit)
        if pipeline is not None:
            query = query.where(Firing.pipeline == pipeline)
        if states is not None:
            query = query.where(Firing.state.in_(list(states)))
        return self._records(query)

    def get_firing(self, firing_id: int) -> FiringRecord:
        with self._session(write=False) as session:
            row = session.get(Firing, firing_id)
            if row is None:
                raise NotInCatalog(f"no firing with id {firing_id}")
            return to_record(row)

    def update_firing(self, firing_id: int, expected_states: Iterable[str], **changes: Any) -> FiringRecord | None:
        """Change a firing that is in one of ``expected_states`` (None when it is not: another scheduler moved
        it first). A firing that leaves `pending`/`running` gets its finishing time."""
        unknown = set(changes) - {"state", "submission_id", "error", "details", "started_at"}
        if unknown:
            raise CatalogError(f"a firing's {', '.join(sorted(unknown))} cannot be changed")
        if changes.get("state", "pending") not in FIRING_STATES:
            raise CatalogError(f"a firing's state is one of {', '.join(FIRING_STATES)}, not {changes['state']!r}")
        with self._session(write=True) as session:
            row = session.get(Firing, firing_id, with_for_update=True)
            if row is None or row.state not in set(expected_states):
                return None
            for key, value in changes.items():
                if key == "error" and value is not None:
                    value = redact_text(str(value))
                if key == "details":
                    value = clean_json({**row.details, **value}, "details", redact_keys=False)
                setattr(row, key, value)
            if row.state not in ("pending", "running") and row.finished_at is None:
                row.finished_at = utcnow()
            session.flush()
            return to_record(row)

    def acquire_lock(self, pipeline: str, firing_id: int, holder: str) -> bool:
        """Take the pipeline's run lock for ``firing_id``; False when another firing holds it."""
        try:
            with self._session(write=True) as session:
                session.add(
                    PipelineLock(pipeline=pipeline, firing_id=firing_id, holder=holder[:255], acquired_at=utcnow())
                )
            return True
        except IntegrityError:
            return False

    def release_lock(self, pipeline: str, firing_id: int) -> bool:
        """Give up the pipeline's lock if ``firing_id`` holds it."""
        with self._session(write=True) as session:
            result = session.execute(
                delete(PipelineLock).where(PipelineLock.pipeline == pipeline, PipelineLock.firing_id == firing_id)
            )
            return bool(getattr(result, "rowcount", 0))

    def list_locks(self) -> list[LockRecord]:
        """Every held pipeline lock."""
        return self._records(select(PipelineLock).order_by(PipelineLock.pipeline))

    # ------------------------------------------------------------------ model steps

    def record_model_step(
        self,
        model_name: str,
        model_version: int | str,
        step: str,
        outcome: str,
        summary: str,
        details: dict[str, Any] | None = None,
    ) -> ModelStepRecord:
        """Record one step of a model version's way to an alias (`models why` prints them in order)."""
        row = ModelStep(
            model_name=_name(model_name, "model_name"),
            model_version=str(model_version),
            step=_name(step, "step")[:32],
            outcome=_name(outcome, "outcome")[:16],
            summary=redact_text(str(summary)),
            details=clean_json(dict(details or {}), "details", redact_keys=False),
            created_at=utcnow(),
        )
        with self._session(write=True) as session:
            return _added(session, row)

    def list_model_steps(self, model_name: str, model_version: int | str) -> list[ModelStepRecord]:
        """The steps of one model version, oldest first."""
        return self._records(
            select(ModelStep)
            .where(ModelStep.model_name == model_name, ModelStep.model_version == str(model_version))
            .order_by(ModelStep.id)
        )
