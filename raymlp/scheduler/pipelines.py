"""Scheduled jobs: adding one (a snapshot of its project and its triggers in the catalog), firing one on request,
and what `raymlp pipelines` and `raymlp schedule list|history` show."""

from __future__ import annotations

import datetime
import getpass
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from raymlp import settings
from raymlp.catalog import Catalog, FiringRecord, PipelineRecord, TriggerRecord
from raymlp.storage import files, resolve_storage

from .engine import describe_trigger, next_firing, utcnow


@dataclass(frozen=True)
class Added:
    pipeline: PipelineRecord
    triggers: list[TriggerRecord]
    catalog_url: str
    uploaded_bytes: int


def who() -> str:
    """Who fired a firing by hand: user@host."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (a container without one)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _passwordless(url: str | None) -> bool:
    if not url:
        return False
    try:
        return make_url(url).password is None
    except Exception:  # not a database URL: a path or a bucket, which holds no password
        return True


def _storage_env(job: Any, storage: Any) -> dict[str, str]:
    """Where a run finds the state this process sees, for what the job file does not say: RAYMLP_HOME made
    absolute, and the storage resolved here (absolute) where it holds no password (a runtime_env is shown in
    the dashboard; a password-bearing URL must come from the job file's ${ENV} on the cluster)."""
    env = {settings.HOME_ENV: str(settings.home().resolve())}
    for name, key, value in (
        (settings.STORAGE_ROOT_ENV, "root", storage.root),
        (settings.CATALOG_ENV, "catalog", storage.catalog_url),
        (settings.TRACKING_ENV, "tracking", storage.tracking_uri),
    ):
        if getattr(job.storage, key) is None and _passwordless(value):
            env[name] = value
    return env


def add(
    job_file: Path,
    *,
    root: Path | None = None,
    env: str | None = None,
    excludes: list[str] | None = None,
    includes: list[str] | None = None,
    resources: dict[str, Any] | None = None,
) -> Added:
    """Check the job as `raymlp submit` would, keep a snapshot of its project folder under the storage root
    (`pipelines/NAME/project-<sha256>.zip`), and record it and its triggers in its catalog; running it again
    updates the snapshot and the triggers (unchanged triggers keep their last firing)."""
    from raymlp.launch.submit import job_runtime_env, plan_project, warn_if_state_stays_in_the_upload
    from raymlp.launch.workdir import write_package

    root = (root or Path.cwd()).resolve()
    schedule_overrides: list[str] = []
    loaded, relative_job, folder = plan_project(job_file, root, schedule_overrides, excludes or [], includes or [])
    job = loaded.config
    schedule = job.schedule
    storage = resolve_storage(job.storage)
    runtime_environment = job_runtime_env(loaded, env, root)
    env_vars = _storage_env(job, storage)
    warn_if_state_stays_in_the_upload(loaded, {"env_vars": env_vars})
    with tempfile.TemporaryDirectory(prefix="raymlp-schedule-") as scratch:
        package = write_package(folder, Path(scratch))
        digest = files.sha256_of(package)
        location = files.join(storage.root, "pipelines", job.name, f"project-{digest[:16]}.zip")
        if not files.exists(location):
            files.write_bytes(location, package.read_bytes())
        size = package.stat().st_size
    triggers = [_trigger_definition(trigger, loaded, root) for trigger in (schedule.triggers if schedule else [])]
    _check_watermarks(loaded, triggers)
    job_settings = {
        "concurrency": schedule.concurrency if schedule else "skip",
        "catch_up": schedule.catch_up if schedule else "once",
        "timezone": schedule.timezone if schedule else "UTC",
        "overrides": list(schedule.overrides) if schedule else [],
        "runtime_env": runtime_environment,
        "env_vars": env_vars,
        "resources": dict(resources or {}),
        "stages": job.stages(),
    }
    with Catalog(storage.catalog_url) as catalog:
        pipeline = catalog.put_pipeline(job.name, relative_job.as_posix(), location, digest, job_settings, triggers)
        return Added(pipeline, catalog.list_triggers(job.name), catalog.url, size)


def _trigger_definition(trigger: Any, loaded: Any, root: Path) -> dict[str, Any]:
    """A trigger as the catalog keeps it: its settings, and what a scheduler on the cluster needs to look for new
    data: the watched files as absolute paths or URIs (the snapshot has none of them), the table, its column, and
    the database URL as the job file writes it (a `${ENV}` reference stays one, expanded where the scheduler runs)."""
    import os

    job = loaded.config
    definition = {"kind": trigger.kind, **trigger.model_dump(mode="json", exclude_none=True)}
    if trigger.new_files is not None:
        paths = trigger.new_files.path or job.data.source.path
        patterns = [paths] if isinstance(paths, str) else list(paths)
        definition["watch"] = [
            pattern if files.is_remote(pattern) or os.path.isabs(os.path.expanduser(pattern)) else str(root / pattern)
            for pattern in patterns
        ]
        definition["format"] = job.data.source.format
    if trigger.monitor is not None:
        registered = job.register.model if job.register else job.name
        definition["model"] = (
            trigger.monitor.model or f"{registered}@{(job.register.alias if job.register else None) or 'champion'}"
        )
        definition["job_file"] = loaded.path.resolve().relative_to(root).as_posix()
    if trigger.new_rows is not None:
        sql = loaded.public_dict()["data"]["source"]["sql"]
        definition.update(url=sql["url"], table=sql["table"], column=trigger.new_rows.column)
    return definition


def _check_watermarks(loaded: Any, triggers: list[dict[str, Any]]) -> None:
    """A `new_rows` column must be a column of its table (`validate` can check it only against data.schema)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from raymlp.catalog import with_installed_driver

    problems = []
    for index, definition in enumerate(triggers):
        if definition["kind"] != "new_rows":
            continue
        engine = sa.create_engine(with_installed_driver(make_url(loaded.config.data.source.sql.url)))
        try:
            columns = [column["name"] for column in sa.inspect(engine).get_columns(definition["table"])]
        except Exception as error:  # unreachable, or no such table: the same place says so
            columns, reason = None, f"cannot read the columns of {definition['table']}: {str(error).splitlines()[0]}"
        finally:
            engine.dispose()
        if columns is not None and definition["column"] not in columns:
            reason = (
                f"'{definition['column']}' is not a column of {definition['table']} (columns: {', '.join(columns)})"
            )
        elif columns is not None:
            continue
        problems.append((("schedule", "triggers", index, "new_rows", "column"), reason))
    if problems:
        raise loaded.config_error(problems)


def request(catalog: Catalog, name: str, reason: str | None = None) -> FiringRecord:
    """`raymlp trigger JOB`: a firing a scheduler starts at its next look (by the job's concurrency policy)."""
    catalog.get_pipeline(name)
    said = reason.strip() if reason and reason.strip() else "requested"
    return catalog.add_firing(name, "request", said, who())


@dataclass(frozen=True)
class PipelineView:
    """One line of `raymlp pipelines`: the state, last run and its result, next run, last error."""

    name: str
    state: str
    triggers: list[str]
    running: FiringRecord | None
    last: FiringRecord | None
    next_run: datetime.datetime | None
    next_trigger: str | None
    last_error: str | None
    pending: int

    def to_json(self) -> dict[str, Any]:
        def firing(record: FiringRecord | None) -> dict[str, Any] | None:
            return None if record is None else firing_json(record)

        return {
            "name": self.name,
            "state": self.state,
            "triggers": self.triggers,
            "running": firing(self.running),
            "last": firing(self.last),
            "next_run": self.next_run.isoformat() if self.next_run else None,
            "next_trigger": self.next_trigger,
            "last_error": self.last_error,
            "pending": self.pending,
        }


def firing_json(record: FiringRecord) -> dict[str, Any]:
    def stamp(moment: datetime.datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {
        "id": record.id,
        "job": record.pipeline,
        "trigger": record.trigger,
        "due_at": stamp(record.due_at),
        "reason": record.reason,
        "fired_by": record.fired_by,
        "state": record.state,
        "submission_id": record.submission_id,
        "error": record.error,
        "created_at": stamp(record.created_at),
        "started_at": stamp(record.started_at),
        "finished_at": stamp(record.finished_at),
        "details": record.details,
    }


def views(catalog: Catalog, now: datetime.datetime | None = None) -> list[PipelineView]:
    """Every scheduled job as `raymlp pipelines` shows it."""
    now = now or utcnow()
    triggers: dict[str, list[TriggerRecord]] = {}
    for trigger in catalog.list_triggers():
        triggers.setdefault(trigger.pipeline, []).append(trigger)
    shown = []
    for pipeline in catalog.list_pipelines():
        history = catalog.list_firings(pipeline.name, limit=200)
        running = next((firing for firing in history if firing.state == "running"), None)
        finished = [firing for firing in history if firing.state not in ("pending", "running", "skipped")]
        last = finished[0] if finished else None
        failed = next((firing for firing in history if firing.state == "failed"), None)
        upcoming = sorted(
            (moment, trigger.name)
            for trigger in triggers.get(pipeline.name, [])
            if (moment := next_firing(pipeline, trigger, now)) is not None
        )
        state = "paused" if pipeline.paused else ("running" if running else "scheduled")
        shown.append(
            PipelineView(
                name=pipeline.name,
                state=state,
                triggers=[
                    f"{trigger.name}: {describe_trigger(trigger.definition)}"
                    for trigger in triggers.get(pipeline.name, [])
                ],
                running=running,
                last=last,
                next_run=None if pipeline.paused or not upcoming else upcoming[0][0],
                next_trigger=None if pipeline.paused or not upcoming else upcoming[0][1],
                last_error=failed.error if failed else None,
                pending=sum(firing.state == "pending" for firing in history),
            )
        )
    return shown
