"""Read a job file: YAML with line numbers, migrations, --set overrides, ${ENV}, validation.

Every problem found is collected and raised once as a `ConfigError`, each as
``FILE:LINE: dotted.key: message``.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from raymlp.errors import UsageError

from .checks import model_at, run_checks
from .schema import CURRENT_VERSION, JobConfig

Path_ = tuple[str | int, ...]
ModelT = TypeVar("ModelT", bound=BaseModel)

#: version -> function that rewrites a raw job of that version into the next version.
#: Each returns the new raw mapping and a mapping of renamed dotted paths (old -> new).
Migration = Callable[[dict[str, Any]], tuple[dict[str, Any], dict[Path_, Path_]]]
MIGRATIONS: dict[int, Migration] = {}

_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SET_KEY = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*$")


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a job file, with where it is."""

    where: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.key}: {self.message}" if self.key else f"{self.where}: {self.message}"


class ConfigError(UsageError):
    """All problems found in one job file (or `what` other file), in file order, then those of --set overrides."""

    def __init__(self, issues: list[ConfigIssue], what: str = "the job file"):
        issues = sorted(issues, key=_file_order)
        self.issues = issues
        count = f"{len(issues)} problem{'s' if len(issues) != 1 else ''}"
        super().__init__("\n".join([*map(str, issues), f"{count} in {what}"]))
        self.what = what

    def __reduce__(self):
        # Ray and Tune re-raise an error from a worker by copying it; the default copy passes the message as `issues`.
        return (type(self), (self.issues, self.what))


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
        for dotted, template in self.secret_paths.items():
            _assign(data, dotted, template, create=False)
        return data


def _file_order(issue: ConfigIssue) -> tuple[int, str, int]:
    label, _, line = issue.where.rpartition(":")
    if issue.where.startswith("--set") or not line.isdigit():
        return (1, "", 0)
    return (0, label, int(line))


# --- YAML with line numbers ---------------------------------------------------------------------


class _Source:
    """The raw mapping of a file plus the line of every dotted path in it."""

    def __init__(self, label: str):
        self.label = label
        self.lines: dict[Path_, int] = {}
        self.origin: dict[Path_, str] = {}  # path -> where a --set put it
        self.issues: list[ConfigIssue] = []

    def where(self, path: Path_) -> str:
        for cut in range(len(path), -1, -1):
            prefix = path[:cut]
            if prefix in self.origin:
                return self.origin[prefix]
            if prefix in self.lines:
                return f"{self.label}:{self.lines[prefix]}"
        return f"{self.label}:1"

    def add(self, path: Path_, message: str) -> None:
        self.issues.append(ConfigIssue(self.where(path), dotted(path), message))


def dotted(path: Iterable[str | int]) -> str:
    """('train', 'optimizer', 'lr') -> 'train.optimizer.lr'."""
    return ".".join(str(part) for part in path)


def _construct(node: yaml.Node, path: Path_, source: _Source) -> Any:
    source.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        first_seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else str(_construct(key_node, path, source))
            line = key_node.start_mark.line + 1
            child = (*path, key if isinstance(key, (str, int)) else str(key))
            if key in first_seen:
                source.lines[child] = line
                source.add(child, f"duplicate key (first given at line {first_seen[key]})")
                continue
            first_seen[key] = line
            source.lines[child] = line
            result[key] = _construct(value_node, child, source)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, index), source) for index, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


#: What PyYAML's context names, as a user sees it opened.
_OPENERS = {"flow mapping": "'{'", "flow sequence": "'['", "quoted scalar": "a quote"}


def _yaml_problem(error: yaml.MarkedYAMLError) -> tuple[int, str]:
    """The line and words for a YAML syntax error: tabs and unclosed brackets or quotes said plainly,
    at the line where the bracket or quote opened (PyYAML notices only at a later line)."""
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark else 1
    problem, context = error.problem or "", error.context or ""
    if "'\\t'" in problem or "tab character" in problem:
        return line, "tab character; indent with spaces"
    opened = error.context_mark
    if opened is not None and mark is not None and opened.line != mark.line:
        opener = next((shown for kind, shown in _OPENERS.items() if kind in context), None)
        if opener:
            return opened.line + 1, f"{opener} opened on this line is not closed (at line {line}: {problem})"
    return line, "invalid YAML: " + " ".join(part for part in (context, problem) if part)


def _parse_yaml(text: str, source: _Source, empty: str = "the file is empty; a job needs version, name and data") -> Any:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        line, problem = _yaml_problem(error)
        source.issues.append(ConfigIssue(f"{source.label}:{line}", "", problem))
        return None
    except yaml.YAMLError as error:
        source.issues.append(ConfigIssue(f"{source.label}:1", "", f"invalid YAML: {error}"))
        return None
    if node is None:
        source.issues.append(ConfigIssue(f"{source.label}:1", "", empty))
        return None
    return _construct(node, (), source)


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


def _interpolate(value: Any, path: Path_, source: _Source, secrets: dict[Path_, str]) -> Any:
    if isinstance(value, dict):
        return {key: _interpolate(item, (*path, key), source, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, (*path, index), source, secrets) for index, item in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        source.add(path, f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)")
        return ""

    resolved = _ENV_REFERENCE.sub(replace, value)
    if resolved != value and _ENV_REFERENCE.search(value.replace("$$", "")):
        secrets[path] = value
    return resolved


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

_UNION_TAGS = {"mlp", "cnn", "custom", "xgboost", "estimator", "InlineEnv", "literal['default']", "env-name", "env-inline",
               "[key]"}


def _preprocess_step_models() -> dict[str, type[BaseModel]]:
    from typing import get_args

    from .schema import PreprocessStep

    union = get_args(PreprocessStep)[0]
    return {get_args(model.model_fields["type"].annotation)[0]: model for model in get_args(union)}


#: preprocess step type -> its section model (pydantic puts the type in an error's location).
_PREPROCESS_TYPES = _preprocess_step_models()


def _clean_location(loc: tuple[Any, ...]) -> Path_:
    cleaned: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and (part in _UNION_TAGS or part.startswith(("function-", "literal["))):
            continue
        # The discriminated union of preprocess steps puts the step's type in the location.
        if len(cleaned) == 2 and cleaned[0] == "preprocess" and part in _PREPROCESS_TYPES:
            continue
        if part == "schema_":
            part = "schema"
        cleaned.append(part)
    return tuple(cleaned)


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _message(error: Any, path: Path_, root: type[BaseModel] = JobConfig) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        parent = model_at(path[:-1], root)
        loc = error["loc"]
        if parent is None and len(loc) > 3 and loc[0] == "preprocess" and loc[2] in _PREPROCESS_TYPES:
            parent = _PREPROCESS_TYPES[loc[2]]
        key = str(path[-1])
        if parent is not None:
            allowed = _allowed_keys(parent)
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            return f"unknown key; {hint}allowed keys: {', '.join(allowed)}"
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        context = error.get("ctx", {})
        return f"unknown {context.get('discriminator', 'tag').strip(chr(39))} '{context.get('tag')}'; allowed: {context.get('expected_tags', '').replace(chr(39), '')}"
    message = message.removeprefix("Value error, ")
    if kind not in {"value_error", "assertion_error"} and "input" in error and not isinstance(error["input"], (dict, list)):
        message += f" (got {error['input']!r})"
    return message


def _validation_issues(error: ValidationError, source: _Source, root: type[BaseModel] = JobConfig) -> None:
    seen: set[tuple[Path_, str]] = set()
    for item in error.errors(include_url=False):
        path = _clean_location(item["loc"])
        message = _message(item, path, root)
        if item["type"] == "union_tag_invalid":
            path = (*path, item.get("ctx", {}).get("discriminator", "type").strip("'"))
        if (path, message) in seen:
            continue
        seen.add((path, message))
        source.add(path, message)


# --- entry points -------------------------------------------------------------------------------


def load_job(path: str | os.PathLike[str], overrides: list[str] | None = None) -> LoadedJob:
    """Load and fully check a job file; raise `ConfigError` listing every problem."""
    file = Path(path)
    label = str(path)
    overrides = list(overrides or [])
    source = _Source(label)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(label, "", "no such job file")]) from None
    except OSError as error:
        raise ConfigError([ConfigIssue(label, "", f"cannot read the job file: {error.strerror}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue(f"{label}:{line}", "", "the file is not UTF-8 text")]) from None

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


def load_yaml_model(path: str | os.PathLike[str], model: type[ModelT], *, what: str, empty: str,
                    label: str | None = None) -> tuple[ModelT, dict[Path_, str]]:
    """Load another raymlp YAML file (an environment of envs/, ...) the way a job is loaded: lines kept,
    `${ENV}` interpolated, validated by `model`; every problem raised at once as a `ConfigError` of
    `FILE:LINE: key: message` lines ending "N problems in `what`". Returns the model and the paths whose
    values came from `${ENV}` (as their templates)."""
    file = Path(path)
    label = label or str(path)
    source = _Source(label)
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(label, "", "no such file")], what) from None
    except OSError as error:
        raise ConfigError([ConfigIssue(label, "", f"cannot read the file: {error.strerror}")], what) from None
    except UnicodeDecodeError as error:
        line = file.read_bytes()[: error.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue(f"{label}:{line}", "", "the file is not UTF-8 text")], what) from None
    raw = _parse_yaml(text, source, empty)
    if raw is not None and not isinstance(raw, dict):
        source.add((), f"the top level must be a mapping of settings, got {type(raw).__name__}")
        raw = None
    if raw is None:
        raise ConfigError(source.issues, what)
    secrets: dict[Path_, str] = {}
    raw = _interpolate(raw, (), source, secrets)
    try:
        loaded = model.model_validate(raw)
    except ValidationError as error:
        _validation_issues(error, source, model)
        loaded = None
    if source.issues:
        raise ConfigError(source.issues, what)
    return loaded, secrets


def job_json_schema() -> dict[str, Any]:
    """The JSON Schema of the job file, from the same models that validate it."""
    schema = JobConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"raymlp job file, version {CURRENT_VERSION}"
    return schema
