"""Registered models: resolve a reference (NAME, NAME:VERSION, NAME@ALIAS) to its package, describe,
list, promote, remove and roll back. The command line's `models`, `predict` and `serve` and the
pipeline's predict and serve stages resolve models here.

Functions that take `job` read the storage locations from that job file (None: RAYMLP_HOME's), after
the reference is parsed, so a malformed reference is refused before anything is opened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raymlp.errors import UsageError
from raymlp.storage import Storage
from raymlp.tracking import ModelRef, Tracker, parse_model_ref

from .jobs import storage_for

__all__ = [
    "ModelRef",
    "describe_model",
    "fetch_model",
    "list_models",
    "parse_model_ref",
    "promote",
    "ref_for",
    "registered_package",
    "remove_model_version",
    "rollback",
    "tracker_for",
    "why",
]


def tracker_for(storage: Storage) -> Tracker:
    """The MLflow tracker of a storage (its registry and artifact root)."""
    return Tracker(storage.tracking_uri, storage.root)


def ref_for(name: str, reference: str) -> ModelRef:
    """A traffic split's key (a version number or an alias) as a reference to model `name`."""
    return ModelRef(name, version=int(reference)) if reference.isdigit() else ModelRef(name, alias=reference)


def fetch_model(storage: Storage, ref: ModelRef, tracker: Tracker | None = None) -> tuple[Path, int]:
    """(the package folder in the model cache, the version) of a registered model; a name, version or
    alias that is not there is a usage error saying what there is."""
    return (tracker or tracker_for(storage)).package_for(ref, storage.model_cache())


def registered_package(storage: Storage, name: str, alias: str | None) -> tuple[str, dict[str, Any]]:
    """A job's register section's model (NAME@ALIAS, else its latest version): its package folder and
    what the serve and predict stages tag it with."""
    package, version = fetch_model(storage, ModelRef(name, alias=alias))
    return str(package), {"model": name, "version": version}


def describe_model(text: str, job: Path | None) -> tuple[dict[str, Any], list[str]]:
    """`models show`: (the version's framework, task, label, classes, features, metrics, lineage,
    preprocessing and modules; the aliases that point at it)."""
    ref = parse_model_ref(text)
    from raymlp.package import DESCRIPTION_FILE

    storage = storage_for(job)
    tracker = tracker_for(storage)
    package, version = fetch_model(storage, ref, tracker)
    description = json.loads((package / DESCRIPTION_FILE).read_text())
    shown = {
        "name": ref.name,
        "version": version,
        **{
            key: description[key] for key in ("framework", "task", "label", "classes", "features", "metrics", "lineage")
        },
        "preprocess": description.get("preprocess", []),
        "modules": description.get("modules", []),
    }
    aliases = sorted(
        alias
        for alias, at in (tracker.client.get_registered_model(ref.name).aliases or {}).items()
        if str(at) == str(version)
    )
    return shown, aliases


def list_models(job: Path | None) -> list[dict[str, Any]]:
    """Every registered model's versions: aliases, MLflow run, dataset, metrics, creation time."""
    tracker = tracker_for(storage_for(job))
    rows = []
    for model in tracker.client.search_registered_models():
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for version in sorted(
            tracker.client.search_model_versions(f"name = '{model.name}'"), key=lambda v: int(v.version)
        ):
            run = tracker.client.get_run(version.run_id) if version.run_id else None
            rows.append(
                {
                    "name": model.name,
                    "version": int(version.version),
                    "aliases": aliases.get(str(version.version), []),
                    "run_id": version.run_id,
                    "dataset": run.data.tags.get("raymlp.dataset") if run else None,
                    "metrics": dict(run.data.metrics) if run else {},
                    "created_at": version.creation_timestamp,
                }
            )
    return rows


def promote(text: str, alias: str, job: Path | None) -> dict[str, Any]:
    """Point `alias` at NAME:VERSION; returns the model, alias, version and the previous version."""
    ref = parse_model_ref(text)
    if ref.version is None:
        raise UsageError(f"promote needs NAME:VERSION, got '{text}'")
    tracker = tracker_for(storage_for(job))
    tracker.resolve(ref)
    before = (tracker.client.get_registered_model(ref.name).aliases or {}).get(alias)
    tracker.set_alias(ref.name, alias, ref.version, by="promote")
    return {
        "model": ref.name,
        "alias": alias,
        "version": ref.version,
        "previous_version": None if before is None else int(before),
    }


def remove_model_version(text: str, job: Path | None, *, force: bool) -> dict[str, Any]:
    """Delete NAME:VERSION from the registry (its MLflow run stays) and its lineage from the catalog;
    returns the model, version, the aliases that went with it and the run."""
    ref = parse_model_ref(text)
    if ref.version is None:
        raise UsageError(f"models rm takes NAME:VERSION, got '{text}'")
    storage = storage_for(job)
    removed = tracker_for(storage).remove_version(ref.name, ref.version, force=force)
    from raymlp.catalog import Catalog

    with Catalog(storage.catalog_url) as catalog:
        catalog.delete_model_version(ref.name, ref.version)  # its lineage: the dataset is no longer in use by it
    return removed


def rollback(text: str, alias: str, job: Path | None) -> dict[str, Any]:
    """Move `alias` of model NAME back to its previous version."""
    ref = parse_model_ref(text)
    if ref.alias or ref.version:
        raise UsageError(f"rollback takes the model NAME and --alias ALIAS, got '{text}'")
    before, after = tracker_for(storage_for(job)).rollback_alias(ref.name, alias)
    return {"model": ref.name, "alias": alias, "version": after, "previous_version": before}


def why(text: str, job: Path | None) -> dict[str, Any]:
    """`models why`: how a model version came to be and how far it got: trigger -> data versions -> run -> gates ->
    shadow -> canary -> promotion, from the catalog's records."""
    from raymlp.catalog import Catalog, CatalogError

    ref = parse_model_ref(text)
    storage = storage_for(job)
    tracker = tracker_for(storage)
    version = ref.version
    if version is None:
        version = (
            tracker.alias_version(ref.name, ref.alias)
            if ref.alias
            else max(
                (int(item.version) for item in tracker.client.search_model_versions(f"name='{ref.name}'")), default=None
            )
        )
        if version is None:
            raise UsageError(f"model {ref.name} has no version {'at ' + ref.alias if ref.alias else 'registered'}")
    with Catalog(storage.catalog_url) as catalog:
        recorded = [item for item in catalog.list_model_versions(ref.name) if str(item.model_version) == str(version)]
        if not recorded:
            raise UsageError(f"model {ref.name} has no version {version} in the catalog at {catalog.url}")
        record = recorded[-1]
        steps = catalog.list_model_steps(ref.name, version)
        dataset = None
        if record.dataset_name and record.dataset_version:
            try:
                dataset = catalog.get_dataset_version(record.dataset_name, record.dataset_version)
            except CatalogError:  # removed since
                dataset = None
        firing = None
        trigger_step = next((item for item in steps if item.step == "trigger"), None)
        if trigger_step is not None and trigger_step.details.get("firing"):
            try:
                firing = catalog.get_firing(int(trigger_step.details["firing"]))
            except CatalogError:
                firing = None
    chain: list[dict[str, Any]] = []
    if trigger_step is not None:
        ray_job = f" [Ray job {firing.submission_id}]" if firing is not None and firing.submission_id else ""
        chain.append({"step": "trigger", "outcome": "info", "summary": trigger_step.summary + ray_job})
    data = f"{record.dataset_name}@{record.dataset_version}"
    if dataset is not None and dataset.source.get("parent"):
        appended = dataset.source.get("appended") or []
        data += (
            f" (parent {dataset.source['parent']} + {sum(item.get('rows') or 0 for item in appended)} rows appended)"
        )
    chain.append({"step": "data", "outcome": "info", "summary": data})
    chain.append(
        {"step": "run", "outcome": "info", "summary": f"run {record.run_id} (MLflow run {record.mlflow_run_id})"}
    )
    for item in steps:
        if item.step != "trigger":
            chain.append({"step": item.step, "outcome": item.outcome, "summary": item.summary, "details": item.details})
    return {"model": ref.name, "version": int(version), "chain": chain}
