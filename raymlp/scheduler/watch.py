"""Looking for new data: files whose content was never collected, rows of a table past a watermark.

The first look takes what is there as the baseline (it was collected by the runs before the schedule); later
looks find what is new, and the firing's run collects exactly that (`--set` overrides naming the files, or a
query for the rows between the watermark and the largest value seen), appending to the job's collect table.
A look's findings become collected only when the run that collects them succeeds.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from raymlp.errors import UsageError
from raymlp.storage import files

_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

#: A firing's run reads only what is new, which its job's `schedule` rules (about the job as written) would refuse.
RUN_ONLY = ["schedule=null"]

#: The most files one firing collects (the rest wait for the next look).
MOST_FILES_PER_FIRING = 1000


@dataclass
class Found:
    """What a look found: the firing's reason, its details (with the run's overrides), and the keys of the
    trigger's state the look sets (`collected` hashes are added to those stored)."""

    reason: str | None
    details: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


def expand_env(text: str) -> str:
    """`${NAME}` / `${NAME:-default}` from this process's environment (the scheduler's, on the cluster)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise UsageError(f"environment variable {name} is not set where the scheduler runs")

    return _ENV_REFERENCE.sub(replace, text)


def look_for_files(definition: dict[str, Any], state: dict[str, Any]) -> Found:
    """Files matching the watched paths whose content (sha256) was never collected; a file's hash is computed
    again only when its size or modification time changed."""
    from raymlp.data.sources import expand_paths

    try:
        matches = expand_paths(definition["watch"], definition.get("format", "csv"))
    except UsageError:
        matches = []
    seen: dict[str, list[Any]] = state.get("seen", {})
    collected = set(state.get("collected", []))
    fresh_seen: dict[str, list[Any]] = {}
    new: list[dict[str, Any]] = []
    hashes = set()
    for path in matches:
        current = files.state(path)
        if current is None:
            continue
        cached = seen.get(path)
        if cached and cached[:2] == [current.size, current.mtime_ns]:
            digest = cached[2]
        else:
            digest = files.sha256_of(path)
        fresh_seen[path] = [current.size, current.mtime_ns, digest]
        if digest not in collected and digest not in hashes and len(new) < MOST_FILES_PER_FIRING:
            hashes.add(digest)
            new.append({"path": path, "sha256": digest, "bytes": current.size})
    next_state: dict[str, Any] = {"seen": fresh_seen}
    if not state.get("started"):  # the baseline: what is there was collected before the schedule
        next_state.update(started=True, collected=sorted({item[2] for item in fresh_seen.values()}))
        return Found(None, state=next_state)
    if not new:
        return Found(None, state=next_state)
    names = ", ".join(os.path.basename(item["path"]) for item in new[:3]) + (" ..." if len(new) > 3 else "")
    overrides = [f"data.source.path={json.dumps([item['path'] for item in new])}", *RUN_ONLY]
    return Found(
        f"{len(new)} new file(s): {names}",
        {"files": new, "overrides": overrides},
        next_state,
    )


def _literal(value: Any) -> tuple[Any, str]:
    """A watermark value as JSON keeps it, and its kind."""
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat(), "time"
    if isinstance(value, int | float):
        return value, "number"
    return str(value), "text"


def look_for_rows(definition: dict[str, Any], state: dict[str, Any]) -> Found:
    """Rows of the source table whose watermark column is above the last collected value."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from raymlp.catalog import with_installed_driver

    url = with_installed_driver(make_url(expand_env(definition["url"])))
    table, column = definition["table"], definition["column"]
    engine = sa.create_engine(url)
    try:
        source = sa.table(table, sa.column(column))
        watched = source.c[column]
        with engine.connect() as connection:
            high = connection.execute(sa.select(sa.func.max(watched))).scalar()
            low = state.get("watermark")
            if not state.get("started"):
                return Found(
                    None, state={"started": True, "watermark": _literal(high)[0] if high is not None else None}
                )
            if high is None or (low is not None and not _above(high, low)):
                return Found(None)
            where = watched <= high if low is None else sa.and_(watched > _typed(low, high), watched <= high)
            count = connection.execute(sa.select(sa.func.count()).select_from(source).where(where)).scalar() or 0
            statement = sa.select(sa.text("*")).select_from(source).where(where)
            compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
            query = " ".join(str(compiled).split())
    finally:
        engine.dispose()
    if not count:
        return Found(None)
    high_value, _ = _literal(high)
    overrides = ["data.source.sql.table=null", f"data.source.sql.query={json.dumps(query)}", *RUN_ONLY]
    return Found(
        f"{count} new row(s) in {table} past {column} = {low} (up to {high_value})",
        {"rows": count, "watermark_from": low, "watermark_to": high_value, "overrides": overrides},
    )


def _typed(low: Any, like: Any) -> Any:
    """The stored watermark as the column's type (JSON keeps times as ISO text)."""
    if isinstance(like, datetime.datetime) and isinstance(low, str):
        return datetime.datetime.fromisoformat(low)
    if isinstance(like, datetime.date) and isinstance(low, str):
        return datetime.date.fromisoformat(low)
    return low


def _above(high: Any, low: Any) -> bool:
    return bool(high > _typed(low, high))


def monitor_verdict(definition: dict[str, Any], drifted: bool, share: float, summary: dict[str, Any]) -> str | None:
    """Why a monitor report should retrain the model (None: it should not): the data drifts (when the trigger
    watches drift), or a measured (else estimated) metric breaks its bar."""
    from raymlp.config.schema.serve import REQUIREMENT_PATTERN

    settings = definition.get("monitor", {})
    reasons = []
    if settings.get("drift", True) and drifted:
        columns = ", ".join(summary.get("columns_drifted") or []) or "prediction"
        reasons.append(f"the data drifts ({share:.0%} of columns: {columns})")
    for metric, rule in (settings.get("performance") or {}).items():
        match = REQUIREMENT_PATTERN.match(rule)
        if match is None:
            continue
        for kind in ("measured", "estimated"):
            value = (summary.get(kind) or {}).get(metric)
            if value is None:
                continue
            if not _holds(float(value), match.group(1), float(match.group(2))):
                reasons.append(f"{kind} {metric} {value:.4g} breaks '{rule.strip()}'")
            break
    if not reasons:
        return None
    return f"monitor {definition['model']}: " + "; ".join(reasons)


def _holds(value: float, operator: str, bar: float) -> bool:
    return {">=": value >= bar, "<=": value <= bar, ">": value > bar, "<": value < bar, "==": value == bar}[operator]
