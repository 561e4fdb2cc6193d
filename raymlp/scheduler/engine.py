"""One scheduler's work, one look at a time: record what is due, start what may start, follow what runs.

Every decision is a catalog transaction that only one scheduler can win (a trigger's last firing time is
compared and set; a pipeline's lock is a row with its name as the key), so any number of schedulers on one
catalog fire each due time once and never run one job twice at once; a scheduler that dies and comes back
reads where it was from the catalog.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from raymlp.catalog import Catalog, FiringRecord, PipelineRecord, TriggerRecord

from .times import due_between, next_due

#: A due time later than this is "missed" (the scheduler was down); within it, it is merely late.
LATE_GRACE_S = 30.0

#: A lock taken for a firing that never started (its scheduler died between the two) is taken over after this.
ABANDONED_START_S = 60.0

#: Ray job states, as `Launcher.status` reports them.
FINISHED_STATES = {"SUCCEEDED": "succeeded", "FAILED": "failed", "STOPPED": "stopped"}


class Launcher(Protocol):
    """What runs a firing: a Ray job per firing, named by the scheduler."""

    def submit(self, pipeline: PipelineRecord, firing: FiringRecord, submission_id: str) -> None:
        """Submit the firing's run as `submission_id` (submitting one that exists is no error)."""

    def status(self, submission_id: str) -> tuple[str, str | None]:
        """The Ray job's state (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED, or MISSING) and, finished, why."""

    def stop(self, submission_id: str) -> None:
        """Stop the Ray job (a finished or missing one is no error)."""


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def submission_id(catalog_url: str, firing: FiringRecord) -> str:
    """The Ray job id of a firing: the same for every scheduler of a catalog, so a start is never doubled."""
    catalog = hashlib.sha256(catalog_url.encode()).hexdigest()[:6]
    return f"raymlp-{firing.pipeline}-{firing.id}-{catalog}"


def describe_trigger(definition: dict) -> str:
    """How history names a trigger: `cron '0 2 * * *' (Europe/Berlin)`, `every 30s`, ..."""
    if definition.get("cron"):
        zone = definition.get("timezone")
        return f"cron '{definition['cron']}'" + (f" ({zone})" if zone else "")
    if definition.get("every"):
        return f"every {definition['every']}"
    return str(definition.get("kind", "trigger"))


@dataclass
class Scheduler:
    """One scheduler over one catalog; `tick` does one look."""

    catalog: Catalog
    launcher: Launcher
    name: str
    clock: Callable[[], datetime.datetime] = utcnow
    errors: list[str] = field(default_factory=list)

    def tick(self) -> None:
        """Record the firings now due, follow running ones, start pending ones (each pipeline on its own: one
        pipeline's failure is recorded and the others go on)."""
        self.errors = []
        pipelines = {pipeline.name: pipeline for pipeline in self.catalog.list_pipelines()}
        triggers: dict[str, list[TriggerRecord]] = {}
        for trigger in self.catalog.list_triggers():
            triggers.setdefault(trigger.pipeline, []).append(trigger)
        for pipeline in pipelines.values():
            if not pipeline.paused:
                for trigger in triggers.get(pipeline.name, []):
                    self._guarded(pipeline.name, partial(self._fire_if_due, pipeline, trigger))
        self._guarded("running firings", self._follow_running)
        self._guarded("locks", partial(self._recover_locks, pipelines))
        pending = sorted(self.catalog.list_firings(states=["pending"], limit=10_000), key=lambda firing: firing.id)
        by_pipeline: dict[str, list[FiringRecord]] = {}
        for firing in pending:
            by_pipeline.setdefault(firing.pipeline, []).append(firing)
        for name, firings in by_pipeline.items():
            self._guarded(name, partial(self._start, pipelines.get(name), firings))

    def _guarded(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as error:  # one pipeline's trouble must not stop the others
            self.errors.append(f"{what}: {type(error).__name__}: {error}")

    # ------------------------------------------------------------------ firing

    def _fire_if_due(self, pipeline: PipelineRecord, trigger: TriggerRecord) -> None:
        timezone = pipeline.settings.get("timezone", "UTC")
        now = self.clock()
        due = due_between(trigger.definition, trigger.anchor, trigger.last_due, now, timezone)
        if not due.count or due.latest is None:
            return
        said = describe_trigger(trigger.definition)
        missed = due.count - 1
        late = (now - due.latest).total_seconds() > LATE_GRACE_S
        details = {"missed": missed} if missed else {}
        at = f"{due.latest:%Y-%m-%d %H:%M:%S} UTC"
        drop_missed = pipeline.settings.get("catch_up", "once") == "none"
        if late and drop_missed:
            reason = f"{said}: {due.count} firing(s) missed while no scheduler ran, dropped (catch_up: none)"
            state = "skipped"
        elif missed and drop_missed:
            reason = f"{said} due at {at}; {missed} earlier firing(s) missed while no scheduler ran, dropped (catch_up: none)"
            state = "pending"
        elif missed:
            reason = (
                f"{said}: {due.count} firings missed while no scheduler ran (last due {at}); run once (catch_up: once)"
            )
            state = "pending"
        else:
            reason, state = f"{said} due at {at}", "pending"
        self.catalog.claim_due(
            pipeline.name, trigger.name, trigger.last_due, due.latest, reason, self.name, state, details
        )

    # ------------------------------------------------------------------ starting

    def _start(self, pipeline: PipelineRecord | None, pending: list[FiringRecord]) -> None:
        if pipeline is None:  # removed with firings still waiting
            for firing in pending:
                self.catalog.update_firing(
                    firing.id, ["pending"], state="skipped", error="the job was removed from the schedule"
                )
            return
        policy = pipeline.settings.get("concurrency", "skip")
        for firing in pending:
            if self.catalog.acquire_lock(pipeline.name, firing.id, self.name):
                self._launch(pipeline, firing)
                if policy != "skip":
                    return
                continue
            holder = next((lock for lock in self.catalog.list_locks() if lock.pipeline == pipeline.name), None)
            if holder is None or holder.firing_id == firing.id:
                continue  # released meanwhile (next look starts it), or another scheduler is starting this one
            if policy == "queue":
                return  # it and the ones after it wait, in order
            if policy == "skip":
                self.catalog.update_firing(
                    firing.id,
                    ["pending"],
                    state="skipped",
                    error=f"firing {holder.firing_id} of {pipeline.name} was still running (concurrency: skip)",
                )
                continue
            self._replace(pipeline, holder.firing_id, firing)
            return

    def _replace(self, pipeline: PipelineRecord, running_id: int, firing: FiringRecord) -> None:
        running = self.catalog.get_firing(running_id)
        if running.submission_id:
            self.launcher.stop(running.submission_id)
        self.catalog.update_firing(
            running_id,
            ["pending", "running"],
            state="replaced",
            error=f"stopped for firing {firing.id} ({firing.trigger}) (concurrency: replace)",
        )
        self.catalog.release_lock(pipeline.name, running_id)
        if self.catalog.acquire_lock(pipeline.name, firing.id, self.name):
            self._launch(pipeline, firing)

    def _launch(self, pipeline: PipelineRecord, firing: FiringRecord) -> None:
        """Submit the firing that holds the lock; a failed submission fails the firing and frees the lock."""
        name = submission_id(self.catalog.url, firing)
        try:
            self.launcher.submit(pipeline, firing, name)
        except Exception as error:
            self.catalog.update_firing(
                firing.id, ["pending"], state="failed", submission_id=name, error=f"could not submit: {error}"
            )
            self.catalog.release_lock(pipeline.name, firing.id)
            return
        self.catalog.update_firing(firing.id, ["pending"], state="running", submission_id=name, started_at=self.clock())

    # ------------------------------------------------------------------ following

    def _follow_running(self) -> None:
        for firing in self.catalog.list_firings(states=["running"], limit=10_000):
            if not firing.submission_id:
                continue
            state, message = self.launcher.status(firing.submission_id)
            if state == "MISSING":
                finished, message = "failed", f"the Ray job {firing.submission_id} is not on the cluster any more"
            elif state in FINISHED_STATES:
                finished = FINISHED_STATES[state]
            else:
                continue
            error = None if finished == "succeeded" else (message or f"the Ray job {state.lower()}")
            if self.catalog.update_firing(firing.id, ["running"], state=finished, error=error) is not None:
                self.catalog.release_lock(firing.pipeline, firing.id)

    def _recover_locks(self, pipelines: dict[str, PipelineRecord]) -> None:
        """Locks whose firing finished (its scheduler died before freeing it) are freed; a firing whose
        scheduler died between taking the lock and submitting is submitted (its Ray job id is fixed)."""
        now = self.clock()
        for lock in self.catalog.list_locks():
            firing = self.catalog.get_firing(lock.firing_id)
            if firing.state not in ("pending", "running"):
                self.catalog.release_lock(lock.pipeline, lock.firing_id)
            elif firing.state == "pending" and (now - lock.acquired_at).total_seconds() > ABANDONED_START_S:
                pipeline = pipelines.get(lock.pipeline)
                if pipeline is None:
                    self.catalog.update_firing(firing.id, ["pending"], state="skipped", error="the job was removed")
                    self.catalog.release_lock(lock.pipeline, lock.firing_id)
                else:
                    self._launch(pipeline, firing)


def next_firing(pipeline: PipelineRecord, trigger: TriggerRecord, now: datetime.datetime) -> datetime.datetime | None:
    """When the trigger fires next (None: no clock fires it)."""
    timezone = pipeline.settings.get("timezone", "UTC")
    return next_due(trigger.definition, trigger.anchor, max(now, trigger.last_due or trigger.anchor), timezone)
