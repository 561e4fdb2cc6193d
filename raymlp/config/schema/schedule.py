"""The `schedule` section: when raymlp's scheduler runs the job by itself (`raymlp schedule add`)."""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from .base import Name, Section

#: A duration: a number and a unit (s, m, h, d, w), e.g. 30s, 5m, 1.5h.
DURATION_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

#: Trigger kinds a firing can come from; `request` is `raymlp trigger JOB`, which needs no entry in the job file.
TRIGGER_KINDS = ("cron", "every", "new_files", "new_rows", "monitor")


def duration_seconds(text: str) -> float:
    """Seconds of a duration like `30s`, `5m`, `1.5h` (ValueError naming the allowed form otherwise)."""
    match = re.match(DURATION_PATTERN, str(text))
    if not match:
        raise ValueError(f"'{text}' is not a duration like 30s, 5m, 24h, 7d (s, m, h, d, w)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"'{text}': a duration above 0")
    return seconds


def _check_duration(text: str) -> str:
    duration_seconds(text)
    return text


#: A duration in the job file, checked as it is read.
Duration = Annotated[str, AfterValidator(_check_duration), Field(json_schema_extra={"pattern": DURATION_PATTERN})]


def check_time_zone(name: str) -> str:
    """`name` if it is an IANA time zone this machine knows (ValueError otherwise)."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"'{name}' is not a known time zone (IANA names such as UTC, Europe/Berlin, America/New_York)"
        ) from None
    return name


def check_cron(expression: str) -> str:
    """`expression` if it is a cron expression: 5 fields (minute hour day month weekday), or 6 with seconds
    first (ValueError saying which field is wrong otherwise)."""
    from croniter import croniter
    from croniter.croniter import CroniterError

    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"'{expression}' has {len(fields)} fields; a cron expression has 5 (minute hour day month weekday) "
            "or 6 with seconds first (second minute hour day month weekday)"
        )
    try:
        croniter(expression, second_at_beginning=len(fields) == 6)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValueError(f"'{expression}' is not a valid cron expression: {exc}") from None
    return expression


class NewFilesConfig(Section):
    path: str | None = Field(
        default=None,
        description="Files, globs or folders watched (default: data.source.path). A file whose content was "
        "collected before, under any name, is not collected again.",
    )
    every: Duration = Field(default="1m", description="How often the folder is looked at.")


class NewRowsConfig(Section):
    column: str = Field(
        description="The watermark: a column of data.source's table that grows (an id, an updated_at time); "
        "rows above the largest value collected so far are new."
    )
    every: Duration = Field(default="1m", description="How often the table is asked.")


class MonitorTriggerConfig(Section):
    model: str | None = Field(
        default=None,
        description="NAME[@ALIAS] whose capture is checked (default: register.model at its alias, else champion).",
    )
    every: Duration = Field(default="1h", description="How often the monitor check runs.")
    drift: bool = Field(default=True, description="Fire when the window's data drifts (the job's `monitor` settings).")
    performance: dict[str, str] = Field(
        default_factory=dict,
        description='Fire when a measured or estimated metric breaks its bar, e.g. {accuracy: ">= 0.85"}.',
    )


class TriggerConfig(Section):
    name: Name = Field(description="The trigger's name, shown in history and in the Ray job's metadata.")
    cron: str | None = Field(
        default=None,
        description="Cron expression: 5 fields, or 6 with seconds first ('*/10 * * * * *': every 10 seconds).",
    )
    every: Duration | None = Field(
        default=None, description="A fixed interval (30s, 15m, 6h), counted from when the schedule was added."
    )
    timezone: str | None = Field(default=None, description="Time zone of `cron` (default: the schedule's).")
    new_files: NewFilesConfig | None = Field(default=None, description="Fire when files never collected appear.")
    new_rows: NewRowsConfig | None = Field(
        default=None, description="Fire when the source table has rows past a watermark."
    )
    monitor: MonitorTriggerConfig | None = Field(
        default=None, description="Fire when the model's monitored window drifts or its performance drops."
    )

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        return value if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _zone_known(cls, value: str | None) -> str | None:
        return value if value is None else check_time_zone(value)

    @model_validator(mode="after")
    def _one_kind(self) -> TriggerConfig:
        given = [kind for kind in TRIGGER_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            found = f"found {', '.join(given)}" if given else "found none"
            raise ValueError(f"a trigger has exactly one of {', '.join(TRIGGER_KINDS)} ({found})")
        if self.timezone is not None and self.cron is None:
            raise ValueError("timezone applies to a cron trigger only")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in TRIGGER_KINDS if getattr(self, kind) is not None)


class ScheduleConfig(Section):
    triggers: list[TriggerConfig] = Field(
        default_factory=list, description="What starts a run of the job (`raymlp trigger JOB` always can)."
    )
    timezone: str = Field(default="UTC", description="Time zone of cron triggers (IANA name).")
    concurrency: Literal["skip", "queue", "replace"] = Field(
        default="skip",
        description="A firing while the job's last run still runs: skip it, queue it until that run ends, "
        "or stop that run and start this one. A job never runs twice at once.",
    )
    catch_up: Literal["once", "none"] = Field(
        default="once",
        description="Firings missed while no scheduler ran: run once when it is back (once), or drop them (none).",
    )
    overrides: list[str] = Field(
        default_factory=list, description="KEY=VALUE settings each run gets, as `raymlp run --set` takes them."
    )

    @field_validator("timezone")
    @classmethod
    def _zone_known(cls, value: str) -> str:
        return check_time_zone(value)

    @field_validator("triggers")
    @classmethod
    def _names_unique(cls, triggers: list[TriggerConfig]) -> list[TriggerConfig]:
        names = [trigger.name for trigger in triggers]
        repeated = sorted({name for name in names if names.count(name) > 1} | ({"request"} & set(names)))
        if repeated:
            raise ValueError(
                f"trigger names must be unique and not 'request' (it is `raymlp trigger`'s): {', '.join(repeated)}"
            )
        return triggers
