"""When a time trigger is due: cron expressions (croniter) and fixed intervals, in a time zone."""

from __future__ import annotations

import datetime
import zoneinfo
from dataclasses import dataclass
from typing import Any

from raymlp.config.schema import duration_seconds

#: Most due times counted between two looks (a scheduler down for years still only counts this many).
MOST_COUNTED = 10_000


@dataclass(frozen=True)
class Due:
    """The due times of a trigger between its last firing and now: how many, and the latest."""

    count: int
    latest: datetime.datetime | None


def _whole_seconds(moment: datetime.datetime) -> datetime.datetime:
    return moment.replace(microsecond=0)


def next_due(
    definition: dict[str, Any], anchor: datetime.datetime, after: datetime.datetime, timezone: str = "UTC"
) -> datetime.datetime | None:
    """The first time strictly after `after` that the trigger (`cron` or `every` counted from `anchor`) is due, in
    UTC; None for triggers that no clock fires."""
    if definition.get("cron"):
        from croniter import croniter

        expression = definition["cron"]
        zone = zoneinfo.ZoneInfo(definition.get("timezone") or timezone)
        start = max(after, anchor).astimezone(zone)
        following = croniter(expression, start, second_at_beginning=len(expression.split()) == 6).get_next(
            datetime.datetime
        )
        return _whole_seconds(following.astimezone(datetime.UTC))
    if definition.get("every"):
        step = max(1.0, duration_seconds(definition["every"]))
        start = _whole_seconds(anchor)
        if after < start:
            return start + datetime.timedelta(seconds=step)
        elapsed = (after - start).total_seconds()
        steps = int(elapsed // step) + 1
        return start + datetime.timedelta(seconds=steps * step)
    return None


def due_between(
    definition: dict[str, Any],
    anchor: datetime.datetime,
    last_due: datetime.datetime | None,
    now: datetime.datetime,
    timezone: str = "UTC",
) -> Due:
    """The due times after `last_due` (or the trigger's `anchor`, when it never fired) up to `now`."""
    count, latest = 0, None
    moment = next_due(definition, anchor, last_due or anchor, timezone)
    while moment is not None and moment <= now and count < MOST_COUNTED:
        count, latest = count + 1, moment
        moment = next_due(definition, anchor, moment, timezone)
    if count == MOST_COUNTED and definition.get("cron"):  # the latest due time, without walking to it
        from croniter import croniter

        expression = definition["cron"]
        zone = zoneinfo.ZoneInfo(definition.get("timezone") or timezone)
        previous = croniter(
            expression,
            now.astimezone(zone) + datetime.timedelta(seconds=1),
            second_at_beginning=len(expression.split()) == 6,
        ).get_prev(datetime.datetime)
        latest = _whole_seconds(previous.astimezone(datetime.UTC))
    if count == MOST_COUNTED and definition.get("every"):  # the rest, counted without walking
        step = max(1.0, duration_seconds(definition["every"]))
        start = _whole_seconds(anchor)
        steps = int((now - start).total_seconds() // step)
        count, latest = (
            steps - int(((last_due or start) - start).total_seconds() // step),
            start + datetime.timedelta(seconds=steps * step),
        )
    return Due(count, latest)
