"""`raymlp monitor MODEL`: a window of the model's capture against a reference, judged, reported
(HTML and JSON under the storage root, a catalog row, an MLflow run, Ray metrics); and
`raymlp data profile` / `data compare` of dataset versions."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raymlp.errors import UsageError
from raymlp.storage import Storage, resolve_storage

from .jobs import load, storage_for
from .models import fetch_model, parse_model_ref, ref_for, tracker_for

REPORTS_FOLDER = "reports"
PROFILES_FOLDER = "profiles"
EXIT_DRIFT = 3


@dataclass(frozen=True)
class MonitorRequest:
    """What `raymlp monitor` was asked (None: the job's `monitor:` default, else the built-in one)."""

    model: str
    window: str | None = None
    since: str | None = None
    until: str | None = None
    rows: int | None = None
    reference: str | None = None
    drift_share: float | None = None
    correction: str | None = None
    job: Path | None = None
    address: str | None = None
    output: Path | None = None


@dataclass(frozen=True)
class MonitorOutcome:
    report: dict[str, Any]
    drifted: bool
    html: str  # where the report was written under the storage root
    fail_on_drift: bool


def _settings(request: MonitorRequest, job: Any) -> tuple[Any, Any]:
    """(the job's monitor section or the defaults, the analysis settings); `job`: the loaded job file or None."""
    from raymlp.config.schema import MonitorConfig
    from raymlp.monitor.analysis import Settings

    config = (job.config.monitor if job is not None else None) or MonitorConfig()
    settings = Settings(
        drift_share=request.drift_share if request.drift_share is not None else config.drift_share,
        correction=request.correction or config.correction,
        columns={name: rule.model_dump(exclude_none=True) for name, rule in config.columns.items()},
        buckets=config.buckets,
    )
    return config, settings


def _window(request: MonitorRequest, config: Any) -> Any:
    from raymlp.monitor.captures import parse_window

    explicit = request.window or request.since or request.until
    window = request.window if explicit else config.window
    return parse_window(window, request.since, request.until, request.rows)


def _package_and_versions(storage: Storage, text: str, root: str, window: Any) -> tuple[Any, str, list[str], Any]:
    """(the package judged against, the model's name, the versions analysed, the window's files)."""
    from raymlp.monitor.captures import window_files
    from raymlp.package import load_package

    ref = parse_model_ref(text)
    tracker = tracker_for(storage)
    if ref.version is not None or ref.alias is not None:
        path, version = fetch_model(storage, ref, tracker)
        return load_package(path), ref.name, [str(version)], window_files(root, ref.name, window, [str(version)])
    found = window_files(root, ref.name, window)
    if not found.versions:
        from raymlp.monitor.analysis import empty_window_problem

        fetch_model(storage, ref, tracker)  # an unknown model says so, with the models there are
        raise empty_window_problem(ref.name, window, found)
    numbered = sorted((int(version) for version in found.versions if version.isdigit()), reverse=True)
    if not numbered:
        raise UsageError(
            f"model {ref.name}: its capture holds only {', '.join(sorted(found.versions))}, the endpoint of a run "
            "whose model was not registered; monitoring judges registered versions (give the job a register: section)"
        )
    path, _ = fetch_model(storage, ref_for(ref.name, str(numbered[0])), tracker)
    return load_package(path), ref.name, [str(version) for version in sorted(numbered)], found


def _reference(storage: Storage, package: Any, spec: str | None, root: str, model: str) -> Any:
    """The reference the window is judged against: the training split (default), a dataset version,
    or a capture window (`capture:SINCE..UNTIL`). Features keep their stored types (an int stays an
    int, as in the capture); scoring casts them as the endpoint does."""
    from raymlp.catalog import Catalog
    from raymlp.data.versions import read_version_table
    from raymlp.monitor.analysis import reference_of

    features = package.feature_names
    if spec and spec.startswith("capture:"):
        from raymlp.monitor.captures import Window, flattened, parse_time, read_window, window_files

        since, _, until = spec.removeprefix("capture:").partition("..")
        window = Window(
            parse_time(since, "--reference capture:SINCE") if since else None,
            parse_time(until, "--reference capture:..UNTIL") if until else None,
        )
        found = window_files(root, model, window)
        if not found.files:
            raise UsageError(f"--reference {spec}: no captured rows of {model} in that window")
        table = flattened(read_window(found.files, window))
        present = [name for name in features if name in table.column_names]
        return reference_of(package, table.select(present), f"{model} capture {spec.removeprefix('capture:')}")
    lineage = package.description.get("lineage") or {}
    with Catalog(storage.catalog_url) as catalog:
        if spec:
            from raymlp.services.datasets import parse_dataset_ref

            name, version = parse_dataset_ref(spec)
            record = catalog.get_dataset_version(name, version)
            table = read_version_table(record.path, record.manifest)
            missing = [feature for feature in features if feature not in table.column_names]
            present = [feature for feature in features if feature in table.column_names]
            described = f"{record.name}@{record.version}"
            if missing:
                described += f" (without {', '.join(missing)})"
            return reference_of(package, table.select(present), described)
        dataset = lineage.get("dataset") or {}
        if not dataset.get("name"):
            raise UsageError(f"model {model}: its package names no training dataset; give --reference DATASET@VERSION")
        record = catalog.get_dataset_version(dataset["name"], dataset["version"])
        table = read_version_table(record.path, record.manifest)
    return _training_split(package, table, lineage, f"{record.name}@{record.version}")


def _training_split(package: Any, table: Any, lineage: dict[str, Any], described: str) -> Any:
    """The rows the model was trained on (its recorded split of the version), and the validation
    rows that calibrate the confidence estimate."""
    import pyarrow as pa

    from raymlp.config.schema import SplitConfig
    from raymlp.data.split import split_frame
    from raymlp.monitor.analysis import reference_of

    label = package.description.get("label")
    features = package.feature_names
    frame = table.to_pandas()
    if label in frame.columns:
        frame = frame[frame[label].notna()]
    split = lineage.get("split")
    if split is None or label not in frame.columns:
        whole = pa.Table.from_pandas(frame[features], preserve_index=False)
        return reference_of(package, whole, f"{described} (every row: the package records no split)")
    classification = package.description["task"] == "classification"
    train, validation, _ = split_frame(
        frame, SplitConfig.model_validate(split), frame[label] if classification else None
    )
    as_table = lambda part: pa.Table.from_pandas(part[features], preserve_index=False)  # noqa: E731
    return reference_of(
        package,
        as_table(train),
        f"{described}, training split ({len(train)} rows)",
        validation=as_table(validation) if classification and len(validation) else None,
        labels=pa.array(validation[label].astype(str).tolist()) if classification and len(validation) else None,
    )


def _labels(root: str, model: str) -> dict[str, list[Any]] | None:
    """The model's joined labels (the latest per request and record), or None."""
    from raymlp.monitor.labels import read_labels

    table = read_labels(root, model)
    if table is None or not table.num_rows:
        return None
    return {
        "request_id": table.column("request_id").to_pylist(),
        "record": table.column("record").to_pylist(),
        "label": [str(value) for value in table.column("label").to_pylist()],
    }


def monitor(request: MonitorRequest) -> MonitorOutcome:
    """Analyse a window of the model's capture against its reference and record the report."""
    from raymlp.monitor.analysis import bucket_edges, build_report, empty_window_problem, scan_window
    from raymlp.runtime import ray_runtime

    parse_model_ref(request.model)  # a malformed reference is refused before anything is opened
    job = load(request.job) if request.job is not None else None  # read once: its monitor: and storage:
    config, settings = _settings(request, job)
    window = _window(request, config)
    storage = resolve_storage(job.config.storage if job is not None else None)
    root = str(storage.root)
    package, model, versions, found = _package_and_versions(storage, request.model, root, window)
    if not found.files:
        raise empty_window_problem(model, window, found)
    unknown = [name for name in settings.columns if name not in package.feature_names and name != "prediction"]
    if unknown:
        raise UsageError(
            f"monitor.columns: {', '.join(unknown)} are not features of {model} "
            f"(features: {', '.join(package.feature_names)}, or prediction)"
        )
    if window.rows:
        from raymlp.monitor.captures import last_rows

        window = last_rows(found.files, window)
    reference = _reference(storage, package, request.reference or config.reference, root, model)
    edges = bucket_edges(window, found, settings.buckets)
    plan = {
        "since": window.since.isoformat() if window.since else None,
        "until": window.until.isoformat() if window.until else None,
        "features": package.feature_names,
        "classes": [str(name) for name in package.classes] if package.classes else [],
        "edges": edges,
        "calibration": reference.calibration,
        "labels": _labels(root, model),
    }
    with ray_runtime(request.address):  # the metrics are published while connected to Ray
        summary = scan_window(found, plan)
        if not summary.rows:
            raise empty_window_problem(model, window, found)
        analysis = build_report(
            model=model,
            versions=versions,
            package=package,
            window=window,
            files=found,
            summary=summary,
            reference=reference,
            settings=settings,
            edges=edges,
        )
        html = _record(storage, model, package, analysis, window, request.output)
    return MonitorOutcome(analysis.report, analysis.drifted, html, config.fail_on_drift)


def _record(storage: Storage, model: str, package: Any, analysis: Any, window: Any, output: Path | None) -> str:
    """The report as HTML and JSON, and the window's profile (with its sketches, to merge or compare
    later), under ROOT/reports/monitor/MODEL/, a catalog row, an MLflow run
    in the training job's experiment, and the Ray metrics; returns the HTML's location."""
    import json
    import uuid

    from raymlp.catalog import Catalog
    from raymlp.monitor.html import render_report
    from raymlp.storage import files

    report = analysis.report
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = files.join(str(storage.root), REPORTS_FOLDER, "monitor", model, f"{stamp}-{uuid.uuid4().hex[:6]}")
    html = render_report(report)
    files.write_text(files.join(folder, "report.html"), html)
    files.write_text(files.join(folder, "report.json"), json.dumps(report, indent=1, default=str))
    files.write_text(files.join(folder, "profile.json"), json.dumps(analysis.profile.to_json()))
    if output is not None:
        files.write_text(str(output), html)
    drift = report["drift"]
    summary = {
        "columns_drifted": [column["column"] for column in drift["columns"] if column["drifted"]],
        "prediction_drifted": bool(drift["prediction"] and drift["prediction"]["drifted"]),
        "anomalies": len(report["anomalies"]),
        "measured": (report["performance"]["measured"] or {}).get("metrics"),
        "estimated": (report["performance"]["estimated"] or {}).get("metrics"),
    }
    with Catalog(storage.catalog_url) as catalog:
        catalog.record_monitor_report(
            model,
            report["versions"],
            window.since,
            window.until,
            report["window"]["rows"],
            report["reference"]["description"],
            drift["share"],
            analysis.drifted,
            summary,
            files.join(folder, "report.html"),
        )
    _log_to_mlflow(storage, model, package, report, folder)
    _publish_metrics(model, package, report)
    return files.join(folder, "report.html")


def _log_to_mlflow(storage: Storage, model: str, package: Any, report: dict[str, Any], folder: str) -> None:
    from raymlp.storage import files

    tracker = tracker_for(storage)
    experiment = ((package.description.get("lineage") or {}).get("job") or {}).get("name") or model
    run = tracker.start_run(
        experiment,
        f"monitor {model} {report['window']['description']}",
        {"raymlp.kind": "monitor", "raymlp.model": model, "raymlp.versions": ",".join(report["versions"])},
    )
    try:
        row = {"drift_share": report["drift"]["share"], "rows": float(report["window"]["rows"])}
        for column in report["drift"]["columns"]:
            row[f"drift_score.{column['column']}"] = float(column["score"])
        for kind in ("measured", "estimated"):
            for name, value in ((report["performance"][kind] or {}).get("metrics") or {}).items():
                row[f"{kind}_{name}"] = float(value)
        tracker.log_metrics(run, [row])
        for name in ("report.html", "report.json"):
            tracker.log_artifact(run, files.join(folder, name))
    except Exception:
        tracker.finish(run, "FAILED")
        raise
    tracker.finish(run)


def _publish_metrics(model: str, package: Any, report: dict[str, Any]) -> None:
    from raymlp import metrics

    job = ((package.description.get("lineage") or {}).get("job") or {}).get("name", "")
    version = ",".join(report["versions"])
    base = metrics.tags(job, "monitor", model=model, version=version)
    metrics.set_gauge(metrics.MONITOR_ROWS, report["window"]["rows"], base)
    metrics.set_gauge(metrics.MONITOR_DRIFT_SHARE, report["drift"]["share"], base)
    for column in report["drift"]["columns"]:
        metrics.set_gauge(
            metrics.MONITOR_DRIFT_SCORE, column["score"], {**base, "column": column["column"], "test": column["test"]}
        )
        metrics.set_gauge(
            metrics.MONITOR_COLUMN_DRIFTED, 1.0 if column["drifted"] else 0.0, {**base, "column": column["column"]}
        )
    for kind in ("measured", "estimated"):
        for name, value in ((report["performance"][kind] or {}).get("metrics") or {}).items():
            metrics.set_gauge(metrics.MONITOR_PERFORMANCE, value, {**base, "metric": name, "kind": kind})


def join_labels(
    text: str, input_path: str, key: str, label: str, job: Path | None, address: str | None
) -> dict[str, Any]:
    """`raymlp monitor labels`: the model's capture joined with the labels file (Ray Data's join)."""
    from dataclasses import asdict

    from raymlp.monitor.captures import Window, window_files
    from raymlp.monitor.labels import join_labels as join
    from raymlp.runtime import ray_runtime

    ref = parse_model_ref(text)
    storage = storage_for(job)
    root = str(storage.root)
    versions = None
    if ref.version is not None or ref.alias is not None:
        versions = [str(fetch_model(storage, ref)[1])]
    found = window_files(root, ref.name, Window(), versions)
    if not found.files:
        if not found.versions:
            fetch_model(storage, ref)  # an unknown model says so
        raise UsageError(f"model {ref.name}: nothing captured yet to join labels to")
    with ray_runtime(address):
        joined = join(root, ref.name, input_path, key, label, found.files)
    return {"model": ref.name, **asdict(joined), "skipped_files": found.skipped}


def replay(
    text: str, window: str | None, since: str | None, until: str | None, job: Path | None, address: str | None
) -> dict[str, Any]:
    """`raymlp monitor replay`: each version's captured records through batch predict (Ray Data),
    every answer compared with the endpoint's by request id and record."""
    from raymlp.monitor.captures import parse_window, window_files
    from raymlp.monitor.replay import replay_version
    from raymlp.runtime import ray_runtime
    from raymlp.storage import files as storage_files

    ref = parse_model_ref(text)
    parsed = parse_window(window, since, until)
    storage = storage_for(job)
    root = str(storage.root)
    tracker = tracker_for(storage)
    if ref.version is not None or ref.alias is not None:
        versions = [str(fetch_model(storage, ref, tracker)[1])]
    else:
        versions = window_files(root, ref.name, parsed).versions
        if not versions:
            fetch_model(storage, ref, tracker)
            raise UsageError(f"model {ref.name}: no captured rows in the window ({parsed.description})")
    results = []
    with ray_runtime(address):
        for version in sorted(versions, key=lambda value: (len(value), value)):
            found = window_files(root, ref.name, parsed, [version])
            if not found.files:
                continue
            package, _ = fetch_model(storage, ref_for(ref.name, version), tracker)
            scratch = storage_files.join(root, "work") if storage.remote else str(storage.folder("work"))
            results.append(replay_version(package, version, found, parsed, scratch))
    if not results:
        raise UsageError(f"model {ref.name}: no captured rows in the window ({parsed.description})")
    return {"model": ref.name, "window": parsed.to_json(), "versions": results}


def _dataset_profile(storage: Storage, catalog: Any, ref: str) -> tuple[Any, Any]:
    """(the catalog record, the profile) of NAME[@VERSION]: read from ROOT/profiles when computed
    before (a version never changes), else computed on Ray Data over its parts and stored."""
    import json

    from raymlp.monitor.profile import Profile, profile_of_dataset
    from raymlp.storage import files

    from .datasets import parse_dataset_ref

    name, version = parse_dataset_ref(ref)
    record = catalog.get_dataset_version(name, version)
    stored = files.join(
        str(storage.root),
        PROFILES_FOLDER,
        "datasets",
        record.name,
        f"v{record.version}-{record.content_digest[:16]}.json",
    )
    if files.exists(stored):
        return record, Profile.from_json(files.read_json(stored))
    from raymlp.monitor.captures import dataset_of

    parts = [files.join(record.path, item["path"]) for item in record.manifest["files"]]
    profile = profile_of_dataset(dataset_of(parts, one_operator=True), f"{record.name}@{record.version}")
    files.write_text(stored, json.dumps(profile.to_json()))
    return record, profile


def profile_dataset(ref: str, job: Path | None, address: str | None) -> dict[str, Any]:
    """`raymlp data profile NAME[@VERSION]`: per-column statistics of a dataset version."""
    from raymlp.catalog import Catalog
    from raymlp.runtime import ray_runtime

    from .datasets import parse_dataset_ref

    parse_dataset_ref(ref)
    storage = storage_for(job)
    with Catalog(storage.catalog_url) as catalog, ray_runtime(address):
        record, profile = _dataset_profile(storage, catalog, ref)
    return {
        "dataset": f"{record.name}@{record.version}",
        "rows": profile.rows,
        "columns": [column.summary() for column in profile.columns.values()],
    }


def compare_datasets(first: str, second: str, job: Path | None, address: str | None) -> dict[str, Any]:
    """`raymlp data compare A B`: B's anomalies against A and the drift of every column they share."""
    from raymlp.catalog import Catalog
    from raymlp.monitor.analysis import Settings, drift_results
    from raymlp.monitor.anomalies import anomalies
    from raymlp.runtime import ray_runtime

    from .datasets import parse_dataset_ref

    parse_dataset_ref(first)
    parse_dataset_ref(second)
    storage = storage_for(job)
    with Catalog(storage.catalog_url) as catalog, ray_runtime(address):
        reference_record, reference = _dataset_profile(storage, catalog, first)
        current_record, current = _dataset_profile(storage, catalog, second)
    shared = [name for name in reference.columns if name in current.columns]
    results = drift_results(reference, current, shared, Settings())
    return {
        "reference": f"{reference_record.name}@{reference_record.version}",
        "current": f"{current_record.name}@{current_record.version}",
        "rows": {"reference": reference.rows, "current": current.rows},
        "anomalies": [anomaly.to_json() for anomaly in anomalies(reference, current)],
        "drift": [result.to_json() for result in results],
    }
