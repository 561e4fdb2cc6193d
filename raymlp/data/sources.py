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

from .integrity import files_sha256

_SUFFIXES = {"csv": (".csv", ".csv.gz", ".tsv"), "parquet": (".parquet", ".pq"), "json": (".json", ".jsonl", ".ndjson")}


@dataclass
class SourceData:
    """Rows read from a source, and what they came from."""

    table: pa.Table
    description: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    file_hashes: dict[str, str] = field(default_factory=dict)
    row_ids: Any = None  # per row: its line (CSV, JSON lines) or record number in its file
    row_sources: Any = None  # per row: the file it came from
    malformed: pa.Table | None = None  # records that could not be parsed, with line and reason

    @property
    def malformed_rows(self) -> int:
        return 0 if self.malformed is None else self.malformed.num_rows


def expand_paths(pattern: str | list[str], file_format: str) -> list[Path]:
    """Files named by paths, globs or folders, sorted; a clear error when none match."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    if file_format == "images":
        from .images import expand_image_paths

        return expand_image_paths(patterns)
    found: list[Path] = []
    for item in patterns:
        expanded = os.path.expanduser(item)
        if os.path.isdir(expanded):
            matches = [
                str(path) for path in sorted(Path(expanded).rglob("*"))
                if path.is_file() and path.name.lower().endswith(_SUFFIXES.get(file_format, ("",)))
            ]
        else:
            matches = sorted(glob.glob(expanded, recursive=True))
        if not matches:
            raise UsageError(f"data.source.path: '{item}' matches no {file_format} files (working directory: {os.getcwd()})")
        found += [Path(match) for match in matches if os.path.isfile(match)]
    return list(dict.fromkeys(found))


def read_source(source: SourceConfig) -> SourceData:
    """Read every row of a source."""
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
    files = expand_paths(source.path, source.format)  # type: ignore[arg-type]
    before = files_sha256(files)
    rows = read_files(files, source)
    after = files_sha256(files)
    changed = [name for name in before if before[name] != after[name]]
    if changed:
        raise WorkFailed(f"source files changed while they were read: {', '.join(changed)}")
    description = {"kind": "files", "format": source.format,
                   "files": [{"path": str(p.resolve()), "sha256": before[str(p)]} for p in files]}
    return SourceData(table=rows.table, description=description, files=files, file_hashes=before,
                      row_ids=rows.row_ids, row_sources=rows.row_sources, malformed=rows.malformed)


@dataclass
class FileRows:
    """Rows read from files, where each came from, and the records that could not be parsed."""

    table: pa.Table
    row_ids: Any
    row_sources: Any
    malformed: pa.Table | None


def read_files(files: list[Path], source: SourceConfig) -> FileRows:
    """Every row of the given files, with where each came from and the malformed records."""
    import numpy as np

    if source.format == "images":
        from .images import read_image_files

        table, lines, sources, bad = read_image_files(files)
        return FileRows(table=table, row_ids=lines, row_sources=sources, malformed=bad)
    tables, ids, origins, malformed = [], [], [], []
    for path in files:
        try:
            if source.format == "csv":
                from .csvfile import read_csv_file

                parsed = read_csv_file(path, source.delimiter)
                table, lines = parsed.table, parsed.lines
                if parsed.malformed is not None:
                    malformed.append(parsed.malformed)
            elif source.format == "parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(path)
                lines = np.arange(1, table.num_rows + 1)
            else:
                from pyarrow import json

                table = json.read_json(path)
                lines = np.arange(1, table.num_rows + 1)
        except (pa.ArrowInvalid, OSError) as error:
            raise WorkFailed(f"{path}: cannot read as {source.format}: {error}") from None
        tables.append(table)
        ids.append(lines)
        origins.append(np.full(table.num_rows, str(path), dtype=object))
    if not tables:
        raise UsageError("data.source.path: no files to read")
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowInvalid as error:
        raise WorkFailed(f"source files have incompatible columns: {error}") from None
    return FileRows(
        table=table, row_ids=np.concatenate(ids), row_sources=np.concatenate(origins),
        malformed=pa.concat_tables(malformed, promote_options="permissive") if malformed else None,
    )


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
