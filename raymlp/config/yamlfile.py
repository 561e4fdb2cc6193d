"""Reading a raymlp YAML file (a job file, an environment of envs/): lines kept for every dotted path,
`${ENV}` interpolated, pydantic's errors said as `FILE:LINE: dotted.key: message`.

The job loader (`loader.load_job`) and the environment files (`envs.load_env`) both read through
here; it imports nothing of raymlp's config but the schema, so `checks` -> `envs` -> here stays a
line, not a circle.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from raymlp.errors import UsageError
from raymlp.textfiles import TextFileError, read_utf8

from .schema import JobConfig

Path_ = tuple[str | int, ...]
ModelT = TypeVar("ModelT", bound=BaseModel)

_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
            key = (
                _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else str(_construct(key_node, path, source))
            )
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


def _parse_yaml(
    text: str, source: _Source, empty: str = "the file is empty; a job needs version, name and data"
) -> Any:
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


# --- ${ENV} ---------------------------------------------------------------------------------------


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


# --- validation messages -----------------------------------------------------------------------


_UNION_TAGS = {
    "mlp",
    "cnn",
    "custom",
    "xgboost",
    "estimator",
    "InlineEnv",
    "literal['default']",
    "env-name",
    "env-inline",
    "[key]",
}


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
    if (
        kind not in {"value_error", "assertion_error"}
        and "input" in error
        and not isinstance(error["input"], (dict, list))
    ):
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


# --- walking a model's type tree by dotted path -----------------------------------------------------


def _options(annotation: Any) -> list[Any]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _options(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [option for argument in get_args(annotation) for option in _options(argument)]
    return [annotation]


def annotations_at(path: tuple[str | int, ...], root: type[BaseModel] = JobConfig) -> list[Any]:
    """Types a value at `path` of a job (or of another `root` model's file) may have; empty when no such path exists."""
    current: list[Any] = [root]
    for part in path:
        following: list[Any] = []
        for annotation in current:
            for option in _options(annotation):
                origin = get_origin(option)
                if isinstance(option, type) and issubclass(option, BaseModel) and isinstance(part, str):
                    following += [
                        info.annotation for name, info in option.model_fields.items() if part in (name, info.alias)
                    ]
                elif origin is list and isinstance(part, int):
                    following.append(get_args(option)[0])
                elif origin is dict and isinstance(part, str):
                    following.append(get_args(option)[1])
        current = following
    return current


def model_at(path: tuple[str | int, ...], root: type[BaseModel] = JobConfig) -> type[BaseModel] | None:
    """The one section model that validates the mapping at `path`, if exactly one does."""
    models = {
        option
        for annotation in annotations_at(path, root)
        for option in _options(annotation)
        if isinstance(option, type) and issubclass(option, BaseModel)
    }
    return models.pop() if len(models) == 1 else None


# --- other raymlp YAML files ---------------------------------------------------------------------


def load_yaml_model(
    path: str | os.PathLike[str], model: type[ModelT], *, what: str, empty: str, label: str | None = None
) -> tuple[ModelT, dict[Path_, str]]:
    """Load another raymlp YAML file (an environment of envs/, ...) the way a job is loaded: lines kept,
    `${ENV}` interpolated, validated by `model`; every problem raised at once as a `ConfigError` of
    `FILE:LINE: key: message` lines ending "N problems in `what`". Returns the model and the paths whose
    values came from `${ENV}` (as their templates)."""
    file = Path(path)
    label = label or str(path)
    source = _Source(label)
    try:
        text = read_utf8(file, label)
    except TextFileError as error:
        raise ConfigError([ConfigIssue(error.where, "", error.problem)], what) from None
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
    if source.issues or loaded is None:
        raise ConfigError(source.issues, what)
    return loaded, secrets
