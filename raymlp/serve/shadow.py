"""A shadow version: a copy of every answered request, scored on a thread of the replica after the answer is sent.

The request's path only puts (records, answers) on a bounded queue; a full queue drops the copy and counts it, so
a slow shadow never slows or fails an answer. Its answers are captured under the same request ids (source
`shadow`) when the request was captured, and each record is counted as agreeing with the answer sent or not.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from .records import answers_for

logger = logging.getLogger("ray.serve")

#: Requests waiting for the shadow; beyond, copies are dropped (counted), never waited for.
QUEUE_REQUESTS = 1024


class Shadow:
    """Scores copies of requests with one package, off the request's path."""

    def __init__(self, version: Any, package: Any, capture: Any, builder: Any, metric_tags: dict[str, str]) -> None:
        from raymlp import metrics

        self.version, self.package = version, package
        self._capture, self._builder = capture, builder
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_REQUESTS)
        self._counter = metrics.get(metrics.SHADOW_RECORDS)
        base = {**metric_tags, "shadow": str(version)}
        self._tags = {outcome: {**base, "outcome": outcome} for outcome in ("agreed", "disagreed", "dropped", "failed")}
        self.counts = dict.fromkeys(self._tags, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raymlp-shadow", daemon=True)
        self._thread.start()

    def offer(self, request_id: str, arrived: float, records: list[Any], answers: list[Any], captured: bool) -> None:
        """Queue a copy of an answered request (`captured`: the answer went to the capture, so the shadow's goes too)."""
        try:
            self._queue.put_nowait((request_id, arrived, records, answers, captured))
        except queue.Full:
            self._count("dropped", len(records))

    def _count(self, outcome: str, count: int) -> None:
        self.counts[outcome] += count
        if self._counter is not None and count:
            try:
                self._counter.inc(count, self._tags[outcome])
            except Exception:  # a metric never fails the shadow
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is None:
                break
            request_id, arrived, records, served, captured = item
            started = time.perf_counter()
            try:
                answers = answers_for(self.package, records)
            except Exception as error:  # the shadow's failure is counted, never the request's
                logger.warning("raymlp: shadow version %s could not score a request: %s", self.version, error)
                self._count("failed", len(records))
                continue
            agreed = sum(
                1
                for mine, theirs in zip(answers, served, strict=False)
                if mine.get("prediction") == theirs.get("prediction")
            )
            self._count("agreed", agreed)
            self._count("disagreed", len(records) - agreed)
            if captured and self._capture is not None:
                latency_ms = (time.perf_counter() - started) * 1000.0
                self._capture.offer(
                    request_id,
                    arrived,
                    latency_ms,
                    self.version,
                    self._builder,
                    records,
                    answers,
                    "shadow",
                    sampled=True,
                )

    def close(self) -> None:
        """Score what is queued (a replica's graceful stop), then stop."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            self._stop.set()
        self._thread.join(timeout=10)
        self._stop.set()
