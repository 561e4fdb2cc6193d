"""Read a configured source (files, SQL, scikit-learn) into an Arrow table."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from raymlp.config.schema import SourceConfig
from raymlp.errors import UsageError, WorkFailed
from raymlp.storage import files as storage_files

_SUFFIXES = {"csv": (".csv", ".csv.gz", ".tsv"), "parquet": (".parquet", ".pq"), "json": (".json", ".jsonl", ".ndjson")}


@dataclass
class SourceData:
    """Rows read from a source, and what they came from."""

    table: pa.Table
    description: dict[str, Any]
    files: list[str] = field(default_factory=list)  # local paths (absolute) or URIs
    bytes: int | None = None
    malformed: pa.Table | None = None  # records that could not be parsed, with file, line and reason
    row_ids: Any = None  # images: per row, its record number in its file (1)
    row_sources: Any = None  # images: per row, the file it came from

    @property
    def malformed_rows(self) -> int:
        return 0 if self.malformed is None else self.malformed.num_rows


def expand_paths(pattern: str | list[str], file_format: str) -> list[str]:
    """Files named by paths, globs or folders (local, or in a bucket: s3://BUCKET/PREFIX/*.csv), sorted;
    a clear error when none match. Local files are named as the pattern named them, objects by URI."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    if file_format == "images":
        from .images import expand_image_paths

        return expand_image_paths(patterns)
    found: list[str] = []
    for item in patterns:
        if storage_files.is_remote(item):
            found += _expand_remote(item, file_format)
            continue
        expanded = os.path.expanduser(item)
        if os.path.isdir(expanded):
            matches = [
                str(path)
                for path in sorted(Path(expanded).rglob("*"))
                if path.is_file() and path.name.lower().endswith(_SUFFIXES.get(file_format, ("",)))
            ]
        else:
            matches = sorted(glob.glob(expanded, recursive=True))
        if not matches:
            from raymlp.runtime.upload import left_behind

            raise UsageError(
                f"data.source.path: '{item}' matches no {file_format} files (working directory: "
                f"{os.getcwd()}){left_behind(item)}"
            )
        found += [match for match in matches if os.path.isfile(match)]
    return list(dict.fromkeys(found))


def source_bytes(files: list[str]) -> int:
    """The size of the source files, together."""
    states = [storage_files.state(path) for path in files]
    return sum(state.size for state in states if state is not None)


def _expand_remote(item: str, file_format: str) -> list[str]:
    """Objects named by a URI: one object, a prefix (every object under it with the format's
    suffix) or a glob."""
    name = storage_files.normalized(item, key="data.source.path")
    with storage_files.translated_errors(name, "list"):
        if any(mark in name.split("://", 1)[1] for mark in "*?["):
            matches = storage_files.glob(name)
        elif storage_files.state(name) is not None:
            matches = [name]
        else:
            suffixes = _SUFFIXES.get(file_format, ("",))
            matches = [found for found in storage_files.list_files(name) if found.lower().endswith(suffixes)]
    if not matches:
        raise UsageError(f"data.source.path: '{item}' matches no {file_format} objects")
    return matches


def read_source(source: SourceConfig, progress=None) -> SourceData:
    """Read every row of a source (`progress(rows, bytes)` hears about each range of files read)."""
    if source.format == "sklearn":
        return read_sklearn(source.sklearn.name)  # type: ignore[union-attr]
    if source.format == "sql":
        from .sql import read_sql

        sql = source.sql
        table = read_sql(sql.url, query=sql.query, table=sql.table, shard_key=sql.shard_key, shards=sql.shards)  # type: ignore[union-attr]
        from raymlp.catalog import redact_url

        what = {"kind": "sql", "url": redact_url(sql.url), "query": sql.query, "table": sql.table}  # type: ignore[union-attr]
        if sql.shard_key is not None:  # type: ignore[union-attr]
            what.update({"shard_key": sql.shard_key, "shards": sql.shards})  # type: ignore[union-attr]
        return SourceData(table=table, description=what)
    from .ranges import read_files

    files = expand_paths(source.path, source.format)  # type: ignore[arg-type]
    if source.format == "images":
        return _read_images(source, files)
    read = read_files(files, source, keep_table=True, progress=progress, summarize=False)
    return SourceData(
        table=read.table,
        description=files_description(source, read.files),
        files=files,
        bytes=read.bytes,
        malformed=read.quarantine,
    )


def _read_images(source: SourceConfig, files: list[str]) -> SourceData:
    """Image files whole (each is one row), hashed before and after they are read."""
    from .images import read_image_files
    from .integrity import files_sha256

    before = files_sha256(files)
    table, lines, origins, bad = read_image_files(files)
    changed = [name for name, sha in files_sha256(files).items() if sha != before[name]]
    if changed:
        raise WorkFailed(f"source files changed while they were read: {', '.join(changed)}")
    from .ranges import recorded_name

    listed = [{"path": recorded_name(path), "sha256": before[path]} for path in files]
    return SourceData(
        table=table,
        description=files_description(source, listed),
        files=files,
        bytes=source_bytes(files),
        malformed=bad,
        row_ids=lines,
        row_sources=origins,
    )


def files_description(source: SourceConfig, files: list[dict[str, str]]) -> dict[str, Any]:
    """What a version records of the files it came from (each by absolute path and sha256)."""
    description: dict[str, Any] = {"kind": "files", "format": source.format, "files": files}
    if source.format == "csv":
        description["delimiter"] = source.delimiter
    return description


def read_sklearn(name: str) -> SourceData:
    """A shipped scikit-learn dataset, labels as class names where it has them."""
    import sklearn.datasets

    loader = getattr(sklearn.datasets, f"load_{name}")
    bunch = loader(as_frame=True)
    frame = bunch.frame.copy()
    target_names = getattr(bunch, "target_names", None)
    if target_names is not None and len(target_names) and "target" in frame:
        frame["target"] = [str(target_names[index]) for index in frame["target"].astype(int)]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return SourceData(table=table, description={"kind": "sklearn", "name": name})


def sklearn_frame(name: str):
    """A shipped scikit-learn dataset as a DataFrame, with class names as labels."""
    return read_sklearn(name).table.to_pandas()
