"""A Ray Serve application that answers predictions from model packages.

One deployment (`model`) is the HTTP ingress and holds the packages itself, so a request is one
hop from Serve's proxy. Its replicas hold every version the traffic split names and pick one per
request by weight; aliases are looked up again every `follow_aliases_s`, so moving an alias
(`raymlp models promote/rollback`) moves traffic without restarting a replica or failing a request.
"""

import hashlib
import hmac
import logging
import math
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve

logger = logging.getLogger("ray.serve")

api = FastAPI(title="raymlp model endpoint", docs_url=None, redoc_url=None)

VERSION_HEADER = "x-raymlp-model-version"
_MAX_LISTED_ERRORS = 20


class EndpointSpec(BaseModel):
    """Everything a replica needs; plain JSON, so `raymlp serve build` can write it into a Serve config."""

    model: str = Field(description="Registered model name (or the job name for an unregistered package).")
    traffic: dict[str, float] = Field(description="Alias, version or package label -> share of requests.")
    packages: dict[str, str] = Field(default_factory=dict, description="Fixed package folders by label (no registry).")
    tracking_uri: str | None = None
    storage_root: str | None = None
    cache_dir: str | None = None
    follow_aliases_s: float = 5.0
    batching: dict[str, float] | None = None
    max_body_bytes: int = 1 << 20
    max_records: int = 10_000
    api_key_sha256: list[str] = Field(default_factory=list)
    api_keys_env: str | None = None
    run_id: str | None = None
    job: str | None = Field(
        default=None, description="The raymlp job serving it (metrics' `job` tag; default: the app's name)."
    )
    route: str | None = Field(default=None, description="The app's route prefix (metrics' `route` tag).")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _json_safe(value.item())
    return value


@dataclass(frozen=True)
class _Routing:
    """The versions a replica answers with and their cumulative shares (swapped as one object)."""

    versions: tuple[Any, ...]
    cumulative: tuple[float, ...]
    packages: dict[Any, Any]

    def pick(self) -> Any:
        if len(self.versions) == 1:
            return self.versions[0]
        point = random.random() * self.cumulative[-1]
        for version, bound in zip(self.versions, self.cumulative):
            if point < bound:
                return version
        return self.versions[-1]


class RequestProblem(Exception):
    """A request the endpoint refuses: an HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors


#: What a number feature may be: the model takes its features as float32 (`train.features.feature_matrix`);
#: ints are bounded to int64. Beyond, a request is refused (422) where the schema says so.
NUMBER_BOUNDS: dict[str, int | float] = {"float": 3.4028234663852886e38, "int": 9223372036854775807}


def record_model(features: list[dict[str, Any]]) -> type[BaseModel]:
    """A pydantic model of one record: every feature required, with its type; nothing else allowed."""
    import datetime

    from pydantic import ConfigDict, create_model

    kinds: dict[str, Any] = {
        "int": int,
        "float": float,
        "bool": bool,
        "string": str,
        "date": datetime.date,
        "datetime": datetime.datetime,
    }
    fields: dict[str, Any] = {}
    for feature in features:
        kind = kinds.get(feature["type"], str)
        lax = feature["type"] in ("date", "datetime")  # ISO text in JSON
        bound = NUMBER_BOUNDS.get(feature["type"])
        limits = {"ge": -bound, "le": bound} if bound else {}
        fields[f"f{len(fields)}"] = (kind, Field(alias=feature["name"], strict=False if lax else None, **limits))
    return create_model(
        "Record",
        __config__=ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=False),
        **fields,
    )


def _error_entries(error: Any, single: bool) -> list[dict[str, Any]]:
    entries = []
    for item in error.errors(include_url=False)[:_MAX_LISTED_ERRORS]:
        location = list(item.get("loc", ()))
        entry: dict[str, Any] = {"message": item["msg"]}
        bound = (item.get("ctx") or {}).get("le", (item.get("ctx") or {}).get("ge"))
        if item["type"] in ("less_than_equal", "greater_than_equal") and isinstance(bound, (int, float)):
            entry["message"] = (
                f"Input should be {'at most' if item['type'] == 'less_than_equal' else 'at least'} {bound:.9g}"
            )
        if not single and location and isinstance(location[0], int):
            entry["record"] = location.pop(0)
        if location:
            entry["field"] = ".".join(str(part) for part in location)
        entries.append(entry)
    return entries


def _describe(entries: list[dict[str, Any]]) -> str:
    parts = []
    for entry in entries:
        where = []
        if "record" in entry:
            where.append(f"record {entry['record']}")
        if "field" in entry:
            where.append(f"field '{entry['field']}'")
        parts.append(f"{', '.join(where)}: {entry['message']}" if where else entry["message"])
    return "; ".join(parts)


class RecordParser:
    """Turns a request body into validated records, or a RequestProblem that says what is wrong."""

    def __init__(self, features: list[dict[str, Any]], max_records: int, max_body_bytes: int | None = None):
        from pydantic import TypeAdapter

        self.names = [feature["name"] for feature in features]
        self.features = features
        self.max_body_bytes = max_body_bytes
        self.model = record_model(features)
        self.single = TypeAdapter(self.model)
        self.many = TypeAdapter(list[self.model])  # type: ignore[valid-type]
        self.max_records = max_records

    def parse(self, body: bytes) -> tuple[list[dict[str, Any]], bool]:
        """(records as plain dicts, whether the body was one record)."""
        import json

        from pydantic import ValidationError

        start = body.lstrip()[:1]
        if start not in (b"{", b"["):
            try:
                json.loads(body)
            except ValueError:
                raise RequestProblem(400, "the body is not JSON") from None
            raise RequestProblem(422, "send one record (a JSON object) or a list of records")
        single = start == b"{"
        try:
            parsed = self.single.validate_json(body) if single else self.many.validate_json(body)
        except ValidationError as error:
            if any(item["type"] == "json_invalid" for item in error.errors()):
                raise RequestProblem(400, f"the body is not JSON: {error.errors()[0]['msg']}") from None
            entries = _error_entries(error, single)
            raise RequestProblem(422, _describe(entries), entries) from None
        items = [parsed] if single else parsed
        if not items:
            raise RequestProblem(422, "the list of records is empty; send at least one record")
        if len(items) > self.max_records:
            raise RequestProblem(413, f"{len(items)} records in one request; at most {self.max_records} are allowed")
        return [item.model_dump(by_alias=True) for item in items], single

    def openapi_body(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(request body schema, component schemas) for /openapi.json."""
        import json

        record = self.model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        reference = {"$ref": "#/components/schemas/Record"}
        most = self.max_records
        if self.max_body_bytes:  # no longer list fits in the byte limit, even of the shortest records
            shortest = {"bool": False, "string": "", "date": "2000-01-01", "datetime": "2000-01-01T00:00:00"}
            one = json.dumps({f["name"]: shortest.get(f["type"], 0) for f in self.features}, separators=(",", ":"))
            most = max(1, min(most, (self.max_body_bytes - 1) // (len(one.encode()) + 1)))
        body = {"anyOf": [reference, {"type": "array", "items": reference, "minItems": 1, "maxItems": most}]}
        return body, {"Record": record}


def answers_for(package: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The JSON answer of each record: its prediction, and class probabilities for a classifier."""
    import numpy as np

    result = package.predict_table(package.records_table(records))
    predictions = [_json_safe(value) for value in result.column("prediction").to_pylist()]
    columns = [column for column in result.column_names if column.startswith("probability_")]
    if not columns:
        return [{"prediction": value} for value in predictions]
    names = [column.removeprefix("probability_") for column in columns]
    rows = np.column_stack([result.column(column).to_numpy() for column in columns]).astype("float64").tolist()
    return [
        {"prediction": value, "probabilities": {name: _json_safe(p) for name, p in zip(names, row)}}
        for value, row in zip(predictions, rows)
    ]


class _Metrics:
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


class _Batcher:
    """Scores requests together: those that arrive while the model is busy form the next batch.

    No timer by default, so a lone request is scored at once (Serve's `@serve.batch` holds it for
    its timeout) and under load batches grow by themselves up to `max_batch_size` records. The
    model runs on one thread beside the event loop, which goes on reading and queueing requests.
    """

    def __init__(self, metrics: "_Metrics", max_batch_size: float, wait_timeout_ms: float):
        from concurrent.futures import ThreadPoolExecutor

        self.metrics, self.max_records, self.wait_s = metrics, int(max_batch_size), wait_timeout_ms / 1000.0
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="raymlp-model")
        self.queue: Any = None
        self.worker: Any = None

    async def score(self, version: Any, package: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import asyncio

        loop = asyncio.get_running_loop()
        if self.queue is None:
            self.queue = asyncio.Queue()
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._run())
        answer = loop.create_future()
        self.queue.put_nowait((version, package, records, answer))
        return await answer

    async def _run(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            count = len(batch[0][2])
            deadline = loop.time() + self.wait_s
            while count < self.max_records:
                if not self.queue.empty():
                    item = self.queue.get_nowait()
                elif self.wait_s > 0 and loop.time() < deadline:
                    try:
                        item = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                    except TimeoutError:
                        break
                else:
                    break
                batch.append(item)
                count += len(item[2])
            outcomes = await loop.run_in_executor(self.executor, self._score_batch, batch)
            for (_, _, _, answer), outcome in zip(batch, outcomes):
                if answer.done():
                    continue
                if isinstance(outcome, Exception):
                    answer.set_exception(outcome)
                else:
                    answer.set_result(outcome)

    def _score_batch(self, batch: list[tuple[Any, Any, list[dict[str, Any]], Any]]) -> list[Any]:
        outcomes: list[Any] = [None] * len(batch)
        by_version: dict[Any, list[int]] = {}
        for index, item in enumerate(batch):
            by_version.setdefault(item[0], []).append(index)
        for version, indexes in by_version.items():
            flat = [record for index in indexes for record in batch[index][2]]
            try:
                answers = answers_for(batch[indexes[0]][1], flat)
            except Exception as error:
                for index in indexes:
                    outcomes[index] = error
                continue
            self.metrics.scored(version, len(flat))
            start = 0
            for index in indexes:
                count = len(batch[index][2])
                outcomes[index] = answers[start : start + count]
                start += count
        return outcomes


@serve.deployment(name="model")
@serve.ingress(api)
class ModelServer:
    """One replica: the packages of the traffic split, loaded once; predictions per request."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = EndpointSpec.model_validate(spec)
        self.app_name = serve.get_replica_context().app_name
        self._lock = threading.Lock()
        self._routing = self._resolve(self.spec.traffic, {})
        first = next(iter(self._routing.packages.values()))
        self.parser = RecordParser(first.features, self.spec.max_records, self.spec.max_body_bytes)
        self.features = first.features
        self.key_digests = set(self.spec.api_key_sha256)
        if self.spec.api_keys_env:
            self.key_digests |= {
                key_digest(key.strip()) for key in os.environ.get(self.spec.api_keys_env, "").split(",") if key.strip()
            }
        self.metrics = _Metrics(self.app_name, self.spec.job or self.app_name, self.spec.route or "")
        self._install_openapi()
        self.batcher = _Batcher(self.metrics, **self.spec.batching) if self.spec.batching else None
        self._stop = threading.Event()
        if self._follows_aliases():
            threading.Thread(target=self._follow_aliases, name="raymlp-follow-aliases", daemon=True).start()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """A new traffic split (`serve.traffic`), applied in place by Serve: no replica restarts."""
        traffic = user_config.get("traffic")
        if traffic and traffic != self.spec.traffic:
            routing = self._resolve(traffic, self._routing.packages)
            with self._lock:
                self.spec = self.spec.model_copy(update={"traffic": traffic})
                self._routing = routing

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()

    # --- versions -----------------------------------------------------------------------------

    def _follows_aliases(self) -> bool:
        return any(ref not in self.spec.packages and not ref.isdigit() for ref in self.spec.traffic)

    def _resolve(self, traffic: dict[str, float], loaded: dict[Any, Any]) -> _Routing:
        """Where each share of the traffic goes now, loading packages not held yet."""
        from raymlp.package import load_package

        shares: dict[Any, float] = {}
        paths: dict[Any, str] = {}
        for ref, share in traffic.items():
            if share <= 0:
                continue
            version, path = self._locate(ref)
            shares[version] = shares.get(version, 0.0) + share
            paths[version] = path
        if not shares:
            raise ValueError(f"traffic {traffic} sends no requests anywhere")
        packages = {
            version: loaded[version] if version in loaded else load_package(paths[version]) for version in shares
        }
        versions = tuple(shares)
        cumulative, total = [], 0.0
        for version in versions:
            total += shares[version]
            cumulative.append(total)
        return _Routing(versions, tuple(cumulative), packages)

    def _locate(self, ref: str) -> tuple[Any, str]:
        if ref in self.spec.packages:
            label: Any = int(ref) if ref.isdigit() else ref
            return label, self.spec.packages[ref]
        from pathlib import Path

        from raymlp.tracking import ModelRef, Tracker

        tracker = Tracker(self.spec.tracking_uri, Path(self.spec.storage_root))
        model_ref = (
            ModelRef(self.spec.model, version=int(ref)) if ref.isdigit() else ModelRef(self.spec.model, alias=ref)
        )
        path, version = tracker.package_for(model_ref, Path(self.spec.cache_dir))
        return version, str(path)

    def _follow_aliases(self) -> None:
        while not self._stop.wait(self.spec.follow_aliases_s):
            traffic = self.spec.traffic
            try:
                routing = self._resolve(traffic, self._routing.packages)
            except Exception as error:  # the registry may be briefly unreachable; keep serving
                logger.warning("raymlp: could not look up the model's aliases, keeping the current versions: %s", error)
                continue
            with self._lock:  # a split `reconfigure` set meanwhile wins over one resolved from the old split
                if self.spec.traffic is traffic and (routing.versions, routing.cumulative) != (
                    self._routing.versions,
                    self._routing.cumulative,
                ):
                    logger.info(
                        "raymlp: now serving versions %s with cumulative shares %s",
                        routing.versions,
                        routing.cumulative,
                    )
                    self._routing = routing

    # --- requests -----------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        if not self.key_digests:
            return True
        header = request.headers.get("authorization", "")
        key = header[7:] if header[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        digest = key_digest(key) if key else ""
        return any(hmac.compare_digest(digest, known) for known in self.key_digests)

    async def _body(self, request: Request) -> bytes:
        limit = self.spec.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestProblem(413, f"the body has {int(declared)} bytes; at most {limit} are allowed")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise RequestProblem(413, f"the body is over {limit} bytes")
        return bytes(body)

    def _problem(self, problem: RequestProblem, version: Any, started: float) -> JSONResponse:
        self.metrics.answered(version, problem.status, started)
        content: dict[str, Any] = {"detail": problem.message}
        if problem.errors:
            content["errors"] = problem.errors
        headers = {"www-authenticate": "Bearer"} if problem.status == 401 else None
        return JSONResponse(content, status_code=problem.status, headers=headers)

    @api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        routing = self._routing
        version = routing.pick()
        try:
            if not self._authorized(request):
                raise RequestProblem(
                    401, "an API key is required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
                )
            records, single = self.parser.parse(await self._body(request))
            package = routing.packages[version]
            if self.batcher is not None:
                answers = await self.batcher.score(version, package, records)
            else:
                answers = answers_for(package, records)
                self.metrics.scored(version, len(records))
        except RequestProblem as problem:
            return self._problem(problem, version, started)
        except (ValueError, TypeError, ArithmeticError) as error:
            # Values of the right types that the model cannot take (an overflow, an unseen category).
            logger.warning("raymlp: version %s could not score a request: %s", version, error)
            return self._problem(
                RequestProblem(422, f"the model could not score these values: {str(error)[:300]}"), version, started
            )
        except Exception:
            logger.exception("raymlp: version %s failed on a request", version)
            self.metrics.answered(version, 500, started)
            return JSONResponse({"detail": "prediction failed; the replica's log has the details"}, status_code=500)
        payload: dict[str, Any] = {"model": self.spec.model, "version": version}
        payload.update(answers[0] if single else {"predictions": answers})
        self.metrics.answered(version, 200, started)
        return JSONResponse(payload, headers={VERSION_HEADER: str(version)})

    @api.get("/health")
    def health(self) -> dict[str, Any]:
        return {"status": "ok", "versions": list(self._routing.versions)}

    @api.get("/metadata")
    def describe(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse(
                {"detail": "an API key is required"}, status_code=401, headers={"www-authenticate": "Bearer"}
            )
        routing = self._routing
        total = routing.cumulative[-1]
        previous, shares = 0.0, {}
        for version, bound in zip(routing.versions, routing.cumulative):
            shares[str(version)] = round(100.0 * (bound - previous) / total, 3)
            previous = bound
        first = routing.packages[routing.versions[0]]
        return JSONResponse(
            {
                "model": self.spec.model,
                "versions": [
                    {
                        "version": version,
                        "traffic_percent": shares[str(version)],
                        "lineage": routing.packages[version].description.get("lineage"),
                        "metrics": routing.packages[version].description.get("metrics"),
                    }
                    for version in routing.versions
                ],
                "traffic": self.spec.traffic,
                "task": first.description["task"],
                "label": first.description.get("label"),
                "features": self.features,
                "classes": first.classes,
                "run_id": self.spec.run_id,
            }
        )

    def _install_openapi(self) -> None:
        """/openapi.json with the request body this model takes (its records' fields and types)."""
        schema = api.openapi()
        body, components = self.parser.openapi_body()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        detail = {"schema": {"type": "object", "properties": {"detail": {"type": "string"}}}}
        problem = {"content": {"application/json": detail}}
        text = {"content": {"text/plain": {"schema": {"type": "string"}}}}
        operation = schema["paths"]["/predict"]["post"]
        operation["summary"] = f"Predict with {self.spec.model}"
        operation["description"] = (
            f"A body is at most {self.spec.max_body_bytes} bytes (else 413). Numbers are finite; "
            "the model takes floats as float32, so their magnitude is at most 3.4028234663852886e38."
        )
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        operation["responses"] = {
            "200": {
                "description": "The prediction (one record) or predictions (a list), and the version that answered.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            **{
                str(code): {"description": description, **problem}
                for code, description in (
                    (400, "The body is not JSON."),
                    (401, "No valid API key."),
                    (
                        413,
                        f"The body is over {self.spec.max_body_bytes} bytes or the list over {self.spec.max_records} records.",
                    ),
                    (422, "A record does not match the model's features, or the model cannot score its values."),
                )
            },
            # Serve's own answers (plain text): the request timeout, and a full queue.
            "408": {"description": "The request took longer than the endpoint's request timeout.", **text},
            "500": {
                "description": "The prediction failed; the replica's log has the details.",
                "content": {"application/json": detail, "text/plain": {"schema": {"type": "string"}}},
            },
            "503": {
                "description": "The replicas' queues are full: try again after Retry-After seconds.",
                "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}},
                **text,
            },
        }
        api.openapi_schema = schema


def build_app(spec: EndpointSpec, serve_config: Any, *, quiet: bool = False) -> Any:
    """The Serve application for a spec, with replicas, autoscaling, queue bounds and batching from the job."""
    return ModelServer.options(**deployment_options(serve_config, spec, quiet=quiet)).bind(spec.model_dump())


def deployment_options(serve_config: Any, spec: EndpointSpec, *, quiet: bool = False) -> dict[str, Any]:
    actor_options: dict[str, Any] = {"num_cpus": serve_config.cpus_per_replica}
    if serve_config.gpus_per_replica:
        actor_options["num_gpus"] = serve_config.gpus_per_replica
    if getattr(serve_config, "env", None) is not None:  # serve.env: Serve lays it over the app's (the job's)
        from raymlp.runtime.envs import stage_runtime_env

        runtime_env = stage_runtime_env(serve_config.env)
        if runtime_env:
            actor_options["runtime_env"] = runtime_env
    options: dict[str, Any] = {
        "ray_actor_options": actor_options,
        "max_ongoing_requests": serve_config.max_ongoing_requests,
        "max_queued_requests": serve_config.max_queued_requests,
        # A refused request says when to try again (Serve sends no Retry-After by default).
        "backpressure_config": {"status_code": 503, "retry_after_s": 1},
        "user_config": {"traffic": spec.traffic},
        "logging_config": {"log_level": "WARNING" if quiet else "INFO", "enable_access_log": serve_config.access_log},
    }
    if serve_config.autoscaling is not None:
        options["autoscaling_config"] = serve_config.autoscaling.model_dump()
    else:
        options["num_replicas"] = serve_config.num_replicas or 1
    return options


def app_builder(args: dict[str, Any]) -> Any:
    """Entry point for a Serve config file (`raymlp serve build`): `import_path: raymlp.serve.app:app_builder`."""
    from raymlp.config.schema import ServeConfig

    spec = EndpointSpec.model_validate(args["spec"])
    return build_app(spec, ServeConfig.model_validate(args.get("serve", {})))
