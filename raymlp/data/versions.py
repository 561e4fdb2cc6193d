"""Dataset versions: immutable Parquet files plus a manifest, published in one step."""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raymlp.errors import UsageError, WorkFailed

from .integrity import content_digest, file_sha256

MANIFEST_NAME = "manifest.json"
QUARANTINE_NAME = "quarantine.parquet"
MANIFEST_FORMAT = "raymlp.dataset/1"
ROWS_PER_FILE = 1_000_000


@dataclass(frozen=True)
class PublishedVersion:
    """A dataset version that is visible in the catalog."""

    name: str
    version: int
    path: Path
    manifest: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def _local_root(root: str) -> Path:
    if "://" in root and not root.startswith("file://"):
        raise UsageError(
            f"storage.root: '{root}' is remote; this version of raymlp writes datasets to local or mounted folders only"
        )
    return Path(root.removeprefix("file://"))


def schema_description(schema: pa.Schema) -> list[dict[str, Any]]:
    """Arrow schema as JSON-friendly column descriptions."""
    return [{"name": field.name, "type": str(field.type), "nullable": field.nullable} for field in schema]


def publish_version(
    catalog,
    root: str,
    name: str,
    table: pa.Table,
    source: dict[str, Any],
    quarantined: pa.Table | None = None,
    validation: dict[str, Any] | None = None,
) -> PublishedVersion:
    """Write `table` as the next version of dataset `name`, visible only once complete."""
    import re

    from raymlp.catalog import DatasetVersionExists
    from raymlp.config.schema import NAME_PATTERN

    if not re.match(NAME_PATTERN, name):
        raise UsageError(f"'{name}' is not a usable dataset name (letters, digits, '_', '.', '-'; no '/')")
    datasets = _local_root(root) / "datasets" / name
    datasets.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(datasets)
    staging = datasets / f".staging-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    # The digest (pandas/numpy) and the Parquet writing (Arrow C++) both release the GIL: overlap them.
    digesting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raymlp-digest")
    digest = digesting.submit(content_digest, table)
    try:
        files = []
        for index, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_FILE)):
            part = table.slice(start, ROWS_PER_FILE)
            file_name = f"part-{index:05d}.parquet"
            pq.write_table(part, staging / file_name, compression="zstd")
            files.append({"path": file_name, "rows": part.num_rows, "bytes": (staging / file_name).stat().st_size,
                          "sha256": file_sha256(staging / file_name)})
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "row_count": table.num_rows,
            "schema": schema_description(table.schema),
            "statistics": column_statistics(table),
            "files": files,
            "content_digest": digest.result(),
            "source": source,
            "validation": validation or {},
            "quarantine": None,
        }
        if quarantined is not None and quarantined.num_rows:
            pq.write_table(quarantined, staging / QUARANTINE_NAME)
            manifest["quarantine"] = {"path": QUARANTINE_NAME, "rows": quarantined.num_rows,
                                      "sha256": file_sha256(staging / QUARANTINE_NAME)}
        for attempt in range(20):
            version = max(catalog.next_dataset_version(name), _next_free_folder(datasets))
            manifest["version"] = version
            _write_json(staging / MANIFEST_NAME, manifest)
            final = datasets / f"v{version}"
            try:
                os.rename(staging, final)
            except OSError:
                continue  # another writer took this version number first
            try:
                catalog.register_dataset_version(
                    name, version, str(final.resolve()), manifest, table.num_rows, manifest["content_digest"], source
                )
            except DatasetVersionExists:
                os.rename(final, staging)
                continue
            except Exception:
                shutil.rmtree(final, ignore_errors=True)
                raise
            return PublishedVersion(name=name, version=version, path=final.resolve(), manifest=manifest)
        raise WorkFailed(f"could not take a version number for dataset '{name}' after {attempt + 1} tries")
    finally:
        digesting.shutdown(wait=True, cancel_futures=True)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def column_statistics(table: pa.Table) -> dict[str, dict[str, Any]]:
    """Per column: nulls and distinct values; min, max and mean for numbers; min and max for dates."""
    import pyarrow.compute as pc

    statistics: dict[str, dict[str, Any]] = {}
    for field in table.schema:
        column = table.column(field.name)
        entry: dict[str, Any] = {"nulls": column.null_count, "distinct": pc.count_distinct(column).as_py()}
        kind = field.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            bounds = pc.min_max(column)
            entry.update({"min": bounds["min"].as_py(), "max": bounds["max"].as_py(), "mean": pc.mean(column).as_py()})
        elif pa.types.is_temporal(kind):
            bounds = pc.min_max(column)
            entry.update({"min": str(bounds["min"].as_py()), "max": str(bounds["max"].as_py())})
        statistics[field.name] = entry
    return statistics


def _remove_abandoned_staging(datasets: Path) -> None:
    """Delete staging folders of writers on this host whose process is gone (killed mid-write)."""
    host = socket.gethostname()
    for entry in datasets.glob(".staging-*"):
        writer_host, _, rest = entry.name.removeprefix(".staging-").rpartition("-")[0].rpartition("-")
        if writer_host != host or not rest.isdigit():
            continue
        try:
            os.kill(int(rest), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            continue


def _next_free_folder(datasets: Path) -> int:
    """One past the highest v<N> folder (a crash may leave one that the catalog never saw)."""
    numbers = [int(entry.name[1:]) for entry in datasets.iterdir() if entry.name[:1] == "v" and entry.name[1:].isdigit()]
    return max(numbers, default=0) + 1


def _write_json(path: Path, value: Any) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
    os.replace(temporary, path)


def read_version_table(path: str | Path, manifest: dict[str, Any]) -> pa.Table:
    """All rows of a published version, in file order."""
    base = Path(path)
    return pa.concat_tables([pq.read_table(base / item["path"]) for item in manifest["files"]])


def verify_version(path: str | Path, manifest: dict[str, Any]) -> list[str]:
    """Problems found re-hashing a version's files and content; empty when it is intact."""
    base = Path(path)
    problems = []
    for item in manifest["files"]:
        file = base / item["path"]
        if not file.exists():
            problems.append(f"{item['path']}: missing")
        elif file_sha256(file) != item["sha256"]:
            problems.append(f"{item['path']}: sha256 differs from the manifest")
    if not problems:
        table = read_version_table(base, manifest)
        if table.num_rows != manifest["row_count"]:
            problems.append(f"row count {table.num_rows} differs from the manifest's {manifest['row_count']}")
        if content_digest(table) != manifest["content_digest"]:
            problems.append("content digest differs from the manifest")
    return problems
