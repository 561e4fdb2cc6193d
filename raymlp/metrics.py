"""raymlp's progress as Ray metrics, and the names of the Ray tasks and actors raymlp starts.

The stages publish what they do through `ray.util.metrics`; Ray's metrics agent on each node
exports it for Prometheus (names get Ray's `ray_` prefix, counters a `_total` suffix:
`ray_raymlp_rows_collected_total{job="wine-quickstart",stage="collect",...}`; once Prometheus scrapes it,
`job` is `exported_job`, beside Prometheus' own `job`), which the
dashboard's Metrics view and Grafana read. Every metric carries the tags `job` (the job's name)
and `stage`.

A metric is made once per process, on first use, and only where this process is connected to
Ray: without Ray (a collect on a laptop) every call here does nothing and imports nothing. A
failure to record never reaches the stage: metrics are best effort.

Ray exports a process's values every `metrics_report_interval_ms` (10 s by default) and when the
process shuts down; a process that is killed (Ray Train kills its workers when a run ends) loses
what it recorded since its last export.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

# --- names ----------------------------------------------------------------------------------
ROWS_READ = "raymlp_rows_read"
ROWS_COLLECTED = "raymlp_rows_collected"
ROWS_CONVERTED = "raymlp_rows_converted"
ROWS_QUARANTINED = "raymlp_rows_quarantined"
TRAIN_EPOCHS = "raymlp_train_epochs_finished"
TRAIN_SAMPLES_PER_SECOND = "raymlp_train_samples_per_second"
TUNE_TRIALS = "raymlp_tune_trials_finished"
PREDICT_ROWS = "raymlp_predict_rows_scored"
SERVE_REQUESTS = "raymlp_serve_requests"
SERVE_ERRORS = "raymlp_serve_errors"
SERVE_LATENCY = "raymlp_serve_latency_ms"
SERVE_RECORDS = "raymlp_serve_records"
SERVE_BATCH_RECORDS = "raymlp_serve_batch_records"
CAPTURE_ROWS = "raymlp_capture_rows"
CAPTURE_DROPPED = "raymlp_capture_dropped"
SHADOW_RECORDS = "raymlp_shadow_records"
MONITOR_ROWS = "raymlp_monitor_rows"
MONITOR_DRIFT_SCORE = "raymlp_monitor_drift_score"
MONITOR_COLUMN_DRIFTED = "raymlp_monitor_column_drifted"
MONITOR_DRIFT_SHARE = "raymlp_monitor_drift_share"
MONITOR_PERFORMANCE = "raymlp_monitor_performance"

_STAGE = ("job", "stage")
_SERVE = ("job", "stage", "app", "route", "version")
_SERVE_ANSWER = (*_SERVE, "code")
_MONITOR = ("job", "stage", "model", "version")

#: name -> (kind, description, tag keys, histogram boundaries)
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...], list[float] | None]] = {
    ROWS_READ: (
        "counter",
        "Source records parsed so far (collect, convert); a range read again counts again.",
        _STAGE,
        None,
    ),
    ROWS_COLLECTED: ("counter", "Rows a collect loaded into its database table.", (*_STAGE, "table"), None),
    ROWS_CONVERTED: ("counter", "Rows a convert published in a dataset version.", (*_STAGE, "dataset"), None),
    ROWS_QUARANTINED: (
        "counter",
        "Rows a convert set aside (malformed, or breaking data.schema).",
        (*_STAGE, "dataset"),
        None,
    ),
    TRAIN_EPOCHS: ("counter", "Training epochs finished (a scikit-learn fit is one).", _STAGE, None),
    TRAIN_SAMPLES_PER_SECOND: (
        "gauge",
        "Training samples per second over all workers, in the last finished epoch.",
        _STAGE,
        None,
    ),
    TUNE_TRIALS: ("counter", "Sweep trials that ended, by how (finished, stopped, error).", (*_STAGE, "status"), None),
    PREDICT_ROWS: ("counter", "Rows batch predict scored.", _STAGE, None),
    SERVE_REQUESTS: ("counter", "Prediction requests answered, by HTTP status code.", _SERVE_ANSWER, None),
    SERVE_ERRORS: ("counter", "Prediction requests that failed (4xx and 5xx).", _SERVE_ANSWER, None),
    SERVE_LATENCY: (
        "histogram",
        "Time from request to answer inside the replica, in ms.",
        _SERVE_ANSWER,
        [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
    ),
    SERVE_RECORDS: ("counter", "Records scored by the endpoint.", _SERVE, None),
    SERVE_BATCH_RECORDS: (
        "histogram",
        "Records per model call (after request batching).",
        _SERVE,
        [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 8192],
    ),
    CAPTURE_ROWS: (
        "counter",
        "Records written to the capture (serve.capture, predict --capture), after sampling.",
        (*_SERVE, "source"),
        None,
    ),
    CAPTURE_DROPPED: (
        "counter",
        "Sampled records the capture dropped: its buffer was full, or a write failed (`reason`).",
        (*_SERVE, "source", "reason"),
        None,
    ),
    SHADOW_RECORDS: (
        "counter",
        "Records a shadow version scored after the answer (`outcome`: agreed or disagreed with the answer sent, "
        "dropped while its queue was full, failed).",
        (*_SERVE, "shadow", "outcome"),
        None,
    ),
    MONITOR_ROWS: ("gauge", "Captured rows in the window the last `raymlp monitor` analysed.", _MONITOR, None),
    MONITOR_DRIFT_SCORE: (
        "gauge",
        "Per column: the drift test's score in the last analysis (a p-value, or a distance; see `test`).",
        (*_MONITOR, "column", "test"),
        None,
    ),
    MONITOR_COLUMN_DRIFTED: (
        "gauge",
        "Per column: 1 when the last analysis found it drifted, else 0.",
        (*_MONITOR, "column"),
        None,
    ),
    MONITOR_DRIFT_SHARE: ("gauge", "Share of feature columns that drifted in the last analysis.", _MONITOR, None),
    MONITOR_PERFORMANCE: (
        "gauge",
        "Performance in the last analysed window: `kind` measured (joined labels) or estimated (no labels).",
        (*_MONITOR, "metric", "kind"),
        None,
    ),
}

_MADE: dict[str, Any] = {}
_LOCK = threading.Lock()


def connected() -> bool:
    """Whether this process is connected to Ray (never imports Ray to find out)."""
    ray = sys.modules.get("ray")
    try:
        return ray is not None and ray.is_initialized()
    except Exception:  # a half-imported or shut-down Ray
        return False


def get(name: str) -> Any:
    """The Ray metric `name` of this process (made on first use), or None while not connected to Ray."""
    if not connected():
        return None
    made = _MADE.get(name)
    if made is not None:
        return made or None
    with _LOCK:
        if name not in _MADE:
            _MADE[name] = _make(name)
    return _MADE[name] or None


def _make(name: str) -> Any:
    kind, description, tag_keys, boundaries = DEFINITIONS[name]
    try:
        from ray.util import metrics

        if kind == "counter":
            return metrics.Counter(name, description, tag_keys=tag_keys)
        if kind == "gauge":
            return metrics.Gauge(name, description, tag_keys=tag_keys)
        assert boundaries is not None  # every histogram of DEFINITIONS has its boundaries
        return metrics.Histogram(name, description, boundaries=boundaries, tag_keys=tag_keys)
    except Exception:  # a Ray without metrics here (a Ray Client connection): record nothing, ask no more
        return False


def tags(job: str, stage: str, **more: Any) -> dict[str, str]:
    """The tags of one stage's metric: `job`, `stage` and `more` (as text)."""
    return {"job": str(job or ""), "stage": stage, **{key: str(value) for key, value in more.items()}}


def inc(name: str, value: float, tag_values: dict[str, str]) -> None:
    """Add `value` (> 0; nothing otherwise) to counter `name`."""
    if not value or value <= 0:
        return
    metric = get(name)
    if metric is not None:
        try:
            metric.inc(value, tag_values)
        except Exception:
            pass


def set_gauge(name: str, value: float, tag_values: dict[str, str]) -> None:
    metric = get(name)
    if metric is not None:
        try:
            metric.set(float(value), tag_values)
        except Exception:
            pass


def observe(name: str, value: float, tag_values: dict[str, str]) -> None:
    metric = get(name)
    if metric is not None:
        try:
            metric.observe(float(value), tag_values)
        except Exception:
            pass


def counting(progress: Any, job: str, stage: str) -> Any:
    """`progress(rows, bytes)` that also counts the rows as `raymlp_rows_read` of the job's stage."""
    tag_values = tags(job, stage)

    def counted(rows: int, size: int) -> None:
        inc(ROWS_READ, rows, tag_values)
        if progress is not None:
            progress(rows, size)

    return counted


# --- names of Ray tasks and actors ----------------------------------------------------------


def ray_name(job: str, stage: str, what: str) -> str:
    """What the dashboard shows for a task or actor raymlp starts: `wine-quickstart/collect: read range 3/8`."""
    return f"{job}/{stage}: {what}"


def job_and_run(run_name: str) -> tuple[str, str]:
    """(job, run id prefix) of a training run's name, `<job>-<first 8 characters of the run id>`."""
    job, _, run = run_name.rpartition("-")
    return (job, run) if job and len(run) == 8 else (run_name, "")


def training_job(request: Any) -> str:
    """The job a `TrainRequest` trains for (its own `job` where it has one, else from its run name)."""
    return getattr(request, "job", None) or job_and_run(request.run_name)[0]
