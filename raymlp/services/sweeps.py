"""A job's sweeps as the catalog and their run folders record them: the newest finished sweep's
results (`raymlp tune results`) and the newest unfinished one (`raymlp tune --resume`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raymlp.errors import UsageError
from raymlp.storage import RunFolder, Storage
from raymlp.storage import files as storage_files

from .jobs import load, storage_for


def _runs(storage: Storage, job_name: str) -> list[Any]:
    """The job's runs in the catalog, newest first."""
    from raymlp.catalog import Catalog

    with Catalog(storage.catalog_url) as catalog:
        return catalog.list_runs(job_name, limit=1000)


def unfinished_sweep(job: Path, loaded: Any) -> str:
    """The id of the newest sweep of the job that did not succeed and whose Tune state was saved."""
    storage = storage_for(job)
    runs = [run for run in _runs(storage, loaded.config.name) if "tune" in run.stages]
    for run in runs:
        if run.status != "succeeded" and storage.run(run.id).has(RunFolder.SWEEP_STARTED):
            return run.id
    raise UsageError(
        f"tune --resume: job '{loaded.config.name}' has no unfinished sweep to go on with "
        f"({len(runs)} sweep(s), all finished or never started)"
    )


def sweep_results(job: Path) -> dict[str, Any]:
    """The newest finished sweep's results file (tune_results.json) of the job."""
    loaded = load(job)
    storage = storage_for(job)
    runs = _runs(storage, loaded.config.name)
    found = next((storage.run(run.id) for run in runs if storage.run(run.id).has(RunFolder.TUNE_RESULTS)), None)
    if found is None:
        raise UsageError(f"tune results: job '{loaded.config.name}' has no finished sweep (run: raymlp tune {job})")
    return storage_files.read_json(found.tune_results)


def results_table(results: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    """(title, columns, rows) of a sweep's trials, best first: parameters, metric, state, epochs, MLflow run."""
    from raymlp.tune.report import ordered_trials

    paths = list(results["trials"][0]["params"]) if results["trials"] else []
    ordered = ordered_trials(results)
    title = (
        f"sweep {results['run_id']} of {results['job']}: {results['metric']} ({results['mode']}), {len(ordered)} trials"
    )
    rows = [
        [
            row["trial"],
            *[json.dumps(row["params"][path]) for path in paths],
            "-" if row["metric"] is None else f"{row['metric']:.4f}",
            row["state"],
            row["epochs"],
            row.get("mlflow_run_id") or "",
        ]
        for row in ordered
    ]
    return title, ["trial", *paths, results["metric"], "state", "epochs", "MLflow run"], rows
