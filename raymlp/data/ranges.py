"""Files read as parallel ranges: each range is parsed, checked, digested and (for a convert)
written as one Parquet part, so memory holds a few ranges at a time, never the files.

A CSV or JSON-lines file is cut into byte ranges of whole lines, a Parquet file into groups of row
groups. One thread per core works through the ranges: pyarrow's parser and Parquet writer and the
numpy digest release the GIL, and a thread shares the process's memory, where Ray tasks would
pay for process start-up and for moving every row through the object store.

What a range cannot know alone is settled afterwards, without reading the files twice except
where needed:
- CSV quoted fields may hold newlines, so a cut may fall inside one. A cut is right exactly when
  the number of quote characters before it is even; a range that began inside quotes is merged
  with the one before it and read again.
- Types are inferred per range; the version's schema is their union (int + float = float, any
  disagreement = string), and the few ranges that read differently are read again with it.
- `unique` rules hold across ranges: a value an earlier range already had is a duplicate, and
  its range is checked again knowing that.
Line numbers are relative inside a range and made absolute once every earlier range has counted
its lines.
"""

from __future__ import annotations

import builtins
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raymlp.config.schema import SchemaConfig, SourceConfig
from raymlp.errors import UsageError, WorkFailed
from raymlp.storage import files as storage_files

from .csvfile import RAW_COLUMN, REASON_COLUMN, ROW_COLUMN, SOURCE_COLUMN, TEXT_COLUMN, physical_lines
from .integrity import ContentDigest, canonical, file_sha256, plain_types, row_hash_sum
from .statistics import finish_statistics, merge_statistics, partial_statistics

#: Bytes per range, at most (default 64 MiB); smaller files are cut so every core gets work.
RANGE_BYTES_ENV = "RAYMLP_READ_RANGE_BYTES"
#: Set to 1 to read ranges as Ray tasks even on one node (they are on a cluster of several).
READ_ON_RAY_ENV = "RAYMLP_READ_ON_RAY"
_MAX_RANGE_BYTES = 64 << 20
_MIN_RANGE_BYTES = 8 << 20
_FIRST_REASONS = 20
#: Why a collect with `on_error: fail` refuses malformed records, and the ways out.
MALFORMED_IN_A_TABLE = (
    "a table cannot hold them aside with data.schema.on_error: fail (with quarantine, a "
    "collect keeps them in the table's __rejects table; a convert straight from the files "
    "quarantines them)"
)


@dataclass(frozen=True)
class ReadRange:
    """Part of one file: bytes [start, end) of whole lines (CSV, JSON), or row groups [start, end) (Parquet)."""

    index: int
    file: str
    file_index: int
    start: int
    end: int
    first_record: int = 0  # Parquet: records in the file before this range


@dataclass(frozen=True)
class RangeRead:
    """How every range is read: the same for all of them, except what a re-read adds."""

    file_format: str
    delimiter: str = ","
    names: dict[str, list[str]] = field(default_factory=dict)  # CSV header per file
    column_types: dict[str, pa.DataType] | None = None  # tried first; a range's own types if they fail
    conform_to: pa.Schema | None = None  # the version's schema: a re-read must produce exactly this
    rules: SchemaConfig | None = None
    part_folder: str | None = None  # write each range as a Parquet part here
    keep_table: bool = False
    seen: dict[str, set] | None = None  # unique values that earlier ranges already had
    bytes_read: Callable[[ReadRange, bytes | None], None] | None = None  # told when a range's bytes are in memory
    booleans: tuple[list[str], list[str]] | None = None  # CSV spellings of true and false, if not pyarrow's
    numbered_by_record: bool = False  # rows are numbered by record (a database's rows), not by line
    summarize: bool = True  # digest and statistics (a collect, which only keeps the rows, needs neither)
    keep_csv_text: bool = (
        False  # keep a CSV range's bytes when COPY reads them as the parser did (`RangeResult.csv_text`)
    )


@dataclass
class RangeResult:
    range: ReadRange
    schema: pa.Schema
    records: int  # records found: kept + quarantined
    rows: int  # rows kept
    hash_sum: int
    statistics: dict[str, dict[str, Any]]
    quarantine: pa.Table | None  # line (or record) numbers relative to the range
    malformed: int
    invalid: int
    quotes: int
    lines: int
    bytes: int
    part: dict[str, Any] | None
    unique_values: dict[str, Any]
    table: pa.Table | None
    # builtins.bytes: in this class `bytes` names the field above
    csv_text: builtins.bytes | None = None  # the range's bytes: one record per line, read exactly as COPY reads CSV


@dataclass
class FilesRead:
    """Every range read: the version's schema, counts, digest, statistics and quarantine."""

    schema: pa.Schema
    records: int
    rows: int
    malformed: int
    invalid: int
    content_digest: str
    statistics: dict[str, dict[str, Any]]
    quarantine: pa.Table | None
    parts: list[dict[str, Any]]
    files: list[dict[str, str]]
    bytes: int
    table: pa.Table | None = None


# --- planning -------------------------------------------------------------------------------


def range_bytes(total: int, workers: int) -> int:
    """Size of a range: enough ranges for every worker, none above 64 MiB (or RAYMLP_READ_RANGE_BYTES)."""
    configured = os.environ.get(RANGE_BYTES_ENV)
    if configured:
        return max(int(configured), 1)
    return int(min(_MAX_RANGE_BYTES, max(_MIN_RANGE_BYTES, total // max(1, workers * 4))))


def plan_ranges(files: list[str], file_format: str, size: int, data_starts: dict[str, int]) -> list[ReadRange]:
    """Ranges covering every byte (or row group) of every file once, in file order."""
    ranges: list[ReadRange] = []
    for file_index, path in enumerate(files):
        name = str(path)
        if file_format == "parquet":
            import pyarrow.parquet as pq

            with storage_files.open_input(path) as handle:
                metadata = pq.ParquetFile(handle).metadata
            group, first_record = 0, 0
            while group < metadata.num_row_groups:
                end, taken = group, 0
                while end < metadata.num_row_groups and (end == group or taken < size):
                    taken += metadata.row_group(end).total_byte_size
                    end += 1
                ranges.append(ReadRange(len(ranges), name, file_index, group, end, first_record))
                first_record += sum(metadata.row_group(g).num_rows for g in range(group, end))
                group = end
            if metadata.num_row_groups == 0:
                ranges.append(ReadRange(len(ranges), name, file_index, 0, 0))
            continue
        length = _size(path)
        start = data_starts.get(name, 0)
        with storage_files.open_input(path) as handle:
            while start < length:
                end = min(start + size, length)
                if end < length:  # move the cut to just after the next newline
                    handle.seek(end)
                    while True:
                        piece = handle.read(1 << 16)
                        if not piece:
                            end = length
                            break
                        newline = piece.find(b"\n")
                        if newline >= 0:
                            end += newline + 1
                            break
                        end += len(piece)
                ranges.append(ReadRange(len(ranges), name, file_index, start, end))
                start = end
        if start == data_starts.get(name, 0) and length <= start:  # header only, or empty
            ranges.append(ReadRange(len(ranges), name, file_index, start, start))
    return ranges


# --- one range ------------------------------------------------------------------------------


def _read_bytes(item: ReadRange, bytes_read: Callable[[ReadRange, bytes | None], None] | None = None) -> bytes:
    data = storage_files.read_range(item.file, item.start, item.end)
    if bytes_read is not None:
        bytes_read(item, data)
    return data


def read_range(item: ReadRange, how: RangeRead, data: bytes | None = None) -> RangeResult:
    """Parse one range (its bytes are `data` when they come from a stream, not a file), check it
    against the rules, digest it and write it as a Parquet part."""
    try:
        return _read_range(item, how, data)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, UnicodeDecodeError) as error:
        raise WorkFailed(f"{item.file}: cannot read as {how.file_format}: {error}") from None


def _read_range(item: ReadRange, how: RangeRead, data: bytes | None) -> RangeResult:
    from .validate import check_rows

    quotes = lines = size = 0
    csv_text = None
    if how.file_format == "parquet":
        import pyarrow.parquet as pq

        with storage_files.open_input(item.file) as handle:
            parquet = pq.ParquetFile(handle)
            table = (
                parquet.read_row_groups(list(range(item.start, item.end)))
                if item.end > item.start
                else parquet.schema_arrow.empty_table()
            )
            size = sum(parquet.metadata.row_group(g).total_byte_size for g in range(item.start, item.end))
        row_ids = np.arange(item.first_record + 1, item.first_record + table.num_rows + 1)
        malformed = None
        if how.bytes_read is not None:
            how.bytes_read(item, None)
    else:
        if data is None:
            data = _read_bytes(item, how.bytes_read)
        size = len(data)
        types = _types_for(how, item.file)
        if how.file_format == "csv":
            from .csvfile import Scan, parse_csv_range, scan_csv

            if how.numbered_by_record:  # a database's own CSV: no stray quotes, rows counted by record
                scan = Scan(lines=-1, quotes=-1, stray_quote=False)  # -1: not counted
            else:
                scan = scan_csv(data, how.delimiter)
            lines = scan.lines
            parsed = parse_csv_range(data, how.names[item.file], how.delimiter, item.file, types, how.booleans, scan)
            quotes = parsed.quotes
            if how.keep_csv_text and parsed.one_record_per_line and parsed.malformed is None and b"\r" not in data:
                csv_text = data  # COPY would refuse mixed line ends; pyarrow takes them
            if how.numbered_by_record:
                lines = parsed.table.num_rows
                parsed = replace(parsed, lines=np.arange(1, lines + 1))
        else:
            from .jsonlines import parse_json_range

            lines = physical_lines(data)
            parsed = parse_json_range(data, item.file, types, lines)
        table, row_ids, malformed = parsed.table, parsed.lines, parsed.malformed
        del data
    records = table.num_rows + (0 if malformed is None else malformed.num_rows)
    quarantine, invalid, unique_values = malformed, 0, {}
    if how.rules is not None and table.num_rows:
        rules = how.rules.model_copy(update={"on_error": "quarantine"})
        checked = check_rows(
            table, rules, row_ids=row_ids, row_sources=np.full(table.num_rows, item.file, dtype=object), seen=how.seen
        )
        table, invalid, unique_values = checked.good, checked.quarantined_rows, checked.unique_values
        if checked.quarantined is not None:
            quarantine = (
                checked.quarantined
                if quarantine is None
                else pa.concat_tables([quarantine, checked.quarantined], promote_options="permissive")
            )
    if how.conform_to is not None:
        table = _conform(table, how.conform_to, item.file)
    table = plain_types(table)
    part = None
    if how.part_folder is not None and table.num_rows:
        part = write_part(table, storage_files.join(how.part_folder, f"range-{item.index:06d}.parquet"))
    return RangeResult(
        range=item,
        schema=table.schema,
        records=records,
        rows=table.num_rows,
        hash_sum=row_hash_sum(canonical(table)) if how.summarize else 0,
        statistics=partial_statistics(table) if how.summarize else {},
        quarantine=quarantine,
        malformed=0 if malformed is None else malformed.num_rows,
        invalid=invalid,
        quotes=quotes,
        lines=lines,
        bytes=size,
        part=part,
        unique_values=unique_values,
        table=table if how.keep_table else None,
        csv_text=csv_text,
    )


def _types_for(how: RangeRead, file: str) -> dict[str, pa.DataType] | None:
    declared = set(how.rules.columns) if how.rules is not None else set()  # the rules cast those themselves
    if how.conform_to is not None:
        present = set(how.names.get(file, how.conform_to.names))
        return {
            f.name: f.type
            for f in how.conform_to
            if f.name in present and f.name not in declared and not pa.types.is_null(f.type)
        }
    if how.column_types is None:
        return None
    return {name: kind for name, kind in how.column_types.items() if name not in declared} or None


def _conform(table: pa.Table, schema: pa.Schema, file: str) -> pa.Table:
    """`table` with exactly the columns and types of `schema` (absent columns are null)."""
    columns = []
    for target in schema:
        if target.name in table.column_names:
            column = table.column(target.name)
            if column.type != target.type:
                try:
                    column = column.cast(target.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                    raise WorkFailed(
                        f"{file}: column '{target.name}' cannot be read as {target.type}: {error}"
                    ) from None
            columns.append(column)
        else:
            columns.append(pa.nulls(table.num_rows, target.type))
    return pa.Table.from_arrays(columns, schema=schema)


def write_part(table: pa.Table, path: str | Path, dictionary: bool = True) -> dict[str, Any]:
    """One Parquet part (snappy; dictionary pages for text columns only, where they pay off), at a
    local path or a URI. In a bucket the file is made in memory, hashed there and sent in one PUT."""
    import hashlib

    import pyarrow.parquet as pq

    text = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_binary(f.type)]
    use_dictionary = (text or False) if dictionary else False
    if not storage_files.is_remote(path):
        pq.write_table(table, path, compression="snappy", use_dictionary=use_dictionary)
        size = os.path.getsize(path)
        return {"path": storage_files.name_of(path), "rows": table.num_rows, "bytes": size, "sha256": file_sha256(path)}
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy", use_dictionary=use_dictionary)
    data = sink.getvalue()
    storage_files.write_bytes(path, data)
    return {
        "path": storage_files.name_of(path),
        "rows": table.num_rows,
        "bytes": data.size,
        "sha256": hashlib.sha256(memoryview(data)).hexdigest(),
    }


# --- all ranges -----------------------------------------------------------------------------


def unify_types(left: pa.DataType, right: pa.DataType) -> pa.DataType:
    """The type both columns' values fit: null gives way, int + float = float, else string."""
    if left == right or pa.types.is_null(right):
        return left
    if pa.types.is_null(left):
        return right
    numbers = (pa.types.is_integer, pa.types.is_floating)
    if any(check(left) for check in numbers) and any(check(right) for check in numbers):
        return pa.int64() if pa.types.is_integer(left) and pa.types.is_integer(right) else pa.float64()
    if pa.types.is_timestamp(left) and pa.types.is_timestamp(right) and left.tz == right.tz:
        finest = max((left, right), key=lambda kind: ["s", "ms", "us", "ns"].index(kind.unit))
        return finest
    if {pa.types.is_date(left), pa.types.is_timestamp(right)} == {True} or {
        pa.types.is_timestamp(left),
        pa.types.is_date(right),
    } == {True}:
        return left if pa.types.is_timestamp(left) else right
    return pa.string()


def unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """Every column of every schema (in order of first appearance), each in the type all its values fit."""
    types: dict[str, pa.DataType] = {}
    for schema in schemas:
        for column in schema:
            types[column.name] = (
                column.type if column.name not in types else unify_types(types[column.name], column.type)
            )
    return pa.schema([pa.field(name, kind) for name, kind in types.items()])


class _Runner:
    """A pool of threads reading ranges, with a progress callback per finished range."""

    def __init__(self, workers: int, progress: Callable[[int, int], None] | None):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="raymlp-range")
        self.progress = progress

    def run(self, items: list[tuple[ReadRange, RangeRead]], stop_at_quarantine: bool = False) -> dict[int, RangeResult]:
        futures: dict[Future, ReadRange] = {self.pool.submit(read_range, item, how): item for item, how in items}
        results: dict[int, RangeResult] = {}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    if future.cancelled():
                        continue
                    result = future.result()
                    results[result.range.index] = result
                    if self.progress is not None:
                        self.progress(result.records, result.bytes)
                    if stop_at_quarantine and result.quarantine is not None:
                        for other in pending:
                            other.cancel()
        except BaseException:
            for future in pending:
                future.cancel()
            wait(pending)
            raise
        return results

    def submit(self, item: ReadRange, how: RangeRead) -> Future:
        return self.pool.submit(read_range, item, how)

    def result(self, handle: Future) -> RangeResult:
        return handle.result()

    def cancel(self, handles: list[Future]) -> None:
        for handle in handles:
            handle.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _RayRunner:
    """The same work as Ray tasks (one CPU each), for a cluster of several nodes: the files and the
    storage root must be on storage every node sees (the loader says so for clusters). Each task
    is named for the dashboard: `<label>: read range 3/8` (`label` is `job/stage`)."""

    def __init__(self, progress: Callable[[int, int], None] | None, label: str | None = None, total: int = 0):
        import ray

        self.task = ray.remote(num_cpus=1)(read_range)
        self.progress = progress
        self.label = label or "raymlp"
        self.total = total

    def _start(self, item: ReadRange, how: RangeRead):
        again = " again" if how.conform_to is not None or how.seen is not None else ""
        name = f"{self.label}: read range {item.index + 1}/{self.total or '?'}{again}"
        return self.task.options(name=name).remote(item, replace(how, bytes_read=None))

    def run(self, items: list[tuple[ReadRange, RangeRead]], stop_at_quarantine: bool = False) -> dict[int, RangeResult]:
        import ray
        from ray.exceptions import RayTaskError

        pending = [self._start(item, how) for item, how in items]
        results: dict[int, RangeResult] = {}
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    result = ray.get(done[0])
                except RayTaskError as error:
                    raise (error.cause if isinstance(error.cause, Exception) else error) from None
                results[result.range.index] = result
                if self.progress is not None:
                    self.progress(result.records, result.bytes)
                if stop_at_quarantine and result.quarantine is not None:
                    for ref in pending:
                        ray.cancel(ref)
                    pending = []
        finally:
            for ref in pending:
                ray.cancel(ref)
        return results

    def submit(self, item: ReadRange, how: RangeRead):
        return self._start(item, how)

    def result(self, handle) -> RangeResult:
        import ray
        from ray.exceptions import RayTaskError

        try:
            return ray.get(handle)
        except RayTaskError as error:
            raise (error.cause if isinstance(error.cause, Exception) else error) from None

    def cancel(self, handles: list) -> None:
        import ray

        for handle in handles:
            ray.cancel(handle)

    def close(self) -> None:
        pass


def _runner(workers: int, progress: Callable[[int, int], None] | None, label: str | None = None, total: int = 0):
    """Threads on this machine; Ray tasks when this process is connected to a cluster of several
    nodes, or when RAYMLP_READ_ON_RAY=1 (then Ray must be connected). `label` (`job/stage`) and
    `total` (ranges planned) name the Ray tasks."""
    import sys

    forced = os.environ.get(READ_ON_RAY_ENV, "").lower() in ("1", "true", "yes")
    ray = sys.modules.get("ray")
    connected = ray is not None and ray.is_initialized()
    if forced and not connected:
        raise UsageError(f"{READ_ON_RAY_ENV}=1 but this process is not connected to Ray")
    if forced or (connected and ray is not None and sum(1 for node in ray.nodes() if node.get("Alive")) > 1):
        return _RayRunner(progress, label, total)
    return _Runner(workers, progress)


class _SourceHashes:
    """sha256 of every source file before and after it is read, on a thread beside the readers.

    The first hash is made of the very bytes the readers read, taken in file order as they arrive
    (no second read of the file; a Parquet file, or ranges read by Ray tasks elsewhere, are read
    here instead). The second hash starts as soon as the last range has its bytes (the others are
    still being parsed) and is taken again at the end when some range had to be read a second time.
    """

    def __init__(self, files: list[str], reads: int, data_starts: dict[str, int] | None):
        import queue

        self.files = files
        self.stats = {str(path): _stat(path) for path in files}
        self.before: dict[str, str] = {}
        self.after: dict[str, str] = {}
        self._fed = data_starts  # None: nothing is fed, read the files here
        self._arrivals: queue.SimpleQueue = queue.SimpleQueue()
        self._reads_expected = reads
        self._reads = 0
        self._lock = threading.Lock()
        self._all_read = threading.Event()
        self._thread = threading.Thread(target=self._hash, name="raymlp-source-sha256", daemon=True)
        self._thread.start()

    def bytes_read(self, item: ReadRange, data: bytes | None) -> None:
        """Called by a reader once it holds its range's bytes (None for a Parquet range)."""
        if data is not None and self._fed is not None:
            self._arrivals.put((item, data))
        with self._lock:
            self._reads += 1
            if self._reads >= self._reads_expected:
                self._all_read.set()

    def _hash(self) -> None:
        import hashlib

        fed = self._fed or {}
        waiting: dict[str, dict[int, tuple[int, bytes]]]  # per file: start -> (end, bytes) arrived early
        digests, offsets, waiting = {}, {}, {}
        for path in self.files:
            name = str(path)
            if name not in fed:
                self.before[name] = storage_files.sha256_of(path)
                continue
            digests[name] = hashlib.sha256()
            if fed[name]:  # the header line, which no range holds
                digests[name].update(storage_files.read_range(path, 0, fed[name]))
            offsets[name], waiting[name] = fed[name], {}
        unfinished = {name for name in digests if offsets[name] < self.stats[name][0]}
        while unfinished:
            item, data = self._arrivals.get()
            if item is None:  # stopped early: read what did not arrive
                break
            if item.file not in unfinished or item.start < offsets[item.file]:
                continue  # bytes read a second time (a merged or re-read range)
            waiting[item.file][item.start] = (item.end, data)
            while offsets[item.file] in waiting[item.file]:
                end, piece = waiting[item.file].pop(offsets[item.file])
                digests[item.file].update(piece)
                offsets[item.file] = end
            if offsets[item.file] >= self.stats[item.file][0]:
                unfinished.discard(item.file)
        for name in unfinished:
            with storage_files.open_input(name) as handle:
                handle.seek(offsets[name])
                while piece := handle.read(4 << 20):
                    digests[name].update(piece)
        for name, digest in digests.items():
            self.before[name] = digest.hexdigest()
        self._all_read.wait()
        self.after = {str(path): storage_files.sha256_of(path) for path in self.files}

    def stop(self) -> None:
        """Let the thread finish (an error, or every range read): it reads what never arrived."""
        self._arrivals.put((None, None))
        self._all_read.set()

    def check_unchanged(self) -> dict[str, str]:
        self.stop()
        self._thread.join()
        if self._reads > self._reads_expected:  # read again after the second hash began
            self.after = {str(path): storage_files.sha256_of(path) for path in self.files}
        changed = [
            name for name in self.after if self.after[name] != self.before.get(name) or _stat(name) != self.stats[name]
        ]
        if changed:
            raise WorkFailed(f"source files changed while they were read: {', '.join(changed)}")
        return self.before


def _stat(path: str) -> tuple[int, int]:
    state = storage_files.state(path)
    if state is None:
        raise WorkFailed(f"{path}: the source file is gone")
    return state.size, state.mtime_ns


def _size(path: str) -> int:
    return _stat(path)[0]


def source_names(files: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Source files as ranges name them: absolute local paths (workers elsewhere have another cwd)
    or URIs of objects in a bucket."""
    return [storage_files.normalized(path) for path in files]


def recorded_name(name: str) -> str:
    """A source file as a manifest records it: the resolved local path, or its URI."""
    return name if storage_files.is_remote(name) else str(Path(name).resolve())


def read_files(
    files: list[str] | list[Path],
    source: SourceConfig,
    rules: SchemaConfig | None = None,
    part_folder: str | Path | None = None,
    keep_table: bool = False,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    summarize: bool = True,
    label: str | None = None,
) -> FilesRead:
    """Read `files` range by range in parallel (see the module's description).

    `summarize=False` skips the content digest and statistics (a collect keeps only the rows).
    `label` (`job/stage`) names the Ray tasks where ranges are read on a cluster.

    With `part_folder`, each range becomes a Parquet part there (the parts are listed in order);
    with `keep_table`, the rows are also returned as one table (for collect and small sources).
    `rules` are applied with quarantine; a caller whose rules say `fail` raises on the quarantine.
    """
    from raymlp import settings

    from .csvfile import read_header

    workers = workers or settings.local_cpus()
    names_read = source_names(files)
    file_format = source.format
    names: dict[str, list[str]] = {}
    starts: dict[str, int] = {}
    if file_format == "csv":
        for path in names_read:
            names[path], starts[path] = read_header(path, source.delimiter)
    total = sum(_size(path) for path in names_read)
    plan = plan_ranges(names_read, file_format, range_bytes(total, workers), starts)
    runner = _runner(workers, progress, label, len(plan))
    fed = None  # where each file's ranges start: their bytes make the first hash (threads only)
    if isinstance(runner, _Runner) and file_format != "parquet":
        fed = {path: starts.get(path, 0) for path in names_read}
    hashes = _SourceHashes(names_read, len(plan), fed)
    how = RangeRead(
        file_format=file_format,
        delimiter=source.delimiter,
        names=names,
        rules=rules,
        bytes_read=hashes.bytes_read,
        summarize=summarize,
        part_folder=None if part_folder is None else str(part_folder),
        keep_table=keep_table,
        column_types=_sampled_types(plan, names, source.delimiter) if file_format == "csv" else None,
    )
    try:
        stop_early = rules is not None and rules.on_error == "fail"
        results = runner.run([(item, how) for item in plan], stop_at_quarantine=stop_early)
        if stop_early and any(result.quarantine is not None for result in results.values()):
            _raise_first_reasons(results, plan, file_format)
        if file_format == "csv":
            results = _merge_cuts_inside_quotes(results, how, runner)
        schema = unified_schema([r.schema for r in _ordered(results)])
        redo = [r.range for r in results.values() if r.rows and not r.schema.equals(schema)]
        if redo:
            results.update(runner.run([(item, replace(how, conform_to=schema)) for item in redo]))
        if rules is not None and any(spec.unique for spec in rules.columns.values()):
            results.update(_recheck_unique_across_ranges(results, replace(how, conform_to=schema), runner))
        if rules is not None:
            schema = unified_schema([r.schema for r in _ordered(results) if r.rows] or [schema])
    finally:
        runner.close()
        hashes.stop()
    ordered = _ordered(results)
    file_hashes = hashes.check_unchanged()
    return _assemble(ordered, schema, file_hashes, part_folder, keep_table, file_format)


class RangeTables:
    """The rows of `files` as one `LoadPiece` per range, in file order, each handed over as soon as
    it is final: for a collect, which loads each into the database while later ranges are parsed.
    A piece keeps its CSV text where PostgreSQL's COPY reads it exactly as the parser did.

    At most a few ranges are in memory (`workers` + 2). A cut inside a quoted field is merged and
    read again as in `read_files`; each table has the union of the types handed over so far, a
    range whose own types differ being read again with that union. The union can still widen
    after earlier tables were handed over (a column all null so far, int -> float, or a string
    where a number was): the consumer widens what it stored, or starts over reading whole.
    Malformed records fail at the first range that has them, unless `keep_rejects`: then each
    piece carries its range's malformed records (`LoadPiece.rejects`: file, absolute line, reason,
    text, raw bytes). `records` counts every record read (loaded + rejected), `rejected` the latter.
    After the last table, `files` holds each source file's path and sha256 (unchanged since).
    """

    def __init__(
        self,
        files: list[str] | list[Path],
        source: SourceConfig,
        progress: Callable[[int, int], None] | None = None,
        workers: int | None = None,
        label: str | None = None,
        keep_rejects: bool = False,
    ):
        from raymlp import settings

        from .csvfile import read_header

        self.workers = workers or settings.local_cpus()
        self.paths = source_names(files)
        self.file_format = source.format
        self.progress = progress
        self.label = label  # `job/stage`: names the Ray tasks of ranges read on a cluster
        self.files: list[dict[str, str]] = []
        self.bytes = 0
        self.records = 0
        self.rejected = 0
        self.keep_rejects = keep_rejects
        self._lines_before: dict[int, int] = {}  # per file: lines before the next range (absolute line numbers)
        names: dict[str, list[str]] = {}
        self.starts: dict[str, int] = {}
        if self.file_format == "csv":
            for path in self.paths:
                names[path], self.starts[path] = read_header(path, source.delimiter)
        total = sum(_size(path) for path in self.paths)
        self.plan = plan_ranges(self.paths, self.file_format, range_bytes(total, self.workers), self.starts)
        self.how = RangeRead(
            file_format=self.file_format,
            delimiter=source.delimiter,
            names=names,
            keep_table=True,
            summarize=False,
            keep_csv_text=True,
            column_types=_sampled_types(self.plan, names, source.delimiter) if self.file_format == "csv" else None,
        )
        self.schema = pa.schema(
            [
                pa.field(name, pa.null())
                for name in dict.fromkeys(name for path in self.paths for name in names.get(path, []))
            ]
        )

    def __iter__(self):
        from .sql import LoadPiece

        runner = _runner(self.workers, None, self.label, len(self.plan))
        fed = None
        if isinstance(runner, _Runner) and self.file_format != "parquet":
            fed = {path: self.starts.get(path, 0) for path in self.paths}
        hashes = _SourceHashes(self.paths, len(self.plan), fed)
        how = replace(self.how, bytes_read=hashes.bytes_read)
        queued: list[tuple[ReadRange, Any]] = []
        upcoming = iter(self.plan)
        try:
            handed_over = False
            for result in self._final_results(runner, how, queued, upcoming):
                rejects = self._malformed(result)
                piece = self._with_union_types(result, runner, how)
                piece.rejects = rejects
                yield piece
                handed_over = True
            if not handed_over:
                yield LoadPiece(self.schema.empty_table())
        finally:
            runner.cancel([handle for _, handle in queued])
            runner.close()
            hashes.stop()
        self.files = [{"path": recorded_name(name), "sha256": sha} for name, sha in hashes.check_unchanged().items()]

    def _final_results(self, runner, how: RangeRead, queued: list, upcoming):
        """Results in file order, each final for quoting: ranges whose cut fell inside a quoted
        field are merged with the next ones and read again as one."""

        def top_up() -> None:
            while len(queued) < self.workers + 2:
                item = next(upcoming, None)
                if item is None:
                    return
                queued.append((item, runner.submit(item, how)))

        group: list[RangeResult] = []
        quotes_before: dict[int, int] = {}
        top_up()
        while queued:
            item, handle = queued.pop(0)
            top_up()
            result = runner.result(handle)
            file_index = item.file_index
            if group and not (quotes_before.get(file_index, 0) % 2 == 1 and group[-1].range.file_index == file_index):
                yield self._merged(group, runner, how)
                group = []
            group.append(result)
            quotes_before[file_index] = quotes_before.get(file_index, 0) + result.quotes
            if quotes_before[file_index] % 2 == 0:
                yield self._merged(group, runner, how)
                group = []
        if group:
            yield self._merged(group, runner, how)

    def _merged(self, group: list[RangeResult], runner, how: RangeRead) -> RangeResult:
        if len(group) == 1:
            return group[0]
        return runner.result(runner.submit(replace(group[0].range, end=group[-1].range.end), how))

    def _malformed(self, result: RangeResult) -> pa.Table | None:
        """The range's malformed records with absolute line numbers (kept, or a failure)."""
        before = self._lines_before
        offset = (
            0
            if self.file_format == "parquet"
            else before.get(result.range.file_index, 1 if self.file_format == "csv" else 0)
        )
        before[result.range.file_index] = offset + result.lines
        if not result.malformed:
            return None
        malformed = _absolute(result.quarantine, offset)
        if self.keep_rejects:
            self.rejected += malformed.num_rows
            return malformed
        shown = [
            f"{row[SOURCE_COLUMN] or result.range.file}:{row[ROW_COLUMN]}: {row[REASON_COLUMN]}"
            for row in malformed.slice(0, _FIRST_REASONS).to_pylist()
        ]
        raise WorkFailed(
            f"{result.malformed}+ malformed records in the source; {MALFORMED_IN_A_TABLE}. "
            "First ones:\n  " + "\n  ".join(shown)
        )

    def _with_union_types(self, result: RangeResult, runner, how: RangeRead):
        """The range's rows in the union of every type handed over so far and its own; read again
        with that union where a cast would not give the same values (text read as a number)."""
        self.schema = unified_schema([self.schema, result.schema])
        exact = all(
            own.type == self.schema.field(own.name).type
            or pa.types.is_null(own.type)
            or (pa.types.is_integer(own.type) and pa.types.is_floating(self.schema.field(own.name).type))
            for own in result.schema
        )
        if not exact:
            result = runner.result(runner.submit(result.range, replace(how, conform_to=self.schema)))
        self.records += result.records
        self.bytes += result.bytes
        if self.progress is not None:
            self.progress(result.records, result.bytes)
        from .sql import LoadPiece

        return LoadPiece(
            _conform(result.table, self.schema, result.range.file),
            result.csv_text,
            self.how.names.get(result.range.file, []),
            self.how.delimiter,
        )


def read_stream(
    chunks: Iterable[bytes],
    names: list[str],
    column_types: dict[str, pa.DataType],
    source_name: str,
    *,
    booleans: tuple[list[str], list[str]] | None = None,
    rules: SchemaConfig | None = None,
    part_folder: str | Path | None = None,
    keep_table: bool = False,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> FilesRead:
    """Read CSV `chunks` (whole records, no header; a database's `COPY ... TO STDOUT`) as they
    arrive: the thread that pulls the chunks (the database's socket) keeps receiving while the
    others parse, check, digest and write. At most one chunk per worker waits in memory.

    Rows are numbered by record across chunks. `unique` rules need every value at once: the
    caller reads such sources whole instead.
    """
    from raymlp import settings

    if rules is not None and any(spec.unique for spec in rules.columns.values()):
        raise ValueError("read_stream cannot check unique rules across chunks")
    workers = workers or settings.local_cpus()
    how = RangeRead(
        file_format="csv",
        names={source_name: names},
        column_types=column_types,
        rules=rules,
        part_folder=None if part_folder is None else str(part_folder),
        keep_table=keep_table,
        booleans=booleans,
        numbered_by_record=True,
    )
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="raymlp-chunk")
    pending: set[Future] = set()
    results: dict[int, RangeResult] = {}

    def collect(done: set[Future]) -> None:
        for future in done:
            result = future.result()
            results[result.range.index] = result
            if progress is not None:
                progress(result.records, result.bytes)

    try:
        for index, data in enumerate(chunks):
            if not data:
                continue
            while len(pending) > workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
            pending.add(pool.submit(read_range, ReadRange(index, source_name, 0, 0, len(data)), how, data))
        done, pending = wait(pending)
        collect(done)
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
    ordered = _ordered(results)
    schema = pa.schema([pa.field(name, column_types[name]) for name in names])
    if ordered:
        schema = unified_schema([schema] + [result.schema for result in ordered if result.rows])
    return _assemble(ordered, schema, {}, part_folder, keep_table, "stream")


def _ordered(results: dict[int, RangeResult]) -> list[RangeResult]:
    return [results[index] for index in sorted(results)]


def _sampled_types(plan: list[ReadRange], names: dict[str, list[str]], delimiter: str) -> dict[str, pa.DataType] | None:
    """Types inferred from the first MiB of the first file, tried first on every range (cheaper than
    inferring each); columns that are all null there are left to each range."""
    from .csvfile import parse_csv_range

    first = next((item for item in plan if item.end > item.start), None)
    if first is None:
        return None
    sample = replace(first, end=min(first.end, first.start + (1 << 20)))
    data = _read_bytes(sample)
    cut = data.rfind(b"\n") + 1 if sample.end < first.end else len(data)
    try:
        table = parse_csv_range(data[:cut], names[first.file], delimiter, first.file).table
    except (WorkFailed, pa.ArrowInvalid):
        return None
    return {f.name: f.type for f in table.schema if not pa.types.is_null(f.type)} or None


def _line_offsets(ordered: list[RangeResult], file_format: str) -> dict[int, int]:
    """Per range: what to add to its relative line numbers (the header is line 1 of a CSV file)."""
    offsets: dict[int, int] = {}
    lines_before: dict[int, int] = {}
    for result in ordered:
        item = result.range
        if file_format == "parquet":
            offsets[item.index] = 0  # record numbers are absolute already
            continue
        before = lines_before.get(item.file_index, 1 if file_format == "csv" else 0)
        offsets[item.index] = before
        lines_before[item.file_index] = before + result.lines
    return offsets


def _absolute(quarantine: pa.Table, offset: int) -> pa.Table:
    if not offset:
        return quarantine
    import pyarrow.compute as pc

    position = quarantine.schema.get_field_index(ROW_COLUMN)
    return quarantine.set_column(position, ROW_COLUMN, pc.add(quarantine.column(ROW_COLUMN), offset))


def _raise_first_reasons(results: dict[int, RangeResult], plan: list[ReadRange], file_format: str) -> None:
    """The first reasons, by file and line, from the ranges read before the first bad one."""
    prefix: list[RangeResult] = []
    for item in plan:  # ranges are started in order, so every one before a bad range has been read
        if item.index not in results:
            break
        prefix.append(results[item.index])
    offsets = _line_offsets(prefix, file_format)
    shown: list[str] = []
    bad = 0
    for result in prefix:
        if result.quarantine is None:
            continue
        bad += result.quarantine.num_rows
        for row in _absolute(result.quarantine, offsets[result.range.index]).slice(0, _FIRST_REASONS).to_pylist():
            if len(shown) < _FIRST_REASONS:
                shown.append(f"{row.get(SOURCE_COLUMN) or result.range.file}:{row[ROW_COLUMN]}: {row[REASON_COLUMN]}")
    raise WorkFailed(
        f"{bad}{'+' if len(prefix) < len(plan) else ''} rows are malformed or break data.schema "
        "(on_error: fail); first reasons:\n  " + "\n  ".join(shown)
    )


def _merge_cuts_inside_quotes(
    results: dict[int, RangeResult], how: RangeRead, runner: _Runner | _RayRunner
) -> dict[int, RangeResult]:
    """Read again, as one range, neighbours whose cut fell inside a quoted field (an odd number of
    quote characters before the cut)."""
    groups: list[list[RangeResult]] = []
    quotes_before: dict[int, int] = {}
    for result in _ordered(results):
        file_index = result.range.file_index
        inside_quotes = quotes_before.get(file_index, 0) % 2 == 1
        if inside_quotes and groups and groups[-1][-1].range.file_index == file_index:
            groups[-1].append(result)
        else:
            groups.append([result])
        quotes_before[file_index] = quotes_before.get(file_index, 0) + result.quotes
    again = []
    for group in groups:
        if len(group) > 1:
            again.append(replace(group[0].range, end=group[-1].range.end))
            for result in group:
                _drop_part(results.pop(result.range.index), how)
    if again:
        results.update(runner.run([(item, how) for item in again]))
    return results


def _drop_part(result: RangeResult, how: RangeRead) -> None:
    if result.part is not None and how.part_folder is not None:
        storage_files.delete_file(storage_files.join(how.part_folder, result.part["path"]))


def _recheck_unique_across_ranges(
    results: dict[int, RangeResult], how: RangeRead, runner: _Runner | _RayRunner
) -> dict[int, RangeResult]:
    """Check again, knowing the values earlier ranges had, the ranges that repeat them."""
    import pandas as pd

    repeats: dict[int, dict[str, set]] = {}
    for column in {name for result in results.values() for name in result.unique_values}:
        pieces = [
            (result.range.index, result.unique_values[column])
            for result in _ordered(results)
            if column in result.unique_values
        ]
        frame = pd.DataFrame(
            {
                "value": pd.concat([values for _, values in pieces], ignore_index=True),
                "range": np.concatenate([np.full(len(values), index) for index, values in pieces]),
            }
        )
        for index, values in frame[frame["value"].duplicated(keep="first")].groupby("range")["value"]:
            repeats.setdefault(int(index), {})[column] = set(values.tolist())
    if not repeats:
        return {}
    return runner.run([(results[index].range, replace(how, seen=seen)) for index, seen in repeats.items()])


def _assemble(
    ordered: list[RangeResult],
    schema: pa.Schema,
    file_hashes: dict[str, str],
    part_folder: str | Path | None,
    keep_table: bool,
    file_format: str,
) -> FilesRead:
    digest = ContentDigest(schema)
    merged: dict[str, dict[str, Any]] = {}
    quarantines = []
    offsets = _line_offsets(ordered, file_format)
    parts: list[dict[str, Any]] = []
    for result in ordered:
        digest.add_sum(result.rows, result.hash_sum)
        merge_statistics(merged, result.statistics)
        if result.quarantine is not None:
            quarantines.append(_absolute(result.quarantine, offsets[result.range.index]))
        if result.part is not None and part_folder is not None:
            if storage_files.is_remote(part_folder):  # no rename in a bucket: the part keeps its range's name
                parts.append(result.part)
                continue
            name = f"part-{len(parts):05d}.parquet"
            os.rename(Path(part_folder) / result.part["path"], Path(part_folder) / name)
            parts.append({**result.part, "path": name})
    quarantine = None
    if quarantines:
        quarantine = pa.concat_tables(quarantines, promote_options="permissive")
        text_first = [
            c
            for c in (SOURCE_COLUMN, ROW_COLUMN, REASON_COLUMN, TEXT_COLUMN, RAW_COLUMN)
            if c in quarantine.column_names
        ]
        quarantine = quarantine.select(text_first + [c for c in quarantine.column_names if c not in text_first])
    table = None
    if keep_table:
        tables = [_conform(result.table, schema, result.range.file) for result in ordered if result.table is not None]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
    return FilesRead(
        schema=schema,
        records=sum(r.records for r in ordered),
        rows=sum(r.rows for r in ordered),
        malformed=sum(r.malformed for r in ordered),
        invalid=sum(r.invalid for r in ordered),
        content_digest=digest.hexdigest(),
        statistics=finish_statistics(merged, schema),
        quarantine=quarantine,
        parts=parts,
        files=[{"path": recorded_name(name), "sha256": sha} for name, sha in file_hashes.items()],
        bytes=sum(r.bytes for r in ordered),
        table=table,
    )
