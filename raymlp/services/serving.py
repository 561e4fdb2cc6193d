"""Serve a model on Ray Serve: a registered model with its job's (or the command line's) serve
settings (`raymlp serve`, `raymlp serve build`), or the package a run trained or names (the
pipeline's serve stage, proven with a real request)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raymlp.config.schema import ServeConfig
from raymlp.errors import UsageError
from raymlp.storage import Storage
from raymlp.tracking import ModelRef, Tracker, parse_model_ref

from .jobs import load, storage_for
from .models import fetch_model, ref_for, tracker_for


@dataclass(frozen=True)
class Serving:
    """A registered model to serve, fetched and checked, with the settings it is served with."""

    ref: ModelRef
    config: ServeConfig
    storage: Storage
    tracker: Tracker
    package: Path
    version: int

    @property
    def pinned(self) -> bool:
        """Served as one version (NAME or NAME:VERSION, no traffic split): that version's package."""
        return self.ref.alias is None and self.config.traffic is None

    @property
    def app_name(self) -> str:
        return self.ref.name


@dataclass(frozen=True)
class Served:
    """An endpoint that is up and answering."""

    url: str
    split: str  # "champion 90, challenger 10"
    embedded: bool  # on an embedded Ray, which ends with this process


def resolve_serving(
    job: Path | None, overrides: list[str] | None, model: str | None, traffic: str | None, options: dict[str, Any]
) -> Serving:
    """The model named on the command line (else by the job's register section), its ServeConfig (the
    job's serve section, then `options` and `traffic`), fetched from the registry."""
    loaded = load(job, overrides) if job else None
    ref, config = served_model(loaded, model, traffic, options)
    storage = storage_for(job)
    tracker = tracker_for(storage)
    package, version = fetch_model(storage, ref, tracker)
    return Serving(ref, config, storage, tracker, package, version)


def served_model(
    loaded: Any, model: str | None, traffic: str | None, options: dict[str, Any]
) -> tuple[ModelRef, ServeConfig]:
    """(the model named on the command line or by the job's register section, its ServeConfig)."""
    if model:
        ref = parse_model_ref(model)
    elif loaded and loaded.config.register:
        ref = ModelRef(loaded.config.register.model, alias=loaded.config.register.alias)
    else:
        raise UsageError("name the model: raymlp serve --model NAME@ALIAS, or a job file with a register section")
    base = loaded.config.serve if loaded and loaded.config.serve else ServeConfig()
    settings = base.model_dump(exclude_none=True)
    settings.update({key: value for key, value in options.items() if value is not None})
    if traffic is not None:
        split: dict[str, float] = {}
        for part in traffic.split(","):
            key, _, share = part.partition("=")
            try:
                split[key.strip()] = float(share)
            except ValueError:
                raise UsageError(
                    f"--traffic: '{part}' is not ALIAS=SHARE or VERSION=SHARE (e.g. champion=90,challenger=10)"
                ) from None
        settings["traffic"] = split
    try:
        return ref, ServeConfig.model_validate(settings)
    except Exception as error:
        raise UsageError(f"serve settings: {error}") from None


@contextlib.contextmanager
def serve_registered(serving: Serving, address: str | None) -> Iterator[Served]:
    """Deploy the model on `address`'s Ray (else an embedded one) and wait until it answers; the
    endpoint stays up while the context is open (an embedded Ray stops when it closes)."""
    from raymlp.runtime import ray_runtime
    from raymlp.serve.deploy import deploy, endpoint_spec, wait_until_healthy

    ref, storage = serving.ref, serving.storage
    spec = endpoint_spec(
        serving.config,
        ref.name,
        alias=ref.alias,
        version=serving.version,
        package=str(serving.package) if serving.pinned else None,
        storage=storage,
    )
    for reference in spec.traffic:  # every alias and version exists before anything starts
        if reference not in spec.packages:
            fetch_model(storage, ref_for(ref.name, reference), serving.tracker)
    with ray_runtime(address) as runtime:
        endpoint = deploy(spec, serving.config, app_name=serving.app_name)
        wait_until_healthy(endpoint)
        yield Served(
            url=endpoint.url,
            split=", ".join(f"{key} {value:g}" for key, value in spec.traffic.items()),
            embedded=runtime.embedded,
        )


def build_serve_config(serving: Serving, output: Path) -> tuple[Any, str]:
    """Write the endpoint as a Serve config file (`serve deploy`, a KubeRay RayService); returns
    (the file written, the traffic split as KEY=SHARE, ...)."""
    from raymlp.serve.deploy import endpoint_spec, serve_config_file

    spec = endpoint_spec(
        serving.config,
        serving.ref.name,
        alias=serving.ref.alias,
        version=serving.version if serving.pinned else None,
        storage=serving.storage,
        keys_from_replica_env=True,
    )
    written = serve_config_file(spec, serving.config, serving.app_name, output)
    return written, ", ".join(f"{key}={value:g}" for key, value in spec.traffic.items())


def serve_package(
    config: ServeConfig,
    package: str,
    metadata: dict[str, Any],
    storage: Storage,
    *,
    app_name: str,
    job: str,
    records: Callable[[], list[dict[str, Any]]],
) -> tuple[str, Any]:
    """The pipeline's serve stage: deploy one package (a run's, or the registered model the job names),
    then POST the first of `records()` to prove it answers; returns (the endpoint's URL, its prediction)."""
    from raymlp.serve.deploy import deploy, endpoint_spec, smoke_request

    spec = endpoint_spec(
        config,
        metadata["model"],
        version=metadata["version"],
        package=package,
        storage=storage,
        run_id=metadata.get("run_id"),
        job=job,
    )
    endpoint = deploy(spec, config, app_name=app_name, quiet=True)
    examples = records()
    api_key = os.environ.get(config.api_keys_env, "").split(",")[0].strip() if config.api_keys_env else None
    answer = smoke_request(endpoint, examples[:1] if examples else [{}], api_key=api_key)
    prediction = answer.get("predictions", [answer])[0].get("prediction") if answer else None
    return endpoint.url, prediction
