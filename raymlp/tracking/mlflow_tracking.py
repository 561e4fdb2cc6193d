"""MLflow glue: one run per training run, the package as a model, registry versions and aliases."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raymlp.config.schema import REQUIREMENT_PATTERN
from raymlp.errors import UsageError, WorkFailed

_PARAM_VALUE_LIMIT = 6000
ALIAS_HISTORY_TAG = "raymlp.alias_history."
_ALIAS_HISTORY_LIMIT = 5000  # MLflow's SQL stores keep a registered-model tag value in VARCHAR(5000)
_MLFLOW_DIGEST_LIMIT = 36  # MLflow keeps at most 36 characters of a dataset digest
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
        raise UsageError(f"model '{text}' is not NAME, NAME@ALIAS or NAME:VERSION{_other_form(text.strip())}")
    version = match.group("version")
    return ModelRef(match.group("name"), match.group("alias"), int(version) if version else None)


def _other_form(text: str) -> str:
    """A hint when `text` uses a dataset's NAME@VERSION, or ':' before an alias."""
    name, at, after = text.rpartition("@") if "@" in text else text.rpartition(":")
    if not name or not _REF.match(name):
        return ""
    if at == "@" and after.isdigit():
        return f"; did you mean {name}:{after}? (a model version is NAME:VERSION; NAME@ALIAS names an alias)"
    if at == ":" and _REF.match(f"{name}@{after}"):
        return f"; did you mean {name}@{after}? (an alias is NAME@ALIAS; NAME:VERSION takes a number)"
    return ""


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
        holds = (
            value is not None
            and {
                ">=": value >= limit,
                "<=": value <= limit,
                ">": value > limit,
                "<": value < limit,
                "==": value == limit,
            }[operator]
        )
        if not holds:
            failures.append(f"{metric} is {value if value is not None else 'missing'}, required {operator} {threshold}")
    return failures


def mlflow_dataset_digest(content_digest: str) -> str:
    """The digest MLflow records for a dataset version: the first 36 hex digits of its content digest."""
    return content_digest.split(":", 1)[-1][:_MLFLOW_DIGEST_LIMIT]


def _mlflow_schema(columns: list[dict[str, Any]]) -> Any:
    """A dataset manifest's Arrow columns as an MLflow column schema (`any` where MLflow has no match)."""
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import AnyType

    exact = {
        "double": DataType.double,
        "float": DataType.float,
        "halffloat": DataType.float,
        "bool": DataType.boolean,
        "string": DataType.string,
        "large_string": DataType.string,
        "string_view": DataType.string,
        "binary": DataType.binary,
        "large_binary": DataType.binary,
        "int64": DataType.long,
        "uint32": DataType.long,
        "uint64": DataType.long,
        "int32": DataType.integer,
        "int16": DataType.integer,
        "int8": DataType.integer,
        "uint16": DataType.integer,
        "uint8": DataType.integer,
    }

    def kind(arrow_type: str) -> Any:
        if arrow_type in exact:
            return exact[arrow_type]
        return DataType.datetime if arrow_type.startswith(("timestamp", "date")) else AnyType()

    return Schema(
        [ColSpec(kind(column["type"]), column["name"], required=not column.get("nullable", True)) for column in columns]
    )


def _standing_moves(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The moves no rollback has undone, oldest first: a move pushes, a rollback pops one, and a
    recorded deletion (version null) clears them all."""
    standing: list[dict[str, Any]] = []
    for move in history:
        if move.get("by") == "rollback":
            standing = standing[:-1]
        elif move.get("version") is None:
            standing = []
        else:
            standing.append(move)
    return standing


def alias_stack(history: list[dict[str, Any]]) -> list[int]:
    """The versions an alias can roll back through, oldest first; the last is where it points."""
    return [int(move["version"]) for move in _standing_moves(history)]


def _fit_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`history` short enough for one tag: if it is not, only the standing moves are kept (rollback
    works the same), and then, if need be, the oldest of those are dropped."""
    if len(_history_json(history)) <= _ALIAS_HISTORY_LIMIT:
        return history
    kept = _standing_moves(history)
    while len(kept) > 1 and len(_history_json(kept)) > _ALIAS_HISTORY_LIMIT:
        kept.pop(0)
    return kept


def _history_json(history: list[dict[str, Any]]) -> str:
    return json.dumps(history, separators=(",", ":"))


def _recorded_history(model: Any, alias: str) -> list[dict[str, Any]]:
    """The alias history a registered model's tag holds."""
    key = ALIAS_HISTORY_TAG + alias
    text = (model.tags or {}).get(key)
    if not text:
        return []
    try:
        history = json.loads(text)
    except ValueError:
        raise WorkFailed(
            f"the registry tag {key} of model {model.name} is not JSON; it was changed outside raymlp"
        ) from None
    return history if isinstance(history, list) else []


def with_installed_driver(tracking_uri: str) -> str:
    """A database tracking URI that names no driver (`postgresql://`, `mysql://`) with one that is
    installed, as the catalog's URLs get: MLflow hands the URI to SQLAlchemy as written, whose
    `postgresql://` asks for psycopg 3."""
    if not tracking_uri.startswith(("postgresql://", "mysql://")):
        return tracking_uri
    from sqlalchemy.engine import make_url

    from raymlp.catalog import with_installed_driver as installed

    return installed(make_url(tracking_uri)).render_as_string(hide_password=False)


def _shown(uri: str) -> str:
    """A tracking URI as messages show it: without its password."""
    from raymlp.catalog import redact_url

    return redact_url(uri)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _metrics(rows: list[dict[str, float]], step_key: str) -> list[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [
        Metric(key, float(value), now, int(row.get(step_key, 0)))
        for row in rows
        for key, value in row.items()
        if key != step_key and isinstance(value, (int, float))
    ]


class Tracker:
    """An MLflow tracking store and model registry at one URI."""

    def __init__(self, tracking_uri: str, artifact_root: str | Path):
        from mlflow import MlflowClient

        self.uri = with_installed_driver(tracking_uri)
        self.artifact_root = str(artifact_root)  # a local folder or a bucket's prefix
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def experiment_id(self, name: str) -> str:
        """The experiment called `name`, created with artifacts under the storage root if new."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        from raymlp.storage import files

        location = files.join(self.artifact_root, "mlartifacts", name)
        if not files.is_remote(location):
            location = Path(location).resolve().as_uri()
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
        metrics = _metrics(rows, step_key)
        for start in range(0, len(metrics), 500):
            self.client.log_batch(run_id, metrics=metrics[start : start + 500])

    def record_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: dict[str, str],
        config: dict[str, Any],
        rows: list[dict[str, float]],
        status: str = "FINISHED",
    ) -> str:
        """A run that is over already (a light sweep trial's): created, its params and metrics
        logged in one batch (within MLflow's 100 params a batch) and ended, in three calls."""
        from mlflow.entities import Param

        run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        params = [Param(key, value) for key, value in flatten(config).items()]
        metrics = _metrics(rows, "epoch")
        for start in range(0, max(len(params), len(metrics), 1), 100):
            self.client.log_batch(run_id, params=params[start : start + 100], metrics=metrics[start : start + 100])
        self.client.set_terminated(run_id, status=status)
        return run_id

    def log_dataset_input(
        self,
        run_id: str,
        name: str,
        version: int,
        digest: str,
        source_uri: str,
        schema: list[dict[str, Any]] | None = None,
        rows: int | None = None,
        context: str = "training",
    ) -> None:
        """Record dataset version NAME@VERSION as an MLflow dataset input of the run.

        `digest` is the version's content digest (`sha256:...`); MLflow keeps 36 characters of a
        digest, so the input's digest is `mlflow_dataset_digest(digest)` and the full one is in its
        profile. `schema` is the manifest's column list.
        """
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        with warnings.catch_warnings():  # a local path matches two equivalent local source kinds
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(source_uri)
        profile = {"content_digest": digest, **({"num_rows": rows} if rows is not None else {})}
        dataset = Dataset(
            name=f"{name}@{version}",
            digest=mlflow_dataset_digest(digest),
            source_type=source._get_source_type(),
            source=source.to_json(),
            schema=json.dumps({"mlflow_colspec": _mlflow_schema(schema).to_dict()}) if schema else None,
            profile=json.dumps(profile),
        )
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=tags)])

    def log_package(self, run_id: str, package_dir: Path, pip_requirements: list[str]) -> str:
        """Log the package as an MLflow pyfunc model; returns its model URI."""
        import tempfile

        import mlflow
        import mlflow.pyfunc

        from .pyfunc import RaymlpPackageModel, carried_code

        with (
            _global_uris(self.uri),
            mlflow.start_run(run_id=run_id),
            warnings.catch_warnings(),
            tempfile.TemporaryDirectory(prefix="raymlp-code-") as scratch,
        ):
            warnings.simplefilter("ignore")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=RaymlpPackageModel(),
                artifacts={PACKAGE_ARTIFACT: str(package_dir)},
                pip_requirements=pip_requirements,
                code_paths=[str(carried_code(Path(scratch)))],  # raymlp is not on any index: its code goes along
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

    def set_alias(self, name: str, alias: str, version: int, *, by: str = "api") -> None:
        """Point `alias` at `version`, recording the move (and who made it: promote, register, ...)
        in the model's alias history, which `rollback_alias` follows back."""
        current, history = self._alias_state(name, alias)
        self.client.set_registered_model_alias(name, alias, str(version))
        if current != version:
            history.append({"version": int(version), "by": by, "at": _now()})
        self._write_alias_history(name, alias, history)

    def alias_version(self, name: str, alias: str) -> int | None:
        """The version `alias` points at now (None: it points nowhere)."""
        found = (self._registered_model(name).aliases or {}).get(alias)
        return int(found) if found is not None else None

    def alias_history(self, name: str, alias: str) -> list[dict[str, Any]]:
        """Every recorded move of NAME@ALIAS, oldest first: {version, by, at} (rollbacks also `from`)."""
        return _recorded_history(self._registered_model(name), alias)

    def rollback_alias(self, name: str, alias: str) -> tuple[int, int]:
        """Point `alias` back at the version it pointed at before its last move; (from, to) versions."""
        from mlflow.exceptions import MlflowException

        current, history = self._alias_state(name, alias)
        if current is None:
            aliases = sorted((self._registered_model(name).aliases or {}).keys())
            raise UsageError(f"model {name} has no alias '{alias}' (its aliases: {', '.join(aliases) or 'none'})")
        standing = alias_stack(history)
        if len(standing) < 2:
            raise UsageError(
                f"{name}@{alias} points at version {current} and no earlier version is recorded; "
                f"nothing to roll back to (move it with: raymlp models promote {name}:VERSION --alias {alias})"
            )
        target = standing[-2]
        try:
            self.client.set_registered_model_alias(name, alias, str(target))
        except MlflowException as error:
            raise WorkFailed(f"cannot point {name}@{alias} back at version {target}: {error.message}") from None
        history.append({"version": target, "by": "rollback", "from": current, "at": _now()})
        self._write_alias_history(name, alias, history)
        return current, target

    def remove_version(self, name: str, version: int, *, force: bool = False) -> dict[str, Any]:
        """Delete a registered model version (`raymlp models rm`); one that an alias points at only with
        `force` (the alias goes with it). Its run and artifacts stay in MLflow. Returns what was removed."""
        from mlflow.exceptions import MlflowException

        number, found = self.resolve(ModelRef(name, version=version))
        aliases = sorted(found.aliases or [])
        if aliases and not force:
            raise UsageError(
                f"{name}:{number} is what {', '.join(f'{name}@{alias}' for alias in aliases)} points at; "
                f"move the alias first (raymlp models promote {name}:VERSION --alias {aliases[0]}), "
                "or remove it anyway with --force"
            )
        try:
            self.client.delete_model_version(name, str(number))
        except MlflowException as error:
            raise WorkFailed(f"cannot delete {name}:{number}: {error.message}") from None
        return {"model": name, "version": number, "aliases": aliases, "run_id": found.run_id}

    def _registered_model(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException:
            known = [model.name for model in self.client.search_registered_models()]
            raise UsageError(
                f"model {name} is not in the registry at {_shown(self.uri)} (registered models: {', '.join(known) or 'none'})"
            ) from None

    def _alias_state(self, name: str, alias: str) -> tuple[int | None, list[dict[str, Any]]]:
        """Where the alias points now, and its history brought up to date with that: a move or a
        deletion made outside raymlp (MLflow UI, another client) is recorded as `by: outside raymlp`."""
        model = self._registered_model(name)
        found = (model.aliases or {}).get(alias)
        current = int(found) if found is not None else None
        history = _recorded_history(model, alias)
        standing = alias_stack(history)
        if current != (standing[-1] if standing else None):
            history.append({"version": current, "by": "outside raymlp", "at": _now()})
        return current, history

    def _write_alias_history(self, name: str, alias: str, history: list[dict[str, Any]]) -> None:
        self.client.set_registered_model_tag(name, ALIAS_HISTORY_TAG + alias, _history_json(_fit_history(history)))

    def log_artifact(self, run_id: str, path: str | Path) -> None:
        """Log a local file, or a copy of an object in the storage bucket, as an artifact of the run."""
        from raymlp.storage import files

        if not files.is_remote(path):
            self.client.log_artifact(run_id, str(path))
            return
        with tempfile.TemporaryDirectory(prefix="raymlp-artifact-") as folder:
            local = Path(folder) / files.name_of(path)
            local.write_bytes(files.read_bytes(path))
            self.client.log_artifact(run_id, str(local))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

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
            raise UsageError(self._missing(ref)) from None
        return int(found.version), found

    def _missing(self, ref: ModelRef) -> str:
        """Why `ref` names nothing: the model is not registered, or it has no such version or alias."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(ref.name)
        except MlflowException:
            known = [model.name for model in self.client.search_registered_models()]
            return f"model {ref.name} is not in the registry at {_shown(self.uri)} (registered models: {', '.join(known) or 'none'})"
        versions = sorted(int(item.version) for item in self.client.search_model_versions(f"name = '{ref.name}'"))
        listing = ", ".join(map(str, versions)) or "none"
        if ref.alias:
            aliases = ", ".join(f"{alias} -> {version}" for alias, version in sorted((model.aliases or {}).items()))
            return f"model {ref.name} has no alias '{ref.alias}' (aliases: {aliases or 'none'}; versions: {listing})"
        if ref.version:
            return f"model {ref.name} has no version {ref.version} (versions: {listing})"
        return f"model {ref.name} has no versions"

    def package_for(self, ref: ModelRef, cache: Path) -> tuple[Path, int]:
        """A local copy of the package that `ref` names (kept in `cache` per name and version)."""
        import mlflow.artifacts

        version, found = self.resolve(ref)
        target = Path(cache) / ref.name / str(version)
        package = target / "artifacts" / PACKAGE_ARTIFACT
        if not package.exists():
            # Several processes (Serve replicas) may fetch the same version at once: each into its
            # own staging folder; the first rename wins and the others keep what it put there.
            staging = target.with_name(f".{version}.download-{uuid.uuid4().hex[:8]}")
            staging.mkdir(parents=True)
            try:
                with _global_uris(self.uri):
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=found.source, dst_path=str(staging), tracking_uri=self.uri
                    )
                if target.exists() and not package.exists():
                    shutil.rmtree(target, ignore_errors=True)
                try:
                    staging.rename(target)
                except OSError:
                    if not package.exists():
                        raise
            except Exception as error:
                raise WorkFailed(f"cannot fetch model {ref} (version {version}): {error}") from None
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if not package.exists():
            raise WorkFailed(f"model {ref} (version {version}) has no raymlp package; it was not logged by raymlp")
        return package, version
