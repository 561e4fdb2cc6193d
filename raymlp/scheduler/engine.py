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

#: The longest pause before new data whose runs keep failing is looked for again.
MOST_BACKOFF_S = 3600.0

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

    def submit_check(self, pipeline: PipelineRecord, arguments: list[str], submission_id: str) -> None:
        """Run `raymlp ARGUMENTS` on the cluster as `submission_id` (a monitor trigger's check)."""


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
                    if trigger.kind in ("cron", "every"):
                        self._guarded(pipeline.name, partial(self._fire_if_due, pipeline, trigger))
                    elif trigger.kind in ("new_files", "new_rows"):
                        self._guarded(f"{pipeline.name} {trigger.name}", partial(self._look, pipeline, trigger))
                    elif trigger.kind == "monitor":
                        self._guarded(f"{pipeline.name} {trigger.name}", partial(self._check_model, pipeline, trigger))
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

    def _look(self, pipeline: PipelineRecord, trigger: TriggerRecord) -> None:
        """Look for new data when the trigger's interval has passed and none of its firings is still under way
        (what they collect is not collected yet); one scheduler takes each look."""
        from raymlp.config.schema import duration_seconds

        from .watch import look_for_files, look_for_rows

        now = self.clock().replace(microsecond=0)
        every = duration_seconds(trigger.definition[trigger.kind].get("every", "1m"))
        failures = int(trigger.state.get("failures", 0))
        wait = every if not failures else min(max(every, 1.0) * 2 ** min(failures, 12), MOST_BACKOFF_S)
        if trigger.last_due is not None and (now - trigger.last_due).total_seconds() < wait:
            return
        under_way = self.catalog.list_firings(pipeline.name, states=["pending", "running"], limit=10_000)
        if any(firing.trigger == trigger.name for firing in under_way):
            return
        if not self.catalog.claim_check(pipeline.name, trigger.name, trigger.last_due, now):
            return
        look = look_for_files if trigger.kind == "new_files" else look_for_rows
        found = look(trigger.definition, trigger.state)
        if found.reason:
            self.catalog.add_firing(pipeline.name, trigger.name, found.reason, self.name, details=found.details)
        if found.state:
            self.catalog.update_trigger_state(
                pipeline.name,
                trigger.name,
                lambda state: {**state, **found.state, "collected": _union(state, found.state)},
            )

    def _check_model(self, pipeline: PipelineRecord, trigger: TriggerRecord) -> None:
        """A monitor trigger: every `every`, `raymlp monitor MODEL --job JOB` runs on the cluster as a Ray job (the
        analysis is Ray Data work, not the scheduler's); when it ends, its report in the catalog decides."""
        from raymlp.config.schema import duration_seconds

        from .watch import monitor_verdict

        check = trigger.state.get("check")
        if check:
            state, message = self.launcher.status(check["submission_id"])
            if state not in FINISHED_STATES and state != "MISSING":
                return
            since = datetime.datetime.fromisoformat(check["since"])
            model = trigger.definition["model"].split("@")[0].split(":")[0]
            reports = [item for item in self.catalog.list_monitor_reports(model, limit=20) if item.created_at >= since]
            outcome: dict[str, object] = {"check": None, "last_check": check["submission_id"]}
            if reports:
                report = reports[0]
                outcome.update(last_report=report.id, last_check_error=None)
                reason = monitor_verdict(trigger.definition, report.drifted, report.drift_share, report.summary)
                under_way = self.catalog.list_firings(pipeline.name, states=["pending", "running"], limit=10_000)
                if reason and not any(firing.trigger == trigger.name for firing in under_way):
                    self.catalog.add_firing(
                        pipeline.name,
                        trigger.name,
                        reason,
                        self.name,
                        details={"monitor_report": report.id, "report": report.report_path},
                    )
            else:
                outcome["last_check_error"] = (message or f"the check {state.lower()} without a report")[:2000]
            self.catalog.update_trigger_state(pipeline.name, trigger.name, lambda stored: {**stored, **outcome})
            return
        now = self.clock().replace(microsecond=0)
        every = duration_seconds(trigger.definition["monitor"].get("every", "1h"))
        if trigger.last_due is not None and (now - trigger.last_due).total_seconds() < every:
            return
        if not self.catalog.claim_check(pipeline.name, trigger.name, trigger.last_due, now):
            return
        catalog_tag = hashlib.sha256(self.catalog.url.encode()).hexdigest()[:6]
        name = f"raymlp-{pipeline.name}-check-{trigger.name}-{now:%Y%m%d%H%M%S}-{catalog_tag}"
        arguments = ["monitor", trigger.definition["model"], "--job", trigger.definition["job_file"]]
        self.launcher.submit_check(pipeline, arguments, name)
        self.catalog.update_trigger_state(
            pipeline.name,
            trigger.name,
            lambda stored: {**stored, "check": {"submission_id": name, "since": now.isoformat()}},
        )

    def _settle(self, firing: FiringRecord, succeeded: bool) -> None:
        """A succeeded firing's new data is collected now: its files' hashes, its watermark. A failed one's is
        looked for again after a pause that doubles with each failure in a row."""
        files = [item["sha256"] for item in firing.details.get("files", [])]
        watermark = firing.details.get("watermark_to")
        if not files and watermark is None:
            return

        def change(state: dict) -> dict:
            state["failures"] = 0 if succeeded else int(state.get("failures", 0)) + 1
            if not succeeded:
                return state
            if files:
                state["collected"] = sorted(set(state.get("collected", [])) | set(files))
            if watermark is not None:
                state["watermark"] = watermark
            return state

        self.catalog.update_trigger_state(firing.pipeline, firing.trigger, change)

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
            self._settle(firing, finished == "succeeded")  # before it ends: a look then starts from what it collected
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


def _union(stored: dict, looked: dict) -> list[str]:
    """Hashes collected by either the stored state (a run that succeeded meanwhile) or the look's (its baseline)."""
    return sorted(set(stored.get("collected", [])) | set(looked.get("collected", [])))


def next_firing(pipeline: PipelineRecord, trigger: TriggerRecord, now: datetime.datetime) -> datetime.datetime | None:
    """When the trigger fires next (None: no clock fires it)."""
    timezone = pipeline.settings.get("timezone", "UTC")
    return next_due(trigger.definition, trigger.anchor, max(now, trigger.last_due or trigger.anchor), timezone)
