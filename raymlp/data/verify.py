"""Prove a dataset version is what its source yields: same rows, same content digest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from raymlp.errors import WorkFailed

from .integrity import content_digest, file_sha256


def rows_from_source(source: dict[str, Any], url: str | None = None) -> tuple[pa.Table, int, list[str]]:
    """The rows a version's recorded source yields now, how many of its records are malformed,
    and problems found reaching it.

    `url` replaces the recorded (password-free) database URL, for sources that need a secret.
    """
    from raymlp.config.schema import SourceConfig

    from .sources import read_files, read_sklearn
    from .sql import read_sql

    kind = source.get("kind")
    if kind in ("table", "sql"):
        target = url or source["url"]
        try:
            return read_sql(target, table=source.get("table"), query=source.get("query")), 0, []
        except WorkFailed as error:
            return pa.table({}), 0, [f"cannot read the source: {error} (give the database URL with --source-url or --job)"]
    if kind == "files":
        problems = []
        files = [Path(item["path"]) for item in source["files"]]
        for item, path in zip(source["files"], files):
            if not path.exists():
                problems.append(f"source file {path} is gone")
            elif file_sha256(path) != item["sha256"]:
                problems.append(f"source file {path} changed since the version was made (sha256 differs)")
        if problems:
            return pa.table({}), 0, problems
        config = SourceConfig(format=source["format"], path=[str(path) for path in files],
                              delimiter=source.get("delimiter", ","))
        rows = read_files(files, config)
        return rows.table, 0 if rows.malformed is None else rows.malformed.num_rows, []
    if kind == "sklearn":
        return read_sklearn(source["name"]).table, 0, []
    return pa.table({}), 0, [f"cannot verify against a source of kind {kind!r}"]


def verify_against_source(manifest: dict[str, Any], url: str | None = None) -> list[str]:
    """Problems found re-deriving the version from its source; empty when rows and digest agree."""
    from raymlp.config.schema import SchemaConfig

    from .stage import plain_types
    from .validate import check_rows

    table, malformed, problems = rows_from_source(manifest["source"], url)
    if problems:
        return problems
    quarantined = malformed
    rules = (manifest.get("validation") or {}).get("rules")
    if rules:
        checked = check_rows(table, SchemaConfig.model_validate({**rules, "on_error": "quarantine"}))
        table, quarantined = checked.good, quarantined + checked.quarantined_rows
    if table.num_rows + quarantined != manifest["source"].get("rows", table.num_rows + quarantined):
        problems.append(
            f"the source now has {table.num_rows + quarantined} rows; the version was made from {manifest['source']['rows']}"
        )
    if table.num_rows != manifest["row_count"]:
        problems.append(f"the source yields {table.num_rows} rows; the version holds {manifest['row_count']}")
    recorded_aside = (manifest.get("quarantine") or {}).get("rows", 0)
    if quarantined != recorded_aside:
        problems.append(f"the source yields {quarantined} quarantined rows; the version set aside {recorded_aside}")
    if not problems and content_digest(plain_types(table)) != manifest["content_digest"]:
        problems.append("the source's content digest differs from the version's (same row count, different values)")
    return problems
