"""Capture: the records an endpoint (or a batch predict) scored and what it answered, as Parquet
files under the storage root, for monitoring (`raymlp monitor`).

Layout (one place; `raymlp.monitor` reads it):
`ROOT/captures/model=NAME/version=V/date=YYYY-MM-DD/part-<time>-<writer>-<seq>.parquet`.
A file's columns: `request_id`, `record` (its index in the request), `time` (UTC, when the
request arrived), `latency_ms`, `model_version`, `source` (serve or predict), `features` (a struct
of the model's features, less `exclude`), `prediction`, and `probabilities` (a struct by class)
for classifiers.

A replica keeps sampled requests in a bounded buffer (`CaptureBuffer.offer` appends a tuple and
returns); a thread of the replica writes the buffer every `flush_s`, never on a request's path.
A full buffer drops the request and counts it. Every file appears whole (`storage.files`), so a
killed replica loses at most what arrived since its last flush.
"""

from __future__ import annotations

import datetime
import io
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("ray.serve")

CAPTURE_FOLDER = "captures"
LABELS_FOLDER = "labels"
META_COLUMNS = ("request_id", "record", "time", "latency_ms", "model_version", "source")
FEATURES_COLUMN = "features"
PREDICTION_COLUMN = "prediction"
PROBABILITIES_COLUMN = "probabilities"


@dataclass(frozen=True)
class CaptureSettings:
    """What a capturing replica or predict is told (plain values: it travels in the endpoint spec)."""

    root: str  # the storage root (local path or bucket URI)
    model: str
    sample: float = 1.0
    flush_s: float = 10.0
    max_buffer_rows: int = 100_000
    exclude: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> CaptureSettings:
        return cls(**{**value, "exclude": tuple(value.get("exclude") or ())})

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "model": self.model,
            "sample": self.sample,
            "flush_s": self.flush_s,
            "max_buffer_rows": self.max_buffer_rows,
            "exclude": list(self.exclude),
        }


def model_folder(root: str, model: str) -> str:
    from raymlp.storage import files

    return files.join(root, CAPTURE_FOLDER, f"model={model}")


def labels_folder(root: str, model: str) -> str:
    from raymlp.storage import files

    return files.join(model_folder(root, model), LABELS_FOLDER)


def partition_folder(root: str, model: str, version: Any, day: datetime.date) -> str:
    from raymlp.storage import files

    return files.join(model_folder(root, model), f"version={version}", f"date={day.isoformat()}")


def check_excluded(features: list[dict[str, Any]], exclude: tuple[str, ...] | list[str]) -> None:
    """A name in `exclude` that is no feature of the model is refused: a typo must not let a field
    the user meant to keep off disk reach it."""
    names = {feature["name"] for feature in features}
    unknown = [name for name in exclude if name not in names]
    if unknown:
        raise ValueError(
            f"serve.capture.exclude names {', '.join(unknown)}, which the model has no feature of "
            f"(its features: {', '.join(sorted(names))})"
        )


def _feature_type(kind: str) -> Any:
    import pyarrow as pa

    return {
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "string": pa.string(),
        "date": pa.date32(),
        "datetime": pa.timestamp("us"),
    }.get(kind, pa.string())


class CaptureTableBuilder:
    """Captured requests of one model version's features (less the excluded ones), kept as columns
    until written: a request adds its values to lists (numbers and text, which Python's garbage
    collector does not track), not a record object, so a full buffer does not slow the replica's
    collections (keeping the requests' dicts did: about 10% of throughput at 32 clients)."""

    def __init__(self, features: list[dict[str, Any]], exclude: tuple[str, ...], classes: list[Any] | None):
        import pyarrow as pa

        self.kept = [feature for feature in features if feature["name"] not in set(exclude)]
        self.names = [feature["name"] for feature in self.kept]
        self.feature_type = pa.struct([(feature["name"], _feature_type(feature["type"])) for feature in self.kept])
        self.classes = classes
        self.class_names = [str(name) for name in classes] if classes is not None else []

    def columns(self) -> CapturedColumns:
        return CapturedColumns(self)

    def table(self, requests: list[tuple[Any, ...]]) -> Any:
        """One table of (request_id, arrived (epoch s), latency_ms, version, source, records, answers) tuples."""
        pending = self.columns()
        for request in requests:
            pending.add(*request[:7])
        return pending.table()

    def assemble(
        self,
        request_ids: Any,
        records: Any,
        times_us: Any,
        latencies_ms: Any,
        version: Any,
        sources: Any,
        features: list[Any],
        predictions: Any,
        probabilities: list[Any],
    ) -> Any:
        """A capture file's table (the one place its columns are spelled) from a column's values
        each: lists or Arrow arrays; `features` in `self.names`' order, `probabilities` in the classes'."""
        import pyarrow as pa

        rows = len(request_ids)
        columns: dict[str, Any] = {
            "request_id": pa.array(request_ids, pa.string()),
            "record": pa.array(records, pa.int32()),
            "time": pa.array(times_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "latency_ms": pa.array(latencies_ms, pa.float64()),
            "model_version": pa.array([str(version)] * rows, pa.string()),
            "source": pa.array(sources, pa.string()),
        }
        typed = [
            pa.array(values, type=self.feature_type.field(index).type)
            if not isinstance(values, pa.Array)
            else values.cast(self.feature_type.field(index).type, safe=False)
            for index, values in enumerate(features)
        ]
        columns[FEATURES_COLUMN] = pa.StructArray.from_arrays(typed, fields=list(self.feature_type))
        columns[PREDICTION_COLUMN] = predictions if isinstance(predictions, pa.Array) else pa.array(predictions)
        if self.classes is not None:
            columns[PROBABILITIES_COLUMN] = pa.StructArray.from_arrays(
                [pa.array(values, pa.float64()) for values in probabilities], names=self.class_names
            )
        return pa.table(columns)


class CapturedColumns:
    """The columns of a version's captured requests since the last write."""

    def __init__(self, builder: CaptureTableBuilder):
        self.builder = builder
        self.ids: list[str] = []
        self.indexes: list[int] = []
        self.times: list[int] = []
        self.latencies: list[float] = []
        self.sources: list[str] = []
        self.features: list[list[Any]] = [[] for _ in builder.names]
        self.predictions: list[Any] = []
        self.probabilities: list[list[Any]] = [[] for _ in builder.class_names]
        self.version = ""

    def __len__(self) -> int:
        return len(self.ids)

    def add(
        self,
        request_id: str,
        arrived: float,
        latency_ms: float,
        version: Any,
        source: str,
        records: list[dict[str, Any]],
        answers: list[dict[str, Any]],
    ) -> None:
        count = len(records)
        self.version = str(version)
        self.ids += [request_id] * count
        self.indexes += range(count)
        self.times += [int(arrived * 1_000_000)] * count
        self.latencies += [latency_ms] * count
        self.sources += [source] * count
        for values, name in zip(self.features, self.builder.names):
            values += [record.get(name) for record in records]
        for answer in answers:
            self.predictions.append(answer.get("prediction"))
            found = answer.get("probabilities") or {}
            for values, name in zip(self.probabilities, self.builder.class_names):
                values.append(found.get(name))

    def extend(self, other: CapturedColumns) -> None:
        """Add `other`'s rows after these."""
        for name in ("ids", "indexes", "times", "latencies", "sources", "predictions"):
            getattr(self, name).extend(getattr(other, name))
        for mine, theirs in zip(self.features + self.probabilities, other.features + other.probabilities):
            mine.extend(theirs)
        self.version = self.version or other.version

    def table(self) -> Any:
        return self.builder.assemble(
            self.ids,
            self.indexes,
            self.times,
            self.latencies,
            self.version,
            self.sources,
            self.features,
            self.predictions,
            self.probabilities,
        )


def write_capture_file(root: str, model: str, version: Any, table: Any, writer: str, sequence: int) -> list[str]:
    """Write `table` (one version's captured rows) as one file per UTC day its rows arrived on;
    each file appears whole. Returns the files written."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from raymlp.storage import files

    days = pc.unique(pc.cast(pc.cast(table.column("time"), "timestamp[us]"), "date32")).to_pylist()
    written = []
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    for day in sorted(days):
        rows = table
        if len(days) > 1:
            rows = table.filter(pc.equal(pc.cast(pc.cast(table.column("time"), "timestamp[us]"), "date32"), day))
        sink = io.BytesIO()
        pq.write_table(rows, sink, compression="zstd")
        name = files.join(partition_folder(root, model, version, day), f"part-{stamp}-{writer}-{sequence:06d}.parquet")
        files.write_bytes(name, sink.getvalue())
        written.append(name)
    return written


class CaptureBuffer:
    """A replica's (or a predict's) capture: `offer` keeps a sampled request in a bounded buffer;
    a thread writes the buffer every `flush_s`. Never blocks a request; a full buffer drops and counts."""

    def __init__(self, settings: CaptureSettings, metric_tags: dict[str, str], source: str = "serve"):
        self.settings, self.source = settings, source
        self.writer = f"{os.getpid()}{uuid.uuid4().hex[:6]}"
        self._pending: dict[Any, CapturedColumns] = {}
        self._rows = 0
        self._sequence = 0
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._tags = {**metric_tags, "source": source}
        self.captured = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="raymlp-capture", daemon=True)
        self._thread.start()

    def offer(
        self,
        request_id: str,
        arrived: float,
        latency_ms: float,
        version: Any,
        builder: CaptureTableBuilder,
        records: list[dict[str, Any]],
        answers: list[dict[str, Any]],
        source: str | None = None,
        sampled: bool = False,
    ) -> bool:
        """Keep one answered request (`builder`: its version's columns) unless sampled out or the buffer is full;
        whether it was sampled in. `sampled`: the decision was made already (a shadow's copy of a kept request);
        `source`: other than the buffer's (`shadow`)."""
        sample = self.settings.sample
        if not sampled and sample < 1.0 and random.random() >= sample:
            return False
        count = len(records)
        with self._lock:
            full = self._rows + count > self.settings.max_buffer_rows
            if full:
                self.dropped += count
            else:
                pending = self._pending.get(version)
                if pending is None:
                    pending = self._pending[version] = builder.columns()
                pending.add(request_id, arrived, latency_ms, version, source or self.source, records, answers)
                self._rows += count
        if full:
            self._count_dropped(count, "buffer_full")
        return True

    def flush(self) -> int:
        """Write what is buffered now; returns the rows written."""
        with self._flushing:
            with self._lock:
                pending, self._pending, self._rows = self._pending, {}, 0
            written = 0
            for version, columns in pending.items():
                count = len(columns)
                try:
                    table = columns.table()
                    self._sequence += 1
                    write_capture_file(
                        self.settings.root, self.settings.model, version, table, self.writer, self._sequence
                    )
                except Exception as error:  # the store may be briefly unreachable: keep them for the next flush
                    if not self._requeue(version, columns):
                        logger.warning("raymlp: capture dropped %d records it could not write: %s", count, error)
                        self.dropped += count
                        self._count_dropped(count, "write_failed")
                    else:
                        logger.warning("raymlp: capture could not write %d records, retrying: %s", count, error)
                    continue
                written += count
                self.captured += count
                self._count_captured(version, count)
            return written

    def _requeue(self, version: Any, columns: CapturedColumns) -> bool:
        with self._lock:
            if self._rows + len(columns) > self.settings.max_buffer_rows:
                return False
            newer = self._pending.get(version)
            if newer is not None:
                columns.extend(newer)
            self._pending[version] = columns
            self._rows += len(columns)
            return True

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.flush_s):
            try:
                self.flush()
            except Exception:  # never let the writer die: the next interval tries again
                logger.exception("raymlp: capture flush failed")

    def _count_captured(self, version: Any, count: int) -> None:
        from raymlp import metrics

        metrics.inc(metrics.CAPTURE_ROWS, count, {**self._tags, "version": str(version)})

    def _count_dropped(self, count: int, reason: str) -> None:
        from raymlp import metrics

        metrics.inc(metrics.CAPTURE_DROPPED, count, {**self._tags, "version": "", "reason": reason})


def capture_scored_block(settings: CaptureSettings, package: Any, version: Any, scored: Any) -> None:
    """Batch predict's capture: the sampled rows of one scored block (input columns plus the
    package's prediction columns), written as one file per day. Each row is its own request."""
    import numpy as np
    import pyarrow as pa

    rows = scored.num_rows
    if rows == 0:
        return
    if settings.sample < 1.0:
        keep = np.flatnonzero(np.random.random(rows) < settings.sample)
        if not len(keep):
            return
        scored = scored.take(pa.array(keep))
        rows = scored.num_rows
    builder = CaptureTableBuilder(package.features, settings.exclude, package.classes)
    block_id = uuid.uuid4().hex[:12]
    table = builder.assemble(
        [f"{block_id}-{index}" for index in range(rows)],
        np.zeros(rows, dtype=np.int32),
        np.full(rows, int(time.time() * 1_000_000), dtype=np.int64),
        pa.nulls(rows, pa.float64()),
        version,
        ["predict"] * rows,
        [scored.column(name).combine_chunks() for name in builder.names],
        scored.column(PREDICTION_COLUMN).combine_chunks(),
        [scored.column(f"probability_{name}").combine_chunks() for name in builder.class_names],
    )
    write_capture_file(settings.root, settings.model, version, table, f"p{block_id}", 0)
