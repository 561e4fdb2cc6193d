"""Dataset versions: immutable Parquet files plus a manifest, published in one step."""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raymlp.errors import UsageError, WorkFailed

from .integrity import content_digest, file_sha256
from .statistics import column_statistics

MANIFEST_NAME = "manifest.json"
QUARANTINE_NAME = "quarantine.parquet"
MANIFEST_FORMAT = "raymlp.dataset/1"
#: What `raymlp data rm` leaves in a removed version's folder, so its number is not used again.
REMOVED_NAME = "REMOVED.json"
ROWS_PER_FILE = 1_000_000


@dataclass(frozen=True)
class PublishedVersion:
    """A dataset version that is visible in the catalog."""

    name: str
    version: int
    path: Path
    manifest: dict[str, Any]
    #: True when the rows were those of the latest version, which is returned instead of a new one.
    reused: bool = False

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


class VersionStaging:
    """A private folder where the next version of dataset `name` is written; `publish` makes it
    visible in one step, and leaving the block without publishing removes it."""

    def __init__(self, root: str, name: str):
        import re

        from raymlp.config.schema import NAME_PATTERN

        if not re.match(NAME_PATTERN, name):
            raise UsageError(f"'{name}' is not a usable dataset name (letters, digits, '_', '.', '-'; no '/')")
        self.name = name
        self.datasets = _local_root(root) / "datasets" / name
        self.datasets.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_staging(self.datasets)
        self.path = self.datasets / f".staging-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.path.mkdir()

    def __enter__(self) -> VersionStaging:
        return self

    def __exit__(self, *_: object) -> None:
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def publish(
        self,
        catalog,
        *,
        schema: pa.Schema,
        row_count: int,
        files: list[dict[str, Any]],
        content_digest: str,
        statistics: dict[str, Any],
        source: dict[str, Any],
        quarantined: pa.Table | None = None,
        validation: dict[str, Any] | None = None,
    ) -> PublishedVersion:
        """Write the manifest (and quarantine) beside the parts, rename into `vN`, register `vN`."""
        from raymlp.catalog import DatasetVersionExists

        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "created_at": datetime.now(UTC).isoformat(),
            "row_count": row_count,
            "schema": schema_description(schema),
            "statistics": statistics,
            "files": files,
            "content_digest": content_digest,
            "source": source,
            "validation": validation or {},
            "quarantine": None,
        }
        if quarantined is not None and quarantined.num_rows:
            pq.write_table(quarantined, self.path / QUARANTINE_NAME)
            manifest["quarantine"] = {
                "path": QUARANTINE_NAME,
                "rows": quarantined.num_rows,
                "sha256": file_sha256(self.path / QUARANTINE_NAME),
            }
        same = _same_as_latest(catalog, self.name, manifest)
        if same is not None:  # nothing new: the staging folder goes when the block ends
            return PublishedVersion(
                name=self.name, version=same.version, path=Path(same.path), manifest=same.manifest, reused=True
            )
        tries = 20
        for _ in range(tries):
            version = max(catalog.next_dataset_version(self.name), _next_free_folder(self.datasets))
            manifest["version"] = version
            _write_json(self.path / MANIFEST_NAME, manifest)
            final = self.datasets / f"v{version}"
            try:
                os.rename(self.path, final)
            except OSError:
                continue  # another writer took this version number first
            try:
                catalog.register_dataset_version(
                    self.name, version, str(final.resolve()), manifest, row_count, content_digest, source
                )
            except DatasetVersionExists:
                os.rename(final, self.path)
                continue
            except Exception:
                shutil.rmtree(final, ignore_errors=True)
                raise
            return PublishedVersion(name=self.name, version=version, path=final.resolve(), manifest=manifest)
        raise WorkFailed(f"could not take a version number for dataset '{self.name}' after {tries} tries")


def publish_version(
    catalog,
    root: str,
    name: str,
    table: pa.Table,
    source: dict[str, Any],
    quarantined: pa.Table | None = None,
    validation: dict[str, Any] | None = None,
) -> PublishedVersion:
    """Write `table` (already in memory: a database read) as the next version of dataset `name`."""
    from .ranges import write_part

    with VersionStaging(root, name) as staging:
        # The digest (numpy) and the Parquet writing (Arrow C++) both release the GIL: overlap them.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="raymlp-digest") as digesting:
            digest = digesting.submit(content_digest, table)
            files = [
                write_part(table.slice(start, ROWS_PER_FILE), staging.path / f"part-{index:05d}.parquet")
                for index, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_FILE))
            ]
            statistics = column_statistics(table)
            return staging.publish(
                catalog,
                schema=table.schema,
                row_count=table.num_rows,
                files=files,
                content_digest=digest.result(),
                statistics=statistics,
                source=source,
                quarantined=quarantined,
                validation=validation,
            )


def _same_as_latest(catalog, name: str, manifest: dict[str, Any]) -> Any:
    """The latest version of `name` when `manifest` describes the same version of it again: the same
    content digest, the same rows set aside (count and file sha256) and the same data.schema rules."""
    from raymlp.catalog import CatalogError

    try:
        latest = catalog.get_dataset_version(name)
    except CatalogError:
        return None
    before = latest.manifest

    def aside(described: dict[str, Any]) -> tuple[Any, Any]:
        quarantine = described.get("quarantine") or {}
        return quarantine.get("rows", 0), quarantine.get("sha256")

    if (
        latest.content_digest == manifest["content_digest"]
        and aside(before) == aside(manifest)
        and (before.get("validation") or {}).get("rules") == (manifest.get("validation") or {}).get("rules")
    ):
        return latest
    return None


def withdraw_version(catalog, version: PublishedVersion) -> None:
    """Take back a version this process just published (its run failed before anything used it):
    catalog row and folder, so the number is free again."""
    catalog.delete_dataset_version(version.name, version.version)
    shutil.rmtree(version.path, ignore_errors=True)


def remove_version(catalog, name: str, version: int) -> dict[str, Any]:
    """`raymlp data rm`: the version's catalog row and its files. The folder is first renamed aside (so a
    failure leaves either the whole version or nothing usable), and a `vN/REMOVED.json` stays behind
    so the number is never given to other rows. Returns what was removed."""
    record = catalog.get_dataset_version(name, version)
    folder = Path(record.path)
    aside = folder.with_name(f".removing-{folder.name}-{uuid.uuid4().hex[:8]}")
    moved = folder.exists()
    if moved:
        os.rename(folder, aside)
    try:
        catalog.delete_dataset_version(name, version)
    except BaseException:
        if moved:
            os.rename(aside, folder)
        raise
    files = sorted(str(path.relative_to(aside)) for path in aside.rglob("*") if path.is_file()) if moved else []
    size = sum(path.stat().st_size for path in aside.rglob("*") if path.is_file()) if moved else 0
    folder.mkdir(exist_ok=True)
    _write_json(
        folder / REMOVED_NAME,
        {
            "name": name,
            "version": version,
            "content_digest": record.content_digest,
            "removed_at": datetime.now(UTC).isoformat(),
        },
    )
    if moved:
        shutil.rmtree(aside, ignore_errors=True)
    return {
        "name": name,
        "version": version,
        "path": str(folder),
        "files": files,
        "bytes": size,
        "rows": record.row_count,
        "content_digest": record.content_digest,
    }


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
    numbers = [
        int(entry.name[1:]) for entry in datasets.iterdir() if entry.name[:1] == "v" and entry.name[1:].isdigit()
    ]
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
