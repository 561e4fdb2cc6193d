"""One monitoring analysis: a capture window against a reference, in one pass over the window on
Ray Data (each block: its profile, its predictions per time bucket, its labelled rows), merged here
into drift per column, prediction drift, anomalies, measured and estimated performance, and the
report's document (`raymlp.monitor-report/1`, drawn by `monitor.html`)."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raymlp.errors import UsageError

from .anomalies import anomalies
from .captures import Window, WindowFiles
from .drift import ColumnResult, column_drift, corrected, distribution
from .profile import Profile

REPORT_FORMAT = "raymlp.monitor-report/1"
PREDICTION = "prediction"
#: The estimate's assumption, written in every report that has one.
CBPE_ASSUMPTION = (
    "Estimated without labels from the model's own confidence (confidence-based performance estimation): "
    "each row counts as correct with the probability its predicted class was given, after calibrating "
    "confidence to accuracy on the reference's labelled validation rows. It assumes that P(label | features) "
    "is what it was in the reference (covariate shift only, no concept drift), and that the calibration holds."
)


@dataclass
class Reference:
    """What the window is compared with: profiles of the features and of the model's predictions on them."""

    profile: Profile
    description: str
    calibration: tuple[list[float], list[float]] | None = None
    calibration_rows: int = 0


@dataclass(frozen=True)
class Settings:
    """How drift is judged (`monitor:` in a job file, or command-line options)."""

    drift_share: float = 0.5
    correction: str = "none"
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)  # column -> {test, threshold}
    buckets: int = 24


# --- the reference ---------------------------------------------------------------------------


def confidence_calibration(probabilities: np.ndarray, correct: np.ndarray) -> tuple[list[float], list[float]] | None:
    """Isotonic map from a row's top probability to the chance it is right; None with too few rows."""
    if len(correct) < 20:
        return None
    from sklearn.isotonic import IsotonicRegression

    regression = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    regression.fit(probabilities.max(axis=1), correct.astype(np.float64))
    return regression.X_thresholds_.tolist(), regression.y_thresholds_.tolist()


def reference_of(
    package: Any, features: Any, description: str, validation: Any = None, labels: Any = None
) -> Reference:
    """The reference of an Arrow table of feature rows (scored by `package` for the prediction's
    profile); `validation` and its `labels` (a labelled table) calibrate the confidence estimate."""
    profile = Profile(source=description)
    if features.num_rows and set(package.feature_names) <= set(features.column_names):
        predictions = package.predict_table(features)
        profile.add_table(features.append_column(PREDICTION, predictions.column(PREDICTION)))
    elif features.num_rows:  # a reference without every feature: its schema is reported, no predictions
        profile.add_table(features)
    calibration, rows = None, 0
    if validation is not None and labels is not None and validation.num_rows and package.classes:
        scored = package.predict_table(validation)
        names = [f"probability_{name}" for name in package.classes]
        probabilities = np.column_stack([scored.column(name).to_numpy() for name in names])
        truth = [str(value) for value in labels.to_pylist()]
        predicted = [str(value) for value in scored.column(PREDICTION).to_pylist()]
        correct = np.array([a == b for a, b in zip(truth, predicted)])
        calibration = confidence_calibration(probabilities, correct)
        rows = len(correct) if calibration else 0
    return Reference(profile, description, calibration, rows)


# --- one pass over the window ----------------------------------------------------------------


def _features_and_prediction(block: Any, features: list[str]) -> Any:
    import pyarrow as pa

    struct = block.column("features").combine_chunks()
    names = [struct.type.field(index).name for index in range(struct.type.num_fields)]
    columns = {name: struct.field(names.index(name)) for name in features if name in names}
    columns[PREDICTION] = block.column(PREDICTION)
    return pa.table(columns)


def _confidence(block: Any, classes: list[str]) -> np.ndarray | None:
    if "probabilities" not in block.column_names or not classes:
        return None
    struct = block.column("probabilities").combine_chunks()
    names = [struct.type.field(index).name for index in range(struct.type.num_fields)]
    columns = [struct.field(names.index(name)).to_numpy(zero_copy_only=False) for name in classes if name in names]
    if not columns:
        return None
    return np.nan_to_num(np.column_stack(columns).astype(np.float64))


def window_partial(block: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """What one block of the window contributes (plain JSON, merged by `merge_partials`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .captures import in_window

    window = Window(
        datetime.datetime.fromisoformat(plan["since"]) if plan["since"] else None,
        datetime.datetime.fromisoformat(plan["until"]) if plan["until"] else None,
    )
    block = in_window(block, window)
    rows = block.num_rows
    partial: dict[str, Any] = {"rows": rows, "requests": 0, "profile": None, "buckets": {}, "labelled": None}
    if not rows:
        return partial
    partial["requests"] = len(pc.unique(block.column("request_id")))
    partial["profile"] = Profile(source="window")
    partial["profile"].add_table(_features_and_prediction(block, plan["features"]))
    partial["profile"] = partial["profile"].to_json()
    times = pc.cast(block.column("time"), pa.int64()).to_numpy()
    edges = np.asarray(plan["edges"], dtype=np.int64)
    bucket = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, max(len(edges) - 2, 0))
    predictions = block.column(PREDICTION).to_pylist()
    classes = plan["classes"]
    confidence = _confidence(block, classes)
    calibrated = None
    if confidence is not None:
        top = confidence.max(axis=1)
        calibration = plan.get("calibration")
        calibrated = np.interp(top, calibration[0], calibration[1]) if calibration else top
    for index in np.unique(bucket):
        mask = bucket == index
        entry: dict[str, Any] = {"rows": int(mask.sum())}
        chosen = [value for value, keep in zip(predictions, mask) if keep]
        if classes:
            counts: dict[str, int] = {}
            for value in chosen:
                counts[str(value)] = counts.get(str(value), 0) + 1
            entry["counts"] = counts
        else:
            numbers = np.array([np.nan if value is None else value for value in chosen], dtype=np.float64)
            entry["sum"] = float(np.nansum(numbers))
        if calibrated is not None:
            entry["expected_correct"] = float(calibrated[mask].sum())
        partial["buckets"][str(int(index))] = entry
    labels = plan.get("labels")
    if labels:
        keyed = pa.table(
            {
                "request_id": block.column("request_id"),
                "record": block.column("record"),
                "time": pc.cast(block.column("time"), pa.int64()),
                PREDICTION: block.column(PREDICTION),
            }
        )
        if confidence is not None:
            keyed = keyed.append_column("__row", pa.array(np.arange(rows)))
        truth = pa.table({"request_id": labels["request_id"], "record": labels["record"], "label": labels["label"]})
        truth = truth.cast(pa.schema([("request_id", pa.string()), ("record", pa.int32()), ("label", pa.string())]))
        joined = keyed.join(truth, ["request_id", "record"], join_type="inner")
        if joined.num_rows:
            found: dict[str, Any] = {
                "time": joined.column("time").to_pylist(),
                "label": joined.column("label").to_pylist(),
                "prediction": joined.column(PREDICTION).to_pylist(),
            }
            if confidence is not None:
                found["probabilities"] = confidence[joined.column("__row").to_numpy()].tolist()
            partial["labelled"] = found
    return partial


def _partial_block(block: Any, plan: dict[str, Any]) -> Any:
    """A Ray Data task: one block's partial, as a one-row table of its JSON."""
    import pyarrow as pa

    return pa.table({"partial": [json.dumps(window_partial(block, plan))]})


@dataclass
class WindowSummary:
    rows: int = 0
    requests: int = 0
    profile: Profile = field(default_factory=Profile)
    buckets: dict[int, dict[str, Any]] = field(default_factory=dict)
    labelled: dict[str, list[Any]] = field(default_factory=lambda: {"time": [], "label": [], "prediction": []})


def merge_partials(partials: Any) -> WindowSummary:
    summary = WindowSummary()
    for partial in partials:
        summary.rows += partial["rows"]
        summary.requests += partial["requests"]
        if partial["profile"]:
            summary.profile.merge(Profile.from_json(partial["profile"]))
        for key, entry in partial["buckets"].items():
            into = summary.buckets.setdefault(int(key), {"rows": 0})
            into["rows"] += entry["rows"]
            for name in ("sum", "expected_correct"):
                if name in entry:
                    into[name] = into.get(name, 0.0) + entry[name]
            if "counts" in entry:
                counts = into.setdefault("counts", {})
                for value, count in entry["counts"].items():
                    counts[value] = counts.get(value, 0) + count
        if partial["labelled"]:
            for name, values in partial["labelled"].items():
                summary.labelled.setdefault(name, []).extend(values)
    return summary


def bucket_edges(window: Window, files: WindowFiles, buckets: int) -> list[int]:
    """Edges (epoch µs) of the time buckets the report's charts use: the window's bounds, or the
    first and last capture times the files' footers record."""
    start = window.since.timestamp() if window.since else files.first_time
    end = window.until.timestamp() if window.until else files.last_time
    if start is None or end is None:
        return [0, 1]
    end = max(end, start + 1.0)
    return [int(value * 1_000_000) for value in np.linspace(start, end + 1e-6, buckets + 1)]


def scan_window(files: WindowFiles, plan: dict[str, Any]) -> WindowSummary:
    """The window's partials computed on Ray Data (one task per block) and merged here."""
    from .captures import dataset_of

    dataset = dataset_of(files.files, one_operator=True)
    task: Any = _partial_block
    partials = dataset.map_batches(task, fn_args=(plan,), batch_format="pyarrow", batch_size=None, zero_copy_batch=True)
    found: list[dict[str, Any]] = []
    batch: Any
    for batch in partials.iter_batches(batch_format="pyarrow", batch_size=None):
        found.extend(json.loads(text) for text in batch.column("partial").to_pylist())
    return merge_partials(found)


# --- judging and the report ------------------------------------------------------------------


def drift_results(reference: Profile, current: Profile, columns: list[str], settings: Settings) -> list[ColumnResult]:
    results = []
    for name in columns:
        ref, cur = reference.columns.get(name), current.columns.get(name)
        if ref is None or cur is None or ref.kind != cur.kind:
            continue  # reported as an anomaly
        override = settings.columns.get(name, {})
        result = column_drift(ref, cur, override.get("test"), override.get("threshold"))
        if result is not None:
            results.append(result)
    return corrected(results, settings.correction)


def measured_performance(task: str, classes: list[str] | None, labelled: dict[str, list[Any]]) -> dict[str, Any] | None:
    """Metrics on the labelled rows, by the definitions training uses (`train.metrics`)."""
    from raymlp.train.metrics import classification_metrics, regression_metrics

    if not labelled["label"]:
        return None
    if task == "classification" and classes:
        codes_of = {str(name): index for index, name in enumerate(classes)}
        keep = [index for index, value in enumerate(labelled["label"]) if str(value) in codes_of]
        if not keep:
            return {"rows": 0, "unknown_labels": len(labelled["label"]), "metrics": {}}
        codes = np.array([codes_of[str(labelled["label"][index])] for index in keep])
        if "probabilities" in labelled and labelled["probabilities"]:
            probabilities = np.asarray([labelled["probabilities"][index] for index in keep], dtype=np.float64)
        else:
            probabilities = np.zeros((len(keep), len(classes)))
            for row, index in enumerate(keep):
                probabilities[row, codes_of.get(str(labelled["prediction"][index]), 0)] = 1.0
        metrics = classification_metrics(codes, probabilities, "live")
        return {
            "rows": len(keep),
            "unknown_labels": len(labelled["label"]) - len(keep),
            "metrics": {key.removeprefix("live_"): value for key, value in metrics.items()},
        }
    truth = np.array([float(value) for value in labelled["label"]])
    predicted = np.array([float(value) for value in labelled["prediction"]])
    metrics = regression_metrics(truth, predicted, "live")
    return {
        "rows": len(truth),
        "unknown_labels": 0,
        "metrics": {key.removeprefix("live_"): v for key, v in metrics.items()},
    }


def _iso(microseconds: int) -> str:
    return datetime.datetime.fromtimestamp(microseconds / 1_000_000, datetime.UTC).isoformat(timespec="seconds")


@dataclass
class Analysis:
    report: dict[str, Any]
    drifted: bool
    profile: Profile  # the window's, with its sketches (stored beside the report)


def build_report(
    *,
    model: str,
    versions: list[str],
    package: Any,
    window: Window,
    files: WindowFiles,
    summary: WindowSummary,
    reference: Reference,
    settings: Settings,
    edges: list[int],
) -> Analysis:
    """The report's document from a merged window and its reference."""
    task = package.description["task"]
    classes = [str(name) for name in package.classes] if package.classes else None
    features = package.feature_names
    current = summary.profile
    results = drift_results(reference.profile, current, features, settings)
    drifted_count = sum(result.drifted for result in results)
    share = drifted_count / len(results) if results else 0.0
    prediction = None
    if PREDICTION in reference.profile.columns and PREDICTION in current.columns:
        override = settings.columns.get(PREDICTION, {})
        prediction = column_drift(
            reference.profile.columns[PREDICTION],
            current.columns[PREDICTION],
            override.get("test"),
            override.get("threshold"),
        )
    feature_reference = Profile(
        {name: column for name, column in reference.profile.columns.items() if name != PREDICTION},
        reference.profile.rows,
    )
    feature_current = Profile(
        {name: column for name, column in current.columns.items() if name != PREDICTION}, current.rows
    )
    found_anomalies = anomalies(feature_reference, feature_current, columns=features)
    order = sorted(results, key=lambda result: (not result.drifted, result.column))
    distributions = {
        result.column: distribution(reference.profile.columns[result.column], current.columns[result.column])
        for result in order
    }
    measured = measured_performance(task, classes, summary.labelled)
    measured_by_bucket: dict[int, float] = {}  # accuracy of the labelled rows of each time bucket
    if measured and task == "classification" and summary.labelled["label"] and classes:
        times = np.asarray(summary.labelled["time"], dtype=np.int64)
        right = np.array([str(a) == str(b) for a, b in zip(summary.labelled["label"], summary.labelled["prediction"])])
        spots = np.clip(np.searchsorted(np.asarray(edges), times, side="right") - 1, 0, len(edges) - 2)
        measured_by_bucket = {int(index): float(right[spots == index].mean()) for index in np.unique(spots)}
    over_time, performance_over_time = [], []
    estimated_total, estimated_rows = 0.0, 0
    for index in range(len(edges) - 1):
        entry = summary.buckets.get(index)
        if not entry:
            continue
        point: dict[str, Any] = {"start": _iso(edges[index]), "end": _iso(edges[index + 1]), "rows": entry["rows"]}
        if classes:
            point["shares"] = {name: entry.get("counts", {}).get(name, 0) / entry["rows"] for name in classes}
        else:
            point["mean"] = entry.get("sum", 0.0) / entry["rows"]
        over_time.append(point)
        if "expected_correct" in entry:
            estimated_total += entry["expected_correct"]
            estimated_rows += entry["rows"]
        performance_over_time.append(
            {
                "start": point["start"],
                "end": point["end"],
                "rows": entry["rows"],
                "measured": measured_by_bucket.get(index),
                "estimated": entry["expected_correct"] / entry["rows"] if "expected_correct" in entry else None,
            }
        )
    estimated = None
    if task == "classification" and estimated_rows:
        note = CBPE_ASSUMPTION
        if reference.calibration is None:
            note += " No labelled validation rows were available: the confidence is used uncalibrated."
        else:
            note += f" Calibrated on {reference.calibration_rows} rows."
        estimated = {
            "rows": estimated_rows,
            "metrics": {"accuracy": estimated_total / estimated_rows},
            "assumption": note,
        }
    metric = "accuracy" if task == "classification" else "rmse"
    report = {
        "format": REPORT_FORMAT,
        "model": model,
        "versions": versions,
        "task": task,
        "label": package.description.get("label"),
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "window": {**window.to_json(), "rows": summary.rows, "requests": summary.requests},
        "reference": {"description": reference.description, "rows": reference.profile.rows},
        "drift": {
            "share": share,
            "share_threshold": settings.drift_share,
            "drifted": bool(results) and share >= settings.drift_share,
            "correction": settings.correction,
            "columns_tested": len(results),
            "columns_drifted": drifted_count,
            "columns": [result.to_json() for result in order],
            "prediction": prediction.to_json() if prediction else None,
        },
        "anomalies": [anomaly.to_json() for anomaly in found_anomalies],
        "distributions": distributions,
        "predictions_over_time": over_time,
        "performance": {
            "metric": metric,
            "measured": measured,
            "estimated": estimated,
            "over_time": performance_over_time,
        },
        "profile": [column.summary() for name, column in current.columns.items() if name != PREDICTION],
        "skipped_files": files.skipped,
    }
    return Analysis(report, report["drift"]["drifted"], current)


def empty_window_problem(model: str, window: Window, files: WindowFiles) -> UsageError:
    where = f"versions {', '.join(sorted(files.versions))}" if files.versions else "no version"
    return UsageError(
        f"model {model}: no captured rows in the window ({window.description}); the capture holds {where}"
        + (f", {len(files.skipped)} unreadable file(s)" if files.skipped else "")
        + ". Widen --window, or check that serve.capture (or predict --capture) is on"
    )
