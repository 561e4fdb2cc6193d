"""Dataset versions and preprocessing modules in the catalog: describe, verify, remove; add and show
modules; write a scikit-learn sample. The `raymlp data ...` commands call these."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raymlp.errors import UsageError, WorkFailed

from .jobs import load, storage_for


def catalog_for(job: Path | None) -> Any:
    """The catalog of the job file's storage (RAYMLP_HOME's without one); a context manager."""
    from raymlp.catalog import Catalog

    return Catalog(storage_for(job).catalog_url)


def list_datasets(job: Path | None) -> list[dict[str, Any]]:
    with catalog_for(job) as catalog:
        versions = catalog.list_dataset_versions()
    return [
        {
            "name": item.name,
            "version": item.version,
            "rows": item.row_count,
            "content_digest": item.content_digest,
            "path": item.path,
            "created_at": item.created_at,
        }
        for item in versions
    ]


def describe_dataset(name: str, version: int | None, job: Path | None) -> tuple[dict[str, Any], Any, Any]:
    """`data show`: (what --json prints, the catalog record, the collect it read or None)."""
    with catalog_for(job) as catalog:
        record = catalog.get_dataset_version(name, version)
        models = catalog.models_using_dataset(record.name, record.version)
        collections = catalog.list_collections(record.source["table"]) if record.source.get("kind") == "table" else []
    manifest = record.manifest
    collected = next(
        (
            item
            for item in reversed(collections)  # the collect this version read
            if item.target_url == record.source.get("url") and item.created_at <= record.created_at
        ),
        None,
    )
    shown = {
        "name": record.name,
        "version": record.version,
        "path": record.path,
        "rows": record.row_count,
        "content_digest": record.content_digest,
        "created_at": record.created_at,
        "schema": manifest["schema"],
        "source": record.source,
        "quarantine": manifest.get("quarantine"),
        "validation": manifest.get("validation"),
        "files": manifest["files"],
        "statistics": manifest.get("statistics", {}),
        "models": [{"model": m.model_name, "version": m.model_version, "run_id": m.run_id} for m in models],
        "lineage": _lineage(record, models),
        "collected_from": None
        if collected is None
        else {
            "source": collected.source_uri,
            "sha256": collected.source_sha256,
            "rows": collected.row_count,
            "at": collected.created_at,
        },
    }
    return shown, record, collected


def source_line(source: dict) -> str:
    """A version's recorded source in one line: files, a table, a query or a scikit-learn dataset."""
    kind = source.get("kind")
    if kind == "files":
        files = source.get("files", [])
        shown = ", ".join(item["path"] for item in files[:3]) + (
            f" and {len(files) - 3} more" if len(files) > 3 else ""
        )
        return f"{source.get('format', '')} files {shown}".strip()
    if kind == "table":
        return f"table {source['table']} in {source['url']}"
    if kind == "sql":
        return f"query on {source['url']}: {source.get('query') or source.get('table')}"
    if kind == "sklearn":
        return f"scikit-learn's {source.get('name')}"
    return f"{kind} {source.get('name') or ''}".strip()


def _lineage(record: Any, models: Any) -> list[str]:
    """source -> version -> models, one step each (`data show --json` gives these strings)."""
    steps = [
        source_line(record.source)
        if record.source.get("kind") != "files"
        else "files " + ", ".join(item["path"] for item in record.source["files"])
    ]
    if record.source.get("parent"):
        appended = record.source.get("appended") or []
        rows = sum(item.get("rows") or 0 for item in appended)
        sources = ", ".join(item["source"] for item in appended[:3]) + (" ..." if len(appended) > 3 else "")
        steps.append(
            f"parent {record.source['parent']} + {rows} rows appended" + (f" from {sources}" if sources else "")
        )
    steps.append(f"dataset {record.name}@{record.version} ({record.row_count} rows)")
    steps += [f"model {m.model_name} version {m.model_version} (run {m.run_id})" for m in models]
    return steps


def verify_dataset(
    name: str,
    version: int | None,
    job: Path | None,
    *,
    source: bool,
    source_url: str | None,
    address: str | None,
    on_report: Callable[[dict[str, Any]], None],
    on_manifest_ok: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """`data verify`: re-hash the version against its manifest, then (`source`) re-derive it from its
    source. A failed check calls `on_report(report)` first (for --json) and raises WorkFailed;
    `on_manifest_ok(report)` is called between the two checks. Returns the report."""
    from raymlp import settings
    from raymlp.data.verify import verify_against_source
    from raymlp.data.versions import verify_version

    with catalog_for(job) as catalog:
        record = catalog.get_dataset_version(name, version)
    label = f"{record.name}@{record.version}"
    aside = (record.manifest.get("quarantine") or {}).get("rows", 0)
    report = {
        "dataset": record.name,
        "version": record.version,
        "rows": record.row_count,
        "quarantined": aside,
        "files": len(record.manifest["files"]),
        "content_digest": record.content_digest,
        "manifest": {"ok": True, "problems": []},
        "source": None,
    }
    problems = verify_version(record.path, record.manifest)
    if problems:
        report["manifest"] = {"ok": False, "problems": problems}
        on_report(report)
        raise WorkFailed(f"{label} is damaged:\n  " + "\n  ".join(problems))
    on_manifest_ok(report)
    if source:
        url = source_url or _source_url_from_job(job, record.manifest["source"])
        cluster = address or settings.ray_address()  # ranges read on a cluster's nodes, as convert reads them
        with contextlib.ExitStack() as stack:
            if cluster:
                from raymlp.runtime import ray_runtime

                stack.enter_context(ray_runtime(address))
            problems = verify_against_source(record.manifest, url)
        report["source"] = {"ok": not problems, "problems": problems}
        if problems:
            on_report(report)
            raise WorkFailed(f"{label} differs from its source:\n  " + "\n  ".join(problems))
    return report


def _source_url_from_job(job: Path | None, source: dict) -> str | None:
    """The real database URL (with ${ENV} secrets) from the job file, for a table or SQL source."""
    if job is None or source.get("kind") not in ("table", "sql"):
        return None
    data = load(job).config.data
    if source["kind"] == "table" and data.collect is not None:
        return data.collect.url
    return data.source.sql.url if data.source.sql is not None else None


def remove_dataset(ref: str, name: str, version: int | None, job: Path | None, *, force: bool) -> dict[str, Any]:
    """`data rm`: a version's files and catalog entry; one models were trained on only with `force`.
    Returns what was removed, with the models trained on it."""
    from raymlp.data.versions import remove_version

    if version is None:
        raise UsageError(
            f"data rm takes NAME@VERSION, got '{ref}' (one version at a time: raymlp data list shows them)"
        )
    with catalog_for(job) as catalog:
        catalog.get_dataset_version(name, version)  # the usual error when there is no such version
        models = catalog.models_using_dataset(name, version)
        if models and not force:
            raise UsageError(
                f"{name}@{version} is the training data of "
                + ", ".join(f"model {m.model_name}:{m.model_version}" for m in models)
                + "; remove those first (raymlp models rm), or remove it anyway with --force"
            )
        removed = remove_version(catalog, name, version)
    removed["models"] = [f"{m.model_name}:{m.model_version}" for m in models]
    return removed


def write_sample(name: str, output: Path) -> int:
    """Write a dataset that ships with scikit-learn as a CSV file (atomically); returns its rows."""
    import os

    from raymlp.config.schema import SklearnSource
    from raymlp.data.sources import sklearn_frame

    allowed = SklearnSource.model_fields["name"].annotation.__args__  # type: ignore[union-attr]
    if name not in allowed:
        raise UsageError(f"unknown sample '{name}'; available: {', '.join(allowed)}")
    frame = sklearn_frame(name)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.partial")
    frame.to_csv(temporary, index=False)
    os.replace(temporary, output)
    return len(frame)


# --- preprocessing modules ----------------------------------------------------------------------


def module_json(record: Any, *, source: bool = False) -> dict[str, Any]:
    shown = {
        "name": record.name,
        "version": record.version,
        "sha256": record.sha256,
        "filename": record.filename,
        "functions": record.functions,
        "created_at": record.created_at,
    }
    if source:
        shown["source"] = record.source
    return shown


def add_module(file: Path, name: str | None, job: Path | None) -> Any:
    """Check a module file (it must parse and import) and store it as a new version if its content
    changed; returns the catalog's answer (record, created, same_as)."""
    from raymlp.data.modules import read_module_file

    checked = read_module_file(file, name)
    with catalog_for(job) as catalog:
        return catalog.add_module(checked.name, checked.source, str(checked.path), checked.functions)


def list_modules(job: Path | None) -> list[dict[str, Any]]:
    """Each module's latest version, its sha256 and functions, and how many versions it has."""
    with catalog_for(job) as catalog:
        records = catalog.list_modules()
    latest: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for record in records:  # by name, then version: the last one seen is the latest
        latest[record.name] = record
        counts[record.name] = counts.get(record.name, 0) + 1
    return [
        {
            "name": r.name,
            "latest_version": r.version,
            "versions": counts[r.name],
            "sha256": r.sha256,
            "functions": [f["name"] for f in r.functions],
            "created_at": r.created_at,
        }
        for r in latest.values()
    ]


def module_versions(name: str, number: int | None, job: Path | None) -> list[Any]:
    """NAME@VERSION's record, or every version of NAME (a clear error when there is none)."""
    with catalog_for(job) as catalog:
        chosen = catalog.get_module(name, number)
        return [chosen] if number else catalog.list_modules(name)


def parse_dataset_ref(ref: str, what: str = "dataset") -> tuple[str, int | None]:
    """NAME or NAME@VERSION; `wine:1` (a model's form) is refused with the right one."""
    name, _, version = ref.partition("@")
    if not version and ":" in name:
        before, _, after = name.rpartition(":")
        if after.isdigit():
            raise UsageError(
                f"'{ref}': a {what} version is NAME@VERSION; did you mean {before}@{after}? "
                "(NAME:VERSION is a model's version)"
            )
        if what == "module":
            raise UsageError(
                f"'{ref}' is a function ref (MODULE:FUNCTION); name the module: {before} or {before}@VERSION"
            )
    if version and not version.isdigit():
        raise UsageError(f"'{ref}' is not NAME or NAME@VERSION (a {what} version is a number)")
    return name, int(version) if version else None
