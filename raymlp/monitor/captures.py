"""Reading a model's capture: the files of a window (by version and day partitions, then by the
rows' own times), checked before they are read (a file that is not Parquet, or not a capture, is
skipped and named), and its rows with the features as plain columns."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any

from raymlp.errors import UsageError
from raymlp.serve.capture import FEATURES_COLUMN, META_COLUMNS, PROBABILITIES_COLUMN, model_folder

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Window:
    """Rows that arrived in [since, until), or the last `rows` of them; None bounds are open."""

    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    rows: int | None = None
    description: str = "everything captured"

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "rows": self.rows,
            "description": self.description,
        }


def parse_time(text: str, key: str) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{key} '{text}': give an ISO time, e.g. 2026-12-01 or 2026-12-01T12:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def parse_window(
    window: str | None,
    since: str | None = None,
    until: str | None = None,
    rows: int | None = None,
    now: datetime.datetime | None = None,
) -> Window:
    """`--window 24h` (s, m, h, d, w: the last so long), or `--since`/`--until` ISO times, or `--rows N` (the last N)."""
    now = now or datetime.datetime.now(datetime.UTC)
    if window and (since or until):
        raise UsageError("--window: give --window or --since/--until, not both")
    if rows is not None and rows < 1:
        raise UsageError("--rows: at least 1")
    if window:
        match = _DURATION.match(window)
        if not match:
            raise UsageError(f"--window '{window}': a duration like 30m, 24h, 7d (s, m, h, d, w)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        if seconds <= 0:
            raise UsageError(f"--window '{window}': a duration above 0")
        return Window(now - datetime.timedelta(seconds=seconds), None, rows, f"last {window.strip()}")
    start = parse_time(since, "--since") if since else None
    end = parse_time(until, "--until") if until else None
    if start and end and end <= start:
        raise UsageError(f"--until {until} is not after --since {since}")
    parts = [f"since {start.isoformat()}" if start else "", f"until {end.isoformat()}" if end else ""]
    text = " ".join(part for part in parts if part) or "everything captured"
    if rows:
        text = f"last {rows} rows" + (f" ({text})" if start or end else "")
    return Window(start, end, rows, text)


@dataclass
class WindowFiles:
    files: list[str] = field(default_factory=list)
    rows: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    first_time: float | None = None  # epoch seconds of the earliest and latest rows, from the footers
    last_time: float | None = None


def _day(name: str) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(name.removeprefix("date="))
    except ValueError:
        return None


def window_files(root: str, model: str, window: Window, versions: list[str] | None = None) -> WindowFiles:
    """The capture files that can hold rows of `window` (of `versions`, default every one), each
    checked: its footer reads and it has a capture's columns; the others are skipped with the reason."""
    from raymlp.storage import files

    folder = model_folder(root, model)
    found = WindowFiles()
    for entry in files.children(folder):
        if not entry.startswith("version="):
            continue
        version = entry.removeprefix("version=")
        if versions is not None and version not in versions:
            continue
        found.versions.append(version)
        for day_entry in files.children(files.join(folder, entry)):
            day = _day(day_entry)
            if day is None:
                continue
            if window.since is not None and day < window.since.date():
                continue
            if window.until is not None and day > window.until.date():
                continue
            for name in files.list_files(files.join(folder, entry, day_entry)):
                base = files.name_of(name)
                if base.startswith(".") or not base.endswith(".parquet"):
                    continue
                rows, problem, times = _checked(name)
                if problem:
                    found.skipped.append({"path": name, "reason": problem})
                    continue
                found.files.append(name)
                found.rows += rows
                if times:
                    found.first_time = min(times[0], found.first_time or times[0])
                    found.last_time = max(times[1], found.last_time or times[1])
    return found


def _checked(name: str) -> tuple[int, str, tuple[float, float] | None]:
    """(rows, the reason it cannot be read or "", (first, last) row time from its statistics)."""
    import pyarrow.parquet as pq

    from raymlp.storage import files

    try:
        with files.open_input(name) as handle:
            metadata = pq.ParquetFile(handle).metadata
            names = metadata.schema.to_arrow_schema().names
    except Exception as error:
        return 0, f"not a readable Parquet file: {str(error).splitlines()[0][:200]}", None
    missing = [column for column in ("request_id", "time", FEATURES_COLUMN) if column not in names]
    if missing:
        return 0, f"not a raymlp capture file (no {', '.join(missing)} column)", None
    times = None
    position = names.index("time")
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(position).statistics
        if statistics is None or not statistics.has_min_max:
            continue
        low, high = _seconds(statistics.min), _seconds(statistics.max)
        times = (low, high) if times is None else (min(times[0], low), max(times[1], high))
    return metadata.num_rows, "", times


def _seconds(value: Any) -> float:
    if isinstance(value, datetime.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=datetime.UTC)).timestamp()
    return float(value) / 1_000_000


def flattened(table: Any) -> Any:
    """A capture table with each feature as its own column (`features.alcohol` -> `alcohol`) and each
    class probability as `probability_<class>`."""
    import pyarrow as pa

    columns: dict[str, Any] = {}
    for name in table.column_names:
        column = table.column(name)
        if name in (FEATURES_COLUMN, PROBABILITIES_COLUMN) and pa.types.is_struct(column.type):
            prefix = "" if name == FEATURES_COLUMN else "probability_"
            combined = column.combine_chunks()
            for index in range(combined.type.num_fields):
                columns[prefix + combined.type.field(index).name] = combined.field(index)
        else:
            columns[name] = column
    return pa.table(columns)


def in_window(table: Any, window: Window) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = None
    times = table.column("time")
    if window.since is not None:
        mask = pc.greater_equal(times, pa.scalar(window.since, pa.timestamp("us", tz="UTC")))
    if window.until is not None:
        upper = pc.less(times, pa.scalar(window.until, pa.timestamp("us", tz="UTC")))
        mask = upper if mask is None else pc.and_(mask, upper)
    return table if mask is None else table.filter(mask)


def feature_columns(table: Any) -> list[str]:
    """The feature columns of a flattened capture table."""
    skip = set(META_COLUMNS) | {"prediction"}
    return [name for name in table.column_names if name not in skip and not name.startswith("probability_")]


def read_window(names: list[str], window: Window, columns: list[str] | None = None) -> Any:
    """The rows of `window` in the capture files `names` (at least one), read here in one table;
    for what a driver holds (a replay, a reference window), not for the window's analysis."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raymlp.storage import files

    tables = []
    for name in names:
        with files.open_input(name) as handle:
            tables.append(in_window(pq.read_table(handle, columns=columns), window))
    return pa.concat_tables(tables, promote_options="permissive")


def last_rows(names: list[str], window: Window) -> Window:
    """`window` narrowed to its last `window.rows` arrivals (their times read first: 8 bytes a row)."""
    import numpy as np

    times = read_window(names, window, ["time"]).column("time")
    if window.rows is None or len(times) <= window.rows:
        return window
    micros = np.sort(times.cast("int64").to_numpy())[-window.rows]
    since = datetime.datetime.fromtimestamp(micros / 1_000_000, datetime.UTC)
    return Window(since, window.until, window.rows, window.description)


#: Rows a read task of `dataset_of` takes at most: small blocks keep each worker's memory low.
ROWS_PER_READ = 131_072


def dataset_of(names: list[str], *, one_operator: bool = False) -> Any:
    """A Ray Dataset of Parquet files (local paths or URIs of one store). Local files are read in
    runs of whole row groups of at most `ROWS_PER_READ` rows (`serve.row_groups`), so a task holds
    a small block, not a whole file; files in a bucket go through Ray Data's first Parquet
    datasource, which lists them without starting footer-reading actors.

    `one_operator`: the plan is the read fused with one map (a profile, a window's partials). Then
    Ray Data's resource reservation is off for it, as for batch predict (DESIGN, "Serve and
    predict"): with it, Ray Data 2.60 ran these tasks one at a time (10M rows x 30 columns:
    11 s -> 6 s on 2 CPUs)."""
    import ray
    import ray.data

    from raymlp.storage import files

    dataset = None
    if not files.is_remote(names[0]):
        from raymlp.serve.row_groups import RowGroupDatasource, plan_slices

        cpus = max(int(ray.cluster_resources().get("CPU", 1)), 1)
        slices = plan_slices(names, ROWS_PER_READ, cpus)
        if slices is not None:
            dataset = ray.data.read_datasource(RowGroupDatasource(slices), override_num_blocks=len(slices))
    if dataset is None:
        dataset = _read_parquet(names)
    if one_operator:
        dataset.context.op_resource_reservation_enabled = False  # this dataset's own copy of the context
    return dataset


def _read_parquet(names: list[str]) -> Any:
    import ray.data

    from raymlp.storage import files

    filesystem, _ = files.arrow_filesystem(names[0])
    paths = [files.arrow_filesystem(name)[1] for name in names] if filesystem is not None else names
    context = ray.data.DataContext.get_current()
    saved = getattr(context, "use_datasource_v2", None)
    try:
        if saved is not None:
            context.use_datasource_v2 = False
        return ray.data.read_parquet(paths, filesystem=filesystem)
    finally:
        if saved is not None:
            context.use_datasource_v2 = saved
