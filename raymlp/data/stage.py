"""The collect and convert stages of a job."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from raymlp import metrics
from raymlp.context import StageContext
from raymlp.errors import UsageError, WorkFailed

from .integrity import plain_types
from .sources import expand_paths, read_source, source_bytes
from .versions import PublishedVersion, publish_version


@dataclass(frozen=True)
class Collected:
    """A source loaded into a database table."""

    url: str
    table: str
    rows: int
    column_types: dict[str, str]
    rejected: int = 0  # malformed records kept in `rejects_table`
    rejects_table: str | None = None


def collect_stage(context: StageContext) -> Collected:
    """Load the job's source into its `data.collect` table, atomically."""
    from raymlp.catalog import redact_url

    data = context.config.data
    target = data.collect
    job = context.config.name
    keep_rejects = data.schema_ is not None and data.schema_.on_error == "quarantine"
    if keep_rejects:
        from .sql import rejects_table_name

        if len(rejects_table_name(target.table)) > 63:  # PostgreSQL would cut the name short, silently
            raise UsageError(
                f"data.collect.table: '{target.table}' is too long to keep malformed records beside it "
                f"in '{rejects_table_name(target.table)}' (at most 63 characters); shorten it to 54"
            )
    started = time.perf_counter()
    with context.reporter.progress("collect", None) as progress:
        written, origin, size = _load_source(
            data.source,
            target,
            metrics.counting(progress, job, "collect"),
            context.reporter,
            label=f"{job}/collect",
            keep_rejects=keep_rejects,
        )
    metrics.inc(metrics.ROWS_COLLECTED, written.rows, metrics.tags(job, "collect", table=target.table))
    context.catalog.record_collection(
        source_uri=", ".join(item["path"] for item in origin if "path" in item) or str(origin[0]),
        source_sha256=", ".join(item.get("sha256", "") for item in origin) or "",
        target_url=target.url,
        target_table=target.table,
        mode=target.mode,
        row_count=written.rows,
        column_types=written.column_types,
        rows_rejected=written.rejected,
        rejects_table=written.rejects_table,
    )
    types = ", ".join(f"{name} {kind}" for name, kind in written.column_types.items())
    records = written.rows + written.rejected
    rejects = (
        ""
        if written.rejects_table is None or not written.rejected
        else (f"; {written.rejected} malformed records -> {written.rejects_table} ({records} records read)")
    )
    context.reporter.stage(
        "collect",
        f"{written.rows} rows -> {redact_url(target.url)} table {target.table} ({target.mode}){rejects} "
        f"{_rate(records, size, time.perf_counter() - started)} by {written.method}; columns: {types}",
    )
    return Collected(
        url=redact_url(target.url),
        table=target.table,
        rows=written.rows,
        column_types=written.column_types,
        rejected=written.rejected,
        rejects_table=written.rejects_table,
    )


def _load_source(
    source, target, progress, reporter, label: str | None = None, keep_rejects: bool = False
) -> tuple[Any, list[dict[str, str]], int | None]:
    """The source's rows into the target table: files range by range as they are parsed (memory
    holds a few ranges), anything else read whole first. Returns what was written, the source
    files (path, sha256) and the bytes read. `label` (`job/stage`) names the Ray tasks of ranges
    read on a cluster. `keep_rejects`: malformed records go into the table's rejects table
    instead of failing the collect."""
    from .ranges import MALFORMED_IN_A_TABLE, RangeTables
    from .sql import LoadPiece, TypesWidened, write_tables

    if source.format in ("csv", "json", "parquet"):
        ranges = RangeTables(
            expand_paths(source.path, source.format), source, progress, label=label, keep_rejects=keep_rejects
        )
        try:
            written = write_tables(target.url, target.table, ranges, target.mode, keep_rejects=keep_rejects)
            return written, ranges.files, ranges.bytes
        except TypesWidened as reason:
            reporter.stage(
                "collect", f"a column's type widened after rows were loaded ({reason}); reading the files whole"
            )
    source_data = read_source(source, progress)
    if source_data.malformed_rows and not keep_rejects:
        assert source_data.malformed is not None  # malformed_rows counts its rows
        first = source_data.malformed.slice(0, 20).to_pylist()
        raise WorkFailed(
            f"{source_data.malformed_rows} malformed records in the source; {MALFORMED_IN_A_TABLE}. First ones:\n  "
            + "\n  ".join(f"{row['_raymlp_source']}:{row['_raymlp_row']}: {row['_raymlp_reason']}" for row in first)
        )
    written = write_tables(
        target.url,
        target.table,
        [LoadPiece(source_data.table, rejects=source_data.malformed)],
        target.mode,
        keep_rejects=keep_rejects,
    )
    return written, source_data.description.get("files", [source_data.description]), _bytes_read(source_data)


def convert_stage(context: StageContext) -> PublishedVersion:
    """Make a new dataset version from the collected table (or straight from the source)."""
    data = context.config.data
    if data.collect is None and data.source.format in ("csv", "json", "parquet"):
        return _convert_files(context)
    unique_rules = data.schema_ is not None and any(spec.unique for spec in data.schema_.columns.values())
    if data.collect is not None and data.collect.shard_key is None and not unique_rules:
        streamed = _convert_postgres_stream(context)
        if streamed is not None:
            return streamed
    from .validate import check_rows

    started = time.perf_counter()
    if data.collect is not None:
        from raymlp.catalog import redact_url

        from .sql import read_rejects, read_sql

        malformed = read_rejects(data.collect.url, data.collect.table)
        table = read_sql(
            data.collect.url,
            table=data.collect.table,
            shard_key=data.collect.shard_key,
            shards=data.collect.shards,
            where="data.collect",
        )
        source_info: dict[str, Any] = {
            "kind": "table",
            "url": redact_url(data.collect.url),
            "table": data.collect.table,
            **_rejects_info(data.collect.table, malformed),
            **_parent_info(context),
            "rows": table.num_rows + (0 if malformed is None else malformed.num_rows),
        }
        if data.collect.shard_key is not None:
            source_info.update({"shard_key": data.collect.shard_key, "shards": data.collect.shards})
        row_ids = row_sources = None
    else:  # sources read whole: SQL, scikit-learn, images
        source = read_source(data.source)
        table, row_ids, row_sources, malformed = source.table, source.row_ids, source.row_sources, source.malformed
        source_info = {**source.description, "rows": source.table.num_rows + source.malformed_rows}
    quarantined = malformed
    validation: dict[str, Any] = {
        "rules": None,
        "rows_in": source_info["rows"],
        "rows_malformed": 0 if malformed is None else malformed.num_rows,
    }
    if malformed is not None and malformed.num_rows and data.schema_ is not None and data.schema_.on_error == "fail":
        _fail_with_malformed(malformed)
    if data.schema_ is not None:
        checked = check_rows(table, data.schema_, row_ids=row_ids, row_sources=row_sources)
        table = checked.good
        if checked.quarantined is not None:
            quarantined = (
                checked.quarantined
                if quarantined is None
                else pa.concat_tables([quarantined, checked.quarantined], promote_options="permissive")
            )
        validation.update(
            {
                "on_error": data.schema_.on_error,
                "rows_invalid": checked.quarantined_rows,
                "rules": data.schema_.model_dump(mode="json", by_alias=True),
            }
        )
    validation.update(
        {"rows_kept": table.num_rows, "rows_quarantined": 0 if quarantined is None else quarantined.num_rows}
    )
    if table.num_rows == 0:
        raise WorkFailed(_no_rows(data.dataset.name, source_info["rows"]))
    version = publish_version(
        context.catalog,
        context.storage.root,
        data.dataset.name,
        plain_types(table),
        source_info,
        quarantined,
        validation,
    )
    _report_convert(context, version, validation, source_info["rows"], None, started)
    return version


def _convert_files(context: StageContext) -> PublishedVersion:
    """Files to a version range by range: parts are written as they are read, never all in memory."""
    from .ranges import read_files
    from .sources import expand_paths, files_description
    from .versions import VersionStaging

    data = context.config.data
    job = context.config.name
    started = time.perf_counter()
    files = expand_paths(data.source.path, data.source.format)  # type: ignore[arg-type]
    rules = data.schema_
    with (
        VersionStaging(context.storage.root, data.dataset.name) as staging,
        context.reporter.progress("convert", source_bytes(files)) as progress,
    ):
        read = read_files(
            files,
            data.source,
            rules,
            part_folder=staging.path,
            progress=metrics.counting(progress, job, "convert"),
            label=f"{job}/convert",
        )
        version = _publish_read(context, staging, read, files_description(data.source, read.files))
    _report_convert(context, version, version.manifest["validation"], read.records, read.bytes, started)
    return version


def _publish_read(
    context: StageContext, staging, read, source: dict[str, Any], rejects: pa.Table | None = None
) -> PublishedVersion:
    """Publish the parts a range or stream read wrote into `staging`, with its counts reconciled.
    `rejects`: malformed records a collect kept beside the table read (quarantine rows), counted
    as records read and set aside."""
    data = context.config.data
    rules = data.schema_
    rejected = 0 if rejects is None else rejects.num_rows
    records, malformed = read.records + rejected, read.malformed + rejected
    validation: dict[str, Any] = {
        "rules": None,
        "rows_in": records,
        "rows_malformed": malformed,
        "rows_kept": read.rows,
        "rows_quarantined": malformed + read.invalid,
    }
    if rules is not None:
        validation.update(
            {
                "on_error": rules.on_error,
                "rows_invalid": read.invalid,
                "rules": rules.model_dump(mode="json", by_alias=True),
            }
        )
    if read.rows == 0:
        raise WorkFailed(_no_rows(data.dataset.name, records))
    quarantine = read.quarantine
    if rejected:
        quarantine = (
            rejects if quarantine is None else pa.concat_tables([rejects, quarantine], promote_options="permissive")
        )
    return staging.publish(
        context.catalog,
        schema=read.schema,
        row_count=read.rows,
        files=read.parts,
        content_digest=read.content_digest,
        statistics=read.statistics,
        source={**source, "rows": records},
        quarantined=quarantine,
        validation=validation,
    )


def _rejects_info(table: str, rejects: pa.Table | None) -> dict[str, Any]:
    """What a version records of the malformed records a collect kept beside its table."""
    from .sql import rejects_table_name

    return {} if rejects is None else {"rejects_table": rejects_table_name(table), "rejected": rejects.num_rows}


def _fail_with_malformed(malformed: pa.Table) -> None:
    shown = [
        f"{row['_raymlp_source']}:{row['_raymlp_row']}: {row['_raymlp_reason']}"
        for row in malformed.slice(0, 20).to_pylist()
    ]
    raise WorkFailed(
        f"{malformed.num_rows} malformed records in the source (data.schema.on_error: fail); "
        "first ones:\n  " + "\n  ".join(shown)
    )


def _convert_postgres_stream(context: StageContext) -> PublishedVersion | None:
    """A PostgreSQL table to a version while COPY delivers it: chunks are parsed, checked, digested
    and written on worker threads as the next ones arrive. None when the table needs the general path."""
    from raymlp.catalog import redact_url

    from .ranges import RANGE_BYTES_ENV, read_stream
    from .sql import POSTGRES_BOOLEANS, postgres_copy_stream, read_rejects
    from .versions import VersionStaging

    data = context.config.data
    started = time.perf_counter()
    rules = data.schema_
    chunk_bytes = int(os.environ.get(RANGE_BYTES_ENV) or 16 << 20)
    with postgres_copy_stream(data.collect.url, table=data.collect.table, chunk_bytes=chunk_bytes) as stream:
        if stream is None:
            return None
        rejects = read_rejects(data.collect.url, data.collect.table)
        if rejects is not None and rejects.num_rows and rules is not None and rules.on_error == "fail":
            _fail_with_malformed(rejects)
        with (
            VersionStaging(context.storage.root, data.dataset.name) as staging,
            context.reporter.progress("convert", None) as progress,
        ):
            read = read_stream(
                stream.chunks,
                stream.names,
                stream.column_types,
                f"table {data.collect.table}",
                booleans=POSTGRES_BOOLEANS,
                rules=rules,
                part_folder=staging.path,
                progress=metrics.counting(progress, context.config.name, "convert"),
            )
            if rules is not None and rules.on_error == "fail" and read.quarantine is not None:
                _fail_with_first_reasons(read.quarantine)
            version = _publish_read(
                context,
                staging,
                read,
                {
                    "kind": "table",
                    "url": redact_url(data.collect.url),
                    "table": data.collect.table,
                    **_rejects_info(data.collect.table, rejects),
                    **_parent_info(context),
                },
                rejects,
            )
    _report_convert(
        context, version, version.manifest["validation"], version.manifest["validation"]["rows_in"], read.bytes, started
    )
    return version


def _parent_info(context: StageContext) -> dict[str, Any]:
    """For a version converted from a table that collects append to: the version before it from the same table
    (its parent) and the collects appended since, so lineage says what is new."""
    data = context.config.data
    if data.collect is None or data.collect.mode != "append":
        return {}
    from raymlp.catalog.errors import CatalogError

    try:
        previous = context.catalog.get_dataset_version(data.dataset.name)
    except CatalogError:  # the first version
        return {}
    if previous.source.get("table") != data.collect.table:
        return {}
    appended = [
        {"source": item.source_uri, "sha256": item.source_sha256, "rows": item.row_count}
        for item in context.catalog.list_collections(data.collect.table)
        if item.created_at > previous.created_at and item.mode == "append"
    ]
    return {"parent": f"{previous.name}@{previous.version}", "appended": appended}


def _no_rows(dataset: str, records: int) -> str:
    """Why a version is not published when nothing is left to put in it (an empty version is refused)."""
    if records == 0:
        return (
            f"dataset '{dataset}': the source has no rows (a CSV file with only its header, an empty table); "
            "no version was made"
        )
    return f"dataset '{dataset}': no rows to publish ({records} read, none kept); no version was made"


def _fail_with_first_reasons(quarantine) -> None:
    rows = quarantine.slice(0, 20).to_pylist()
    raise WorkFailed(
        f"{quarantine.num_rows} rows break data.schema (on_error: fail); first reasons:\n  "
        + "\n  ".join(f"row {row['_raymlp_row']}: {row['_raymlp_reason']}" for row in rows)
    )


def _report_convert(
    context: StageContext,
    version: PublishedVersion,
    validation: dict[str, Any],
    rows_in: int,
    size: int | None,
    started: float,
) -> None:
    counted = metrics.tags(context.config.name, "convert", dataset=context.config.data.dataset.name)
    metrics.inc(metrics.ROWS_CONVERTED, version.manifest["row_count"], counted)
    metrics.inc(metrics.ROWS_QUARANTINED, validation.get("rows_quarantined") or 0, counted)
    aside = f", {validation['rows_quarantined']} quarantined" if validation.get("rows_quarantined") else ""
    reused = " (reused: the same rows as the latest version, so nothing new was published)" if version.reused else ""
    context.reporter.stage(
        "convert",
        f"{version.ref}: {version.manifest['row_count']} rows{aside}, {version.manifest['content_digest'][:19]} "
        f"{_rate(rows_in, size, time.perf_counter() - started)}{reused}",
    )


def _bytes_read(source) -> int | None:
    return source.bytes


def _rate(rows: int, size: int | None, seconds: float) -> str:
    """'(1,000,000 rows/s, 75.2 MB/s in 1.3 s)' for a stage's completion line."""
    seconds = max(seconds, 1e-6)
    volume = f", {size / 1e6 / seconds:.1f} MB/s" if size else ""
    return f"({rows / seconds:,.0f} rows/s{volume} in {seconds:.1f} s)"
