"""MLflow glue: one run per training run, the package as a model, registry versions and aliases."""

from __future__ import annotations

import json
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raymlp.config.schema import REQUIREMENT_PATTERN
from raymlp.errors import UsageError, WorkFailed

_PARAM_VALUE_LIMIT = 6000
_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<alias>[A-Za-z][A-Za-z0-9_-]*)|:(?P<version>\d+))?$")
PACKAGE_ARTIFACT = "package"


@dataclass(frozen=True)
class ModelRef:
    """NAME, NAME@ALIAS or NAME:VERSION."""

    name: str
    alias: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        return self.name + (f"@{self.alias}" if self.alias else f":{self.version}" if self.version else "")


def parse_model_ref(text: str) -> ModelRef:
    """Parse a model reference, or explain the accepted forms."""
    match = _REF.match(text.strip())
    if not match:
        raise UsageError(f"--model '{text}' is not NAME, NAME@ALIAS or NAME:VERSION")
    version = match.group("version")
    return ModelRef(match.group("name"), match.group("alias"), int(version) if version else None)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {'train.optimizer.lr': '0.001', ...}."""
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}{key}."))
        return flat
    text = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
    return {prefix.rstrip("."): text[:_PARAM_VALUE_LIMIT]}


def check_requirements(require: dict[str, str], metrics: dict[str, float]) -> list[str]:
    """Each requirement that does not hold, as a sentence; empty when the gate passes."""
    failures = []
    for metric, rule in require.items():
        operator, threshold = REQUIREMENT_PATTERN.match(rule).group(1, 2)  # type: ignore[union-attr]
        value = metrics.get(metric)
        limit = float(threshold)
        holds = value is not None and {
            ">=": value >= limit, "<=": value <= limit, ">": value > limit, "<": value < limit, "==": value == limit,
        }[operator]
        if not holds:
            failures.append(f"{metric} is {value if value is not None else 'missing'}, required {operator} {threshold}")
    return failures


@contextmanager
def _global_uris(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs set to `uri` for the block, then restored."""
    import mlflow

    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


class Tracker:
    """An MLflow tracking store and model registry at one URI."""

    def __init__(self, tracking_uri: str, artifact_root: Path):
        from mlflow import MlflowClient

        self.uri = tracking_uri
        self.artifact_root = Path(artifact_root)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def experiment_id(self, name: str) -> str:
        """The experiment called `name`, created with artifacts under the storage root if new."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = (self.artifact_root / "mlartifacts" / name).resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # created concurrently by another process
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def start_run(self, experiment: str, run_name: str, tags: dict[str, str]) -> str:
        """A new MLflow run; returns its id."""
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name, tags=tags)
        return run.info.run_id

    def log_params(self, run_id: str, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key, value) for key, value in flatten(config).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[start : start + 100])

    def log_metrics(self, run_id: str, rows: list[dict[str, float]], step_key: str = "epoch") -> None:
        """Log each row at its step (per-epoch history), or at step 0 when it has none."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, int(row.get(step_key, 0)))
            for row in rows
            for key, value in row.items()
            if key != step_key and isinstance(value, (int, float))
        ]
        for start in range(0, len(metrics), 500):
            self.client.log_batch(run_id, metrics=metrics[start : start + 500])

    def log_package(self, run_id: str, package_dir: Path, pip_requirements: list[str]) -> str:
        """Log the package as an MLflow pyfunc model; returns its model URI."""
        import mlflow
        import mlflow.pyfunc

        from .pyfunc import RaymlpPackageModel

        with _global_uris(self.uri), mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=RaymlpPackageModel(),
                artifacts={PACKAGE_ARTIFACT: str(package_dir)},
                pip_requirements=pip_requirements,
            )
        return info.model_uri

    def register(self, model_uri: str, name: str, run_id: str) -> int:
        """A new registry version of `name` for `model_uri`."""
        from mlflow.exceptions import MlflowException

        with _global_uris(self.uri):  # MLflow resolves a models:/ source through the global URI
            try:
                self.client.get_registered_model(name)
            except MlflowException:
                self.client.create_registered_model(name)
            version = self.client.create_model_version(name, model_uri, run_id=run_id)
        return int(version.version)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def resolve(self, ref: ModelRef) -> tuple[int, Any]:
        """(version number, ModelVersion) that a reference names."""
        from mlflow.exceptions import MlflowException

        try:
            if ref.alias:
                found = self.client.get_model_version_by_alias(ref.name, ref.alias)
            elif ref.version:
                found = self.client.get_model_version(ref.name, str(ref.version))
            else:
                versions = self.client.search_model_versions(f"name = '{ref.name}'")
                if not versions:
                    raise MlflowException(f"no versions of {ref.name}")
                found = max(versions, key=lambda item: int(item.version))
        except MlflowException:
            known = [model.name for model in self.client.search_registered_models()]
            raise UsageError(
                f"model {ref} is not in the registry at {self.uri} (registered models: {', '.join(known) or 'none'})"
            ) from None
        return int(found.version), found

    def package_for(self, ref: ModelRef, cache: Path) -> tuple[Path, int]:
        """A local copy of the package that `ref` names (kept in `cache` per name and version)."""
        import mlflow.artifacts

        version, found = self.resolve(ref)
        target = Path(cache) / ref.name / str(version)
        package = target / "artifacts" / PACKAGE_ARTIFACT
        if not package.exists():
            staging = target.with_name(f".{version}.download")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            try:
                with _global_uris(self.uri):
                    mlflow.artifacts.download_artifacts(artifact_uri=found.source, dst_path=str(staging), tracking_uri=self.uri)
                if target.exists():
                    shutil.rmtree(target)
                staging.rename(target)
            except Exception as error:
                shutil.rmtree(staging, ignore_errors=True)
                raise WorkFailed(f"cannot fetch model {ref} (version {version}): {error}") from None
        if not package.exists():
            raise WorkFailed(f"model {ref} (version {version}) has no raymlp package; it was not logged by raymlp")
        return package, version
