"""The endpoint's own metrics (requests, errors, latency, records, batch sizes) through Ray's metrics agent."""

import time
from typing import Any


class EndpointMetrics:
    """raymlp's own endpoint metrics, exported through Ray's metrics agent (dashboard, Prometheus):
    `raymlp_serve_*` (`raymlp.metrics`), tagged job, stage (`serve`), app, route and version, and
    answers also with their HTTP status code (`code="422"`; `code=~"5.."` in PromQL for a class).

    Requests are latency-critical: the tag dicts are made once per (version, status code), not per
    request; a request costs a dict lookup and the Ray calls themselves."""

    def __init__(self, app: str, job: str, route: str):
        from raymlp import metrics

        self.requests = metrics.get(metrics.SERVE_REQUESTS)
        self.errors = metrics.get(metrics.SERVE_ERRORS)
        self.latency = metrics.get(metrics.SERVE_LATENCY)
        self.records = metrics.get(metrics.SERVE_RECORDS)
        self.batch_size = metrics.get(metrics.SERVE_BATCH_RECORDS)
        self.enabled = self.requests is not None
        self.base = {"job": job, "stage": "serve", "app": app, "route": route}
        self._answer_tags: dict[tuple[Any, int], dict[str, str]] = {}
        self._version_tags: dict[Any, dict[str, str]] = {}

    def _tags_of_answer(self, version: Any, status: int) -> dict[str, str]:
        tags = self._answer_tags.get((version, status))
        if tags is None:
            tags = self._answer_tags[(version, status)] = {**self.base, "version": str(version), "code": str(status)}
        return tags

    def _tags_of_version(self, version: Any) -> dict[str, str]:
        tags = self._version_tags.get(version)
        if tags is None:
            tags = self._version_tags[version] = {**self.base, "version": str(version)}
        return tags

    def answered(self, version: Any, status: int, started: float) -> None:
        if not self.enabled:
            return
        tags = self._tags_of_answer(version, status)
        self.requests.inc(1, tags)
        if status >= 400:
            self.errors.inc(1, tags)
        self.latency.observe((time.perf_counter() - started) * 1000.0, tags)

    def scored(self, version: Any, count: int) -> None:
        if not self.enabled or count <= 0:
            return
        tags = self._tags_of_version(version)
        self.records.inc(count, tags)
        self.batch_size.observe(count, tags)
