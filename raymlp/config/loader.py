"""Read a job file: YAML with line numbers, migrations, --set overrides, ${ENV}, validation.

Every problem found is collected and raised once as a `ConfigError`, each as
``FILE:LINE: dotted.key: message``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raymlp.textfiles import TextFileError, decode_utf8, read_bytes

from .checks import run_checks
from .schema import CURRENT_VERSION, JobConfig
from .yamlfile import (
    ConfigError,
    ConfigIssue,
    Path_,
    _interpolate,
    _parse_yaml,
    _Source,
    _validation_issues,
    dotted,
)

#: version -> function that rewrites a raw job of that version into the next version.
#: Each returns the new raw mapping and a mapping of renamed dotted paths (old -> new).
Migration = Callable[[dict[str, Any]], tuple[dict[str, Any], dict[Path_, Path_]]]
MIGRATIONS: dict[int, Migration] = {}

_SET_KEY = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*$")


@dataclass
class LoadedJob:
    """A validated job and what is needed to report on it."""

    config: JobConfig
    path: Path
    sha256: str
    overrides: list[str] = field(default_factory=list)
    secret_paths: dict[Path_, str] = field(default_factory=dict)
    #: Where each dotted path came from (file line or --set), for problems found after loading.
    source: Any = field(default=None, repr=False, compare=False)

    def config_error(self, findings: Iterable[tuple[Path_, str]]) -> ConfigError:
        """A ConfigError placing each (path, message) as FILE:LINE: key: message, like load_job's own."""
        located = _Source(str(self.path))
        if self.source is not None:
            located.lines, located.origin = self.source.lines, self.source.origin
        for path, message in findings:
            located.add(path, message)
        return ConfigError(located.issues)

    def public_dict(self) -> dict[str, Any]:
        """The resolved config with values that came from ${ENV} shown as their reference."""
        data = self.config.model_dump(mode="json", by_alias=True, exclude_none=True)
        for path, template in self.secret_paths.items():
            _assign(data, path, template, create=False)
        return data


# --- --set overrides ----------------------------------------------------------------------------


def _assign(data: Any, path: Path_, value: Any, *, create: bool) -> None:
    target = data
    for position, part in enumerate(path[:-1]):
        if isinstance(target, list):
            target = target[int(part)]
            continue
        if part not in target or target[part] is None:
            if not create:
                return
            target[part] = {}
        target = target[part]
        if not isinstance(target, (dict, list)):
            raise KeyError(dotted(path[: position + 1]))
    last = path[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


def _split_set_key(key: str, data: Any) -> Path_:
    parts: list[str | int] = []
    target = data
    for part in key.split("."):
        if isinstance(target, list) and part.isdigit():
            parts.append(int(part))
            target = target[int(part)] if int(part) < len(target) else None
        else:
            parts.append(part)
            target = target.get(part) if isinstance(target, dict) else None
    return tuple(parts)


def _apply_overrides(raw: dict[str, Any], overrides: list[str], source: _Source) -> None:
    for override in overrides:
        label = f"--set {override}"
        key, equals, text = override.partition("=")
        key = key.strip()
        if not equals or not _SET_KEY.match(key):
            source.issues.append(
                ConfigIssue(label, key, "expected KEY=VALUE with a dotted key, e.g. --set train.epochs=5")
            )
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text  # not YAML (e.g. ">= 0.9"): the text itself
        path = _split_set_key(key, raw)
        try:
            _assign(raw, path, value, create=True)
        except (KeyError, IndexError, ValueError, TypeError) as error:
            source.issues.append(ConfigIssue(label, key, f"cannot set it: {error} is not a mapping or list index"))
            continue
        source.origin[path] = label
        for known in list(source.lines):
            if known[: len(path)] == path and len(known) > len(path):
                del source.lines[known]


# --- ${ENV} interpolation -------------------------------------------------------------------------


# --- migrations ---------------------------------------------------------------------------------


def _migrate(raw: dict[str, Any], source: _Source) -> dict[str, Any] | None:
    version = raw.get("version")
    if version is None:
        source.add(("version",), f"required key is missing; this raymlp reads job files of version {CURRENT_VERSION}")
        return None
    if isinstance(version, bool) or not isinstance(version, int):
        source.add(("version",), f"must be an integer, got {version!r}")
        return None
    if version > CURRENT_VERSION:
        source.add(
            ("version",),
            f"version {version} is newer than this raymlp reads (up to {CURRENT_VERSION}); upgrade raymlp",
        )
        return None
    while version < CURRENT_VERSION:
        migration = MIGRATIONS.get(version)
        if migration is None:
            source.add(("version",), f"no migration from version {version}; supported: {sorted(MIGRATIONS) or 'none'}")
            return None
        raw, renamed = migration(raw)
        for old, new in renamed.items():
            if old in source.lines:
                source.lines[new] = source.lines[old]
        version += 1
        raw["version"] = version
    return raw


# --- pydantic errors -> issues ------------------------------------------------------------------

# --- entry points -------------------------------------------------------------------------------


def load_job(path: str | os.PathLike[str], overrides: list[str] | None = None) -> LoadedJob:
    """Load and fully check a job file; raise `ConfigError` listing every problem."""
    file = Path(path)
    label = str(path)
    overrides = list(overrides or [])
    source = _Source(label)
    try:
        data = read_bytes(file, label, what="job file")
        text = decode_utf8(data, label)
    except TextFileError as error:
        raise ConfigError([ConfigIssue(error.where, "", error.problem)]) from None

    raw = _parse_yaml(text, source)
    if raw is not None and not isinstance(raw, dict):
        source.add((), f"the top level must be a mapping of sections, got {type(raw).__name__}")
        raw = None
    if raw is not None:
        raw = _migrate(raw, source)
    if raw is None:
        raise ConfigError(source.issues)

    _apply_overrides(raw, overrides, source)
    secrets: dict[Path_, str] = {}
    raw = _interpolate(raw, (), source, secrets)
    if source.issues:
        # Validation would repeat these as type errors; report the cause only.
        _report_schema_too(raw, source)
        raise ConfigError(source.issues)

    try:
        config = JobConfig.model_validate(raw)
    except ValidationError as error:
        _validation_issues(error, source)
        raise ConfigError(source.issues) from None

    for rule_path, message in run_checks(config, file):
        source.add(rule_path, message)
    if source.issues:
        raise ConfigError(source.issues)
    digest = hashlib.sha256(data + "\0".join(overrides).encode()).hexdigest()
    return LoadedJob(config=config, path=file, sha256=digest, overrides=overrides, secret_paths=secrets, source=source)


def _report_schema_too(raw: dict[str, Any], source: _Source) -> None:
    """Add schema errors that are not caused by the problems already found."""
    try:
        JobConfig.model_validate(raw)
    except ValidationError as error:
        known = {(issue.where, issue.key) for issue in source.issues}
        extra = _Source(source.label)
        extra.lines, extra.origin = source.lines, source.origin
        _validation_issues(error, extra)
        source.issues += [issue for issue in extra.issues if (issue.where, issue.key) not in known]


def job_json_schema() -> dict[str, Any]:
    """The JSON Schema of the job file, from the same models that validate it."""
    schema = JobConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"raymlp job file, version {CURRENT_VERSION}"
    return schema
