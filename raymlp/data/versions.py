"""Dataset versions: immutable Parquet files plus a manifest, published in one step."""

from __future__ import annotations

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
from raymlp.storage import files as storage_files

from .integrity import content_digest
from .statistics import column_statistics

MANIFEST_NAME = "manifest.json"
QUARANTINE_NAME = "quarantine.parquet"
MANIFEST_FORMAT = "raymlp.dataset/1"
#: What `raymlp data rm` leaves in a removed version's folder, so its number is not used again.
REMOVED_NAME = "REMOVED.json"
ROWS_PER_FILE = 1_000_000
#: A local version is written under `.staging-HOST-PID-RANDOM/`, then renamed `vN`.
STAGING_PREFIX = ".staging-"
#: A version in a bucket stays where it was written: `v-HOST-PID-RANDOM/`.
REMOTE_PREFIX = "v-"
#: A writer on another host whose files have not changed for this long is taken to be gone.
ABANDONED_AFTER_S = 24 * 3600


@dataclass(frozen=True)
class PublishedVersion:
    """A dataset version that is visible in the catalog."""

    name: str
    version: int
    path: str  # absolute local folder or URI of the prefix in a bucket
    manifest: dict[str, Any]
    #: True when the rows were those of the latest version, which is returned instead of a new one.
    reused: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def schema_description(schema: pa.Schema) -> list[dict[str, Any]]:
    """Arrow schema as JSON-friendly column descriptions."""
    return [{"name": field.name, "type": str(field.type), "nullable": field.nullable} for field in schema]


class VersionStaging:
    """A private place where the next version of dataset `name` is written; `publish` makes it
    visible in one step, and leaving the block without publishing removes it.

    On a local root that is a folder `.staging-HOST-PID-RANDOM` renamed to `vN`. A bucket has no
    rename: the parts are written where they stay, `v-HOST-PID-RANDOM/`, the manifest last, and the
    version exists once the catalog's transaction registers it (readers find versions only there).
    """

    def __init__(self, root: str, name: str):
        import re

        from raymlp.config.schema import NAME_PATTERN

        if not re.match(NAME_PATTERN, name):
            raise UsageError(f"'{name}' is not a usable dataset name (letters, digits, '_', '.', '-'; no '/')")
        self.name = name
        self.remote = storage_files.is_remote(root)
        self.datasets = storage_files.make_folder(storage_files.join(root, "datasets", name))
        writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.path = storage_files.join(self.datasets, f"{REMOTE_PREFIX if self.remote else STAGING_PREFIX}{writer}")
        self.committed = False
        if not self.remote:
            _remove_abandoned_staging(Path(self.datasets))
            Path(self.path).mkdir()

    def __enter__(self) -> VersionStaging:
        return self

    def __exit__(self, *_: object) -> None:
        if not self.committed:
            storage_files.delete_tree(self.path)

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
            from .ranges import write_part

            written = write_part(quarantined, storage_files.join(self.path, QUARANTINE_NAME), dictionary=False)
            manifest["quarantine"] = {
                "path": QUARANTINE_NAME,
                "rows": quarantined.num_rows,
                "sha256": written["sha256"],
            }
        same = _same_as_latest(catalog, self.name, manifest)
        if same is not None:  # nothing new: the staging folder goes when the block ends
            return PublishedVersion(
                name=self.name, version=same.version, path=same.path, manifest=same.manifest, reused=True
            )
        if self.remote:
            return self._commit_in_catalog(catalog, manifest, row_count, content_digest, source)
        tries = 20
        datasets = Path(self.datasets)
        for _ in range(tries):
            version = max(catalog.next_dataset_version(self.name), _next_free_folder(self.datasets))
            manifest["version"] = version
            storage_files.write_json(storage_files.join(self.path, MANIFEST_NAME), manifest)
            final = datasets / f"v{version}"
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
            self.committed = True
            return PublishedVersion(name=self.name, version=version, path=str(final.resolve()), manifest=manifest)
        raise WorkFailed(f"could not take a version number for dataset '{self.name}' after {tries} tries")

    def _commit_in_catalog(
        self, catalog, manifest: dict[str, Any], row_count: int, digest: str, source: dict[str, Any]
    ) -> PublishedVersion:
        """The parts and the manifest are in the bucket; the catalog's insert of (name, version) is
        the one commit point, which two writers cannot both win: the loser takes the next number."""
        from raymlp.catalog import DatasetVersionExists

        _remove_abandoned_writes(catalog, self.name, self.datasets, keep=self.path)
        tries = 20
        for _ in range(tries):
            version = max(catalog.next_dataset_version(self.name), _next_free_folder(self.datasets))
            manifest["version"] = version
            storage_files.write_json(storage_files.join(self.path, MANIFEST_NAME), manifest)
            try:
                catalog.register_dataset_version(self.name, version, self.path, manifest, row_count, digest, source)
            except DatasetVersionExists:
                continue
            self.committed = True
            return PublishedVersion(name=self.name, version=version, path=self.path, manifest=manifest)
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
            parts = [
                write_part(
                    table.slice(start, ROWS_PER_FILE), storage_files.join(staging.path, f"part-{index:05d}.parquet")
                )
                for index, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_FILE))
            ]
            statistics = column_statistics(table)
            return staging.publish(
                catalog,
                schema=table.schema,
                row_count=table.num_rows,
                files=parts,
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
    storage_files.delete_tree(version.path)


def remove_version(catalog, name: str, version: int) -> dict[str, Any]:
    """`raymlp data rm`: the version's catalog row and its files. A local folder is first renamed
    aside (so a failure leaves either the whole version or nothing usable); in a bucket the catalog
    row goes first (readers find versions there only). A `vN/REMOVED.json` stays behind so the number
    is never given to other rows. Returns what was removed."""
    record = catalog.get_dataset_version(name, version)
    folder = record.path
    marker_folder = storage_files.join(storage_files.parent(folder), f"v{version}")
    aside = folder
    if not storage_files.is_remote(folder):
        aside = str(Path(folder).with_name(f".removing-{storage_files.name_of(folder)}-{uuid.uuid4().hex[:8]}"))
        moved = Path(folder).exists()
        if moved:
            os.rename(folder, aside)
        try:
            catalog.delete_dataset_version(name, version)
        except BaseException:
            if moved:
                os.rename(aside, folder)
            raise
    else:
        catalog.delete_dataset_version(name, version)
    prefix = aside.rstrip("/") + "/"
    listed = storage_files.list_files(aside)
    sizes = [storage_files.state(item) for item in listed]
    storage_files.write_json(
        storage_files.join(marker_folder, REMOVED_NAME),
        {
            "name": name,
            "version": version,
            "content_digest": record.content_digest,
            "removed_at": datetime.now(UTC).isoformat(),
        },
    )
    storage_files.delete_tree(aside)
    return {
        "name": name,
        "version": version,
        "path": marker_folder,
        "files": sorted(item[len(prefix) :] for item in listed),
        "bytes": sum(state.size for state in sizes if state is not None),
        "rows": record.row_count,
        "content_digest": record.content_digest,
    }


def _remove_abandoned_staging(datasets: Path) -> None:
    """Delete staging folders of writers on this host whose process is gone (killed mid-write)."""
    for entry in datasets.glob(f"{STAGING_PREFIX}*"):
        if _writer_gone(entry.name.removeprefix(STAGING_PREFIX)):
            shutil.rmtree(entry, ignore_errors=True)


def _writer_gone(writer: str, *, age_s: float | None = None) -> bool:
    """Whether the writer `HOST-PID-RANDOM` is gone: its process, when it ran on this host; else
    (another host, whose processes cannot be asked) its files untouched for ABANDONED_AFTER_S."""
    host, _, pid = writer.rpartition("-")[0].rpartition("-")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, owned by someone else
            return False
        return False
    return age_s is not None and age_s > ABANDONED_AFTER_S


def _remove_abandoned_writes(catalog, name: str, datasets: str, keep: str) -> None:
    """In a bucket: delete the `v-HOST-PID-RANDOM/` prefixes that no version in the catalog names and
    whose writer is gone (a convert killed before its commit)."""
    import time

    def committed() -> set[str]:
        return {storage_files.normalized(record.path) for record in catalog.list_dataset_versions(name)}

    before = committed()
    gone = []
    for entry in storage_files.children(datasets):
        prefix = storage_files.join(datasets, entry)
        if not entry.startswith(REMOTE_PREFIX) or prefix == keep or prefix in before:
            continue
        states = [storage_files.state(item) for item in storage_files.list_files(prefix)]
        newest = max((state.mtime_ns for state in states if state is not None), default=0)
        if _writer_gone(entry.removeprefix(REMOTE_PREFIX), age_s=time.time() - newest / 1e9):
            gone.append(prefix)
    if gone:
        now = committed()  # a writer that committed while this looked, and ended since, keeps its version
        for prefix in gone:
            if prefix not in now:
                storage_files.delete_tree(prefix)


def _next_free_folder(datasets: str) -> int:
    """One past the highest v<N> folder (a crash may leave one that the catalog never saw; a removed
    version leaves its REMOVED.json)."""
    numbers = [int(entry[1:]) for entry in storage_files.children(datasets) if entry[:1] == "v" and entry[1:].isdigit()]
    return max(numbers, default=0) + 1


def read_part(path: str | Path, name: str) -> pa.Table:
    """One Parquet file of a version (`name` relative to the version's folder)."""
    filesystem, base = storage_files.arrow_filesystem(path)
    with storage_files.translated_errors(path, "read"):
        return pq.read_table(f"{base}/{name}", filesystem=filesystem)


def read_version_table(path: str | Path, manifest: dict[str, Any]) -> pa.Table:
    """All rows of a published version, in file order."""
    return pa.concat_tables([read_part(path, item["path"]) for item in manifest["files"]])


def verify_version(path: str | Path, manifest: dict[str, Any]) -> list[str]:
    """Problems found re-hashing a version's files (every byte read again) and content; empty when it
    is intact."""
    problems = []
    for item in manifest["files"]:
        file = storage_files.join(path, item["path"])
        if storage_files.state(file) is None:
            problems.append(f"{item['path']}: missing")
        elif storage_files.sha256_of(file) != item["sha256"]:
            problems.append(f"{item['path']}: sha256 differs from the manifest")
    if not problems:
        table = read_version_table(path, manifest)
        if table.num_rows != manifest["row_count"]:
            problems.append(f"row count {table.num_rows} differs from the manifest's {manifest['row_count']}")
        if content_digest(table) != manifest["content_digest"]:
            problems.append("content digest differs from the manifest")
    return problems
