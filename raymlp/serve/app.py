"""A Ray Serve application that answers predictions from model packages.

One deployment (`model`) is the HTTP ingress and holds the packages itself, so a request is one
hop from Serve's proxy. Its replicas hold every version the traffic split names and pick one per
request by weight; aliases are looked up again every `follow_aliases_s`, so moving an alias
(`raymlp models promote/rollback`) moves traffic without restarting a replica or failing a request.
"""

import hmac
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from .batcher import Batcher
from .endpoint_metrics import EndpointMetrics
from .records import RecordParser, RequestProblem, answers_for
from .spec import REQUEST_ID_HEADER, VERSION_HEADER, EndpointSpec, key_digest

logger = logging.getLogger("ray.serve")

api = FastAPI(title="raymlp model endpoint", docs_url=None, redoc_url=None)


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
        self.metrics = EndpointMetrics(self.app_name, self.spec.job or self.app_name, self.spec.route or "")
        self._install_openapi()
        self.batcher = Batcher(self.metrics, **self.spec.batching) if self.spec.batching else None
        self.capture = self._start_capture()
        self.shadow = self._start_shadow(self.spec.shadow)
        self._stop = threading.Event()
        if self._follows_aliases():
            threading.Thread(target=self._follow_aliases, name="raymlp-follow-aliases", daemon=True).start()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """A new traffic split (`serve.traffic`) or shadow (`serve.shadow`), applied in place by Serve: no replica
        restarts."""
        traffic = user_config.get("traffic")
        if traffic and traffic != self.spec.traffic:
            routing = self._resolve(traffic, self._routing.packages)
            with self._lock:
                self.spec = self.spec.model_copy(update={"traffic": traffic})
                self._routing = routing
        shadow = user_config.get("shadow")
        if shadow != self.spec.shadow:
            started = self._start_shadow(shadow)
            with self._lock:
                self.spec = self.spec.model_copy(update={"shadow": shadow})
                stopped, self.shadow = self.shadow, started
            if stopped is not None:
                stopped.close()

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        shadow = getattr(self, "shadow", None)
        if shadow is not None:  # its last copies go to the capture before the capture's last write
            shadow.close()
        capture = getattr(self, "capture", None)
        if capture is not None:  # Serve stops a replica gracefully: what is buffered is written
            capture.close()

    # --- capture ------------------------------------------------------------------------------

    def _start_capture(self) -> Any:
        if not self.spec.capture:
            return None
        from .capture import CaptureBuffer, CaptureSettings, check_excluded

        settings = CaptureSettings.from_dict(self.spec.capture)
        for package in self._routing.packages.values():
            check_excluded(package.features, settings.exclude)
        self._capture_builders: dict[Any, Any] = {}
        return CaptureBuffer(settings, self.metrics.base)

    def _capture_builder(self, version: Any, package: Any) -> Any:
        builder = self._capture_builders.get(version)
        if builder is None:
            from .capture import CaptureTableBuilder

            builder = CaptureTableBuilder(package.features, self.capture.settings.exclude, package.classes)
            self._capture_builders[version] = builder
        return builder

    def _start_shadow(self, ref: str | None) -> Any:
        """The shadow version's scorer (None: no shadow)."""
        if not ref:
            return None
        from raymlp.package import load_package

        from .shadow import Shadow

        version, path = self._locate(ref)
        loaded = self._routing.packages.get(version)
        package = loaded if loaded is not None else load_package(path)
        builder = self._capture_builder(version, package) if self.capture is not None else None
        return Shadow(version, package, self.capture, builder, self.metrics.base)

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

        spec = self.spec
        assert spec.tracking_uri and spec.storage_root and spec.cache_dir, "endpoint_spec sets them for registry models"
        tracker = Tracker(spec.tracking_uri, spec.storage_root)
        model_ref = (
            ModelRef(self.spec.model, version=int(ref)) if ref.isdigit() else ModelRef(self.spec.model, alias=ref)
        )
        path, version = tracker.package_for(model_ref, Path(spec.cache_dir))
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

    def _problem(
        self, problem: RequestProblem, version: Any, started: float, id_header: dict[str, str]
    ) -> JSONResponse:
        self.metrics.answered(version, problem.status, started)
        content: dict[str, Any] = {"detail": problem.message}
        if problem.errors:
            content["errors"] = problem.errors
        headers = dict(id_header)
        if problem.status == 401:
            headers["www-authenticate"] = "Bearer"
        return JSONResponse(content, status_code=problem.status, headers=headers)

    @api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        # Serve's request-id middleware (proxy and direct ingress alike) puts the client's x-request-id,
        # or one it made, in the request's headers and returns it on the answer; one is made here
        # (and returned) only where nothing did.
        given = request.headers.get(REQUEST_ID_HEADER)
        request_id = given or uuid.uuid4().hex
        id_header = {} if given else {REQUEST_ID_HEADER: request_id}
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
            return self._problem(problem, version, started, id_header)
        except (ValueError, TypeError, ArithmeticError) as error:
            # Values of the right types that the model cannot take (an overflow, an unseen category).
            logger.warning("raymlp: version %s could not score a request: %s", version, error)
            return self._problem(
                RequestProblem(422, f"the model could not score these values: {str(error)[:300]}"),
                version,
                started,
                id_header,
            )
        except Exception:
            logger.exception("raymlp: version %s failed on a request", version)
            self.metrics.answered(version, 500, started)
            return JSONResponse(
                {"detail": "prediction failed; the replica's log has the details"},
                status_code=500,
                headers=id_header,
            )
        payload: dict[str, Any] = {"model": self.spec.model, "version": version}
        payload.update(answers[0] if single else {"predictions": answers})
        self.metrics.answered(version, 200, started)
        captured = False
        latency_ms = (time.perf_counter() - started) * 1000.0
        arrived = time.time() - latency_ms / 1000.0
        if self.capture is not None:
            captured = self.capture.offer(
                request_id, arrived, latency_ms, version, self._capture_builder(version, package), records, answers
            )
        shadow = self.shadow
        if shadow is not None and shadow.version != version:
            shadow.offer(request_id, arrived, records, answers, captured)
        return JSONResponse(payload, headers={VERSION_HEADER: str(version), **id_header})

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
                "shadow": None
                if self.shadow is None
                else {"version": self.shadow.version, "records": dict(self.shadow.counts)},  # this replica's counts
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
    return ModelServer.options(  # type: ignore[attr-defined]  # a serve.Deployment, made by the decorator
        **deployment_options(serve_config, spec, quiet=quiet)
    ).bind(spec.model_dump())


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
    if spec.shadow:
        options["user_config"]["shadow"] = spec.shadow
    return options


def app_builder(args: dict[str, Any]) -> Any:
    """Entry point for a Serve config file (`raymlp serve build`): `import_path: raymlp.serve.app:app_builder`."""
    from raymlp.config.schema import ServeConfig

    spec = EndpointSpec.model_validate(args["spec"])
    return build_app(spec, ServeConfig.model_validate(args.get("serve", {})))
