"""Prove a dataset version is what its source yields: same rows, same content digest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raymlp.errors import WorkFailed
from raymlp.storage import files as storage_files

from .integrity import content_digest, file_sha256


@dataclass
class SourceYield:
    """What a version's recorded source yields now, after the version's rules."""

    records: int = 0
    rows: int = 0
    quarantined: int = 0
    content_digest: str = ""


def _rules(manifest: dict[str, Any]):
    from raymlp.config.schema import SchemaConfig

    rules = (manifest.get("validation") or {}).get("rules")
    return SchemaConfig.model_validate({**rules, "on_error": "quarantine"}) if rules else None


def source_yield(manifest: dict[str, Any], url: str | None = None) -> tuple[SourceYield, list[str]]:
    """Re-derive the version from its recorded source, and the problems found reaching it.

    `url` replaces the recorded (password-free) database URL, for sources that need a secret.
    Files are read range by range, as convert reads them, so a large source is never all in memory.
    """
    from raymlp.config.schema import SourceConfig

    from .integrity import plain_types
    from .ranges import read_files
    from .sources import read_sklearn
    from .sql import read_rejects, read_sql
    from .validate import check_rows

    source = manifest["source"]
    kind = source.get("kind")
    rules = _rules(manifest)
    if kind == "files":
        problems = []
        files = [item["path"] for item in source["files"]]
        for item, path in zip(source["files"], files):
            if storage_files.state(path) is None:
                problems.append(f"source file {path} is gone")
            elif file_sha256(path) != item["sha256"]:
                problems.append(f"source file {path} changed since the version was made (sha256 differs)")
        if problems:
            return SourceYield(), problems
        config = SourceConfig(format=source["format"], path=files, delimiter=source.get("delimiter", ","))
        if config.format != "images":
            read = read_files(files, config, rules)
            return SourceYield(read.records, read.rows, read.malformed + read.invalid, read.content_digest), []
        from .sources import read_source

        images = read_source(config)
        table, records, quarantined = images.table, images.table.num_rows + images.malformed_rows, images.malformed_rows
        if rules is not None:
            checked = check_rows(table, rules)
            table, quarantined = checked.good, quarantined + checked.quarantined_rows
        return SourceYield(records, table.num_rows, quarantined, content_digest(plain_types(table))), []
    rejected = 0  # malformed records a collect kept beside the table, in its rejects table
    if kind in ("table", "sql"):
        try:
            table = read_sql(url or source["url"], table=source.get("table"), query=source.get("query"))
            if source.get("rejects_table"):
                rejects = read_rejects(url or source["url"], source["table"])
                if rejects is None:
                    return SourceYield(), [f"the rejects table {source['rejects_table']} is gone"]
                rejected = rejects.num_rows
        except WorkFailed as error:
            return SourceYield(), [
                f"cannot read the source: {error} (give the database URL with --source-url or --job)"
            ]
    elif kind == "sklearn":
        table = read_sklearn(source["name"]).table
    else:
        return SourceYield(), [f"cannot verify against a source of kind {kind!r}"]
    records, quarantined = table.num_rows + rejected, rejected
    if rules is not None:
        checked = check_rows(table, rules)
        table, quarantined = checked.good, quarantined + checked.quarantined_rows
    return SourceYield(records, table.num_rows, quarantined, content_digest(plain_types(table))), []


def verify_against_source(manifest: dict[str, Any], url: str | None = None) -> list[str]:
    """Problems found re-deriving the version from its source; empty when rows and digest agree."""
    found, problems = source_yield(manifest, url)
    if problems:
        return problems
    recorded_records = manifest["source"].get("rows", found.records)
    if found.records != recorded_records:
        problems.append(f"the source now has {found.records} rows; the version was made from {recorded_records}")
    if found.rows != manifest["row_count"]:
        problems.append(f"the source yields {found.rows} rows; the version holds {manifest['row_count']}")
    recorded_aside = (manifest.get("quarantine") or {}).get("rows", 0)
    if found.quarantined != recorded_aside:
        problems.append(
            f"the source yields {found.quarantined} quarantined rows; the version set aside {recorded_aside}"
        )
    if not problems and found.content_digest != manifest["content_digest"]:
        problems.append("the source's content digest differs from the version's (same row count, different values)")
    return problems
