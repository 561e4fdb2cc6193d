"""Named runtime environments: one file per environment in envs/ of the project root, read here.

`envs/NAME.yaml` holds what Ray's `runtime_env` needs (pip or uv packages, env_vars, or a container
image) plus what raymlp needs to check it (`imports`). A job names it (`env: NAME`, or a stage's
`train.env` / `predict.env` / `serve.env`); `raymlp env check NAME` (`raymlp.launch.env_check`) builds
it on a cluster through a Ray job and imports its packages there. What a process gives `ray.init` and
a stage's workers, reconciled with a submitted job's own runtime_env, is `raymlp.runtime.envs`.

The files are read by the job loader's own machinery (`yamlfile`: lines kept, `${ENV}` interpolated),
so a bad file is reported as `envs/NAME.yaml:LINE: key: message` (exit 2).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raymlp.errors import UsageError

from .schema import NAME_PATTERN, EnvFileConfig
from .yamlfile import ConfigError, ConfigIssue, load_yaml_model

ENVS_DIR = "envs"
SUFFIXES = (".yaml", ".yml")
#: Not a file of envs/: the cluster's own environment.
DEFAULT = "default"

#: Requirement names whose import name is not the name itself (PEP 503-normalised names).
IMPORT_NAMES = {
    "scikit-learn": "sklearn",
    "pillow": "PIL",
    "pyyaml": "yaml",
    "opencv-python": "cv2",
    "opencv-python-headless": "cv2",
    "opencv-contrib-python": "cv2",
    "opencv-contrib-python-headless": "cv2",
    "beautifulsoup4": "bs4",
    "python-dateutil": "dateutil",
    "python-dotenv": "dotenv",
    "tensorflow-cpu": "tensorflow",
    "tensorflow-gpu": "tensorflow",
    "tf-nightly": "tensorflow",
    "protobuf": "google.protobuf",
    "psycopg2-binary": "psycopg2",
    "psycopg-binary": "psycopg",
    "pytorch-lightning": "pytorch_lightning",
    "faiss-cpu": "faiss",
    "faiss-gpu": "faiss",
    "msgpack-python": "msgpack",
    "attrs": "attr",
    "mlflow-skinny": "mlflow",
    "google-cloud-storage": "google.cloud.storage",
    "pyarrow-hotfix": "pyarrow_hotfix",
}

_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class EnvLookupError(UsageError):
    """A job or command names an environment that envs/ does not have, or whose file is not valid."""


# --- the files -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamedEnv:
    """One file of envs/, validated."""

    name: str
    path: Path
    config: EnvFileConfig
    #: Settings whose values came from ${ENV} (secrets): dotted path -> the reference as written.
    secret_paths: dict[tuple[str | int, ...], str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The file as errors name it: envs/NAME.yaml below the working directory, else its full path."""
        return file_label(self.path)

    @property
    def requirements(self) -> list[str]:
        return list(self.config.pip or self.config.uv or [])

    @property
    def kind(self) -> str:
        """pip, uv, container, env_vars, or empty (the cluster's environment as it is)."""
        config = self.config
        if config.container:
            return "container"
        if config.pip is not None:
            return "pip"
        if config.uv is not None:
            return "uv"
        return "env_vars" if config.env_vars else "empty"

    def imports(self) -> list[str]:
        """The modules `env check` imports: the file's `imports`, else one per requirement."""
        if self.config.imports is not None:
            return list(self.config.imports)
        return list(dict.fromkeys(module for module in map(import_name, self.requirements) if module))

    def runtime_env(self) -> dict[str, Any]:
        """The Ray `runtime_env` this environment becomes."""
        config = self.config
        runtime_env: dict[str, Any] = {}
        for installer in ("pip", "uv"):
            packages = getattr(config, installer)
            if packages is None:
                continue
            if config.install_options is None and not config.dependency_check:
                runtime_env[installer] = list(packages)
            else:
                prefix = "pip" if installer == "pip" else "uv_pip"
                runtime_env[installer] = {
                    "packages": list(packages),
                    f"{installer}_check": config.dependency_check,
                    **(
                        {f"{prefix}_install_options": list(config.install_options)}
                        if config.install_options is not None
                        else {}
                    ),
                }
        if config.container:
            runtime_env["image_uri"] = config.container
        if config.env_vars:
            runtime_env["env_vars"] = dict(config.env_vars)
        if config.setup_timeout_s is not None:
            runtime_env["config"] = {"setup_timeout_seconds": config.setup_timeout_s}
        return runtime_env

    def public_settings(self) -> dict[str, Any]:
        """The file's settings with values that came from ${ENV} shown as their reference."""
        shown = self.config.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        for path, template in self.secret_paths.items():
            target: Any = shown
            for part in path[:-1]:
                target = target.get(part) if isinstance(target, dict) else None
            if isinstance(target, dict) and path[-1] in target:
                target[path[-1]] = template
        return shown

    def public_runtime_env(self) -> dict[str, Any]:
        """`runtime_env()` with secret env_vars shown as their ${ENV} reference."""
        runtime_env = self.runtime_env()
        for path, template in self.secret_paths.items():
            if len(path) == 2 and path[0] == "env_vars" and path[1] in runtime_env.get("env_vars", {}):
                runtime_env["env_vars"][path[1]] = template
        return runtime_env

    def describe(self) -> str:
        """One line: what the environment installs or runs in."""
        config = self.config
        if config.container:
            what = f"container {config.container}"
        elif self.kind in ("pip", "uv"):
            what = f"{self.kind}: {', '.join(self.requirements) or 'nothing'}"
        else:
            what = "the cluster's packages"
        if config.env_vars:
            what += f"; env_vars: {', '.join(config.env_vars)}"
        return what


def import_name(requirement: str) -> str | None:
    """The module a requirement line installs, from its name (None for options, URLs and paths)."""
    text = requirement.strip()
    if not text or text.startswith(("-", ".", "/", "~")) or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        return None
    match = _REQUIREMENT_NAME.match(text)
    if match is None:
        return None
    normalised = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return IMPORT_NAMES.get(normalised, normalised.replace("-", "_"))


def distribution(requirement: str) -> str | None:
    match = _REQUIREMENT_NAME.match(requirement)
    return match.group(1) if match and import_name(requirement) else None


def file_label(path: Path) -> str:
    """envs/x.yaml relative to the working directory where it lies below it, else the full path."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def env_files(folder: Path) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix in SUFFIXES and path.is_file() and not path.name.startswith("."):
                files.setdefault(path.stem, []).append(path)
    return files


def _read(name: str, paths: list[Path]) -> NamedEnv:
    label = file_label(paths[0])
    what = "the environment file"
    if len(paths) > 1:
        raise ConfigError(
            [
                ConfigIssue(
                    label, "", f"environment '{name}' has two files ({', '.join(map(file_label, paths))}); keep one"
                )
            ],
            what,
        )
    if name == DEFAULT:
        raise ConfigError(
            [ConfigIssue(label, "", "`default` is reserved for the cluster's own environment; rename the file")], what
        )
    if not re.match(NAME_PATTERN, name):
        raise ConfigError(
            [
                ConfigIssue(
                    label,
                    "",
                    f"'{name}' is not a usable environment name: use 1-100 letters, "
                    "digits, '_', '.' or '-', starting with a letter or digit",
                )
            ],
            what,
        )
    config, secrets = load_yaml_model(
        paths[0],
        EnvFileConfig,
        what=what,
        label=label,
        empty="the file is empty; an environment needs pip, uv, env_vars or container",
    )
    return NamedEnv(name=name, path=paths[0], config=config, secret_paths=secrets)


def list_envs(root: str | os.PathLike[str] | None = None) -> list[NamedEnv]:
    """Every environment in ROOT/envs (ROOT: the working directory), by name; a `ConfigError` listing
    the problems of every bad file."""
    folder = Path(root if root is not None else Path.cwd()) / ENVS_DIR
    found: list[NamedEnv] = []
    problems: list[Any] = []
    for name, paths in env_files(folder).items():
        try:
            found.append(_read(name, paths))
        except ConfigError as error:
            problems += error.issues
    if problems:
        raise ConfigError(problems, "the environment files")
    return found


def env_roots(job_path: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where envs/ is looked for, in order: the working directory (the project root), the one a Ray
    Tune trial started in (Tune moves a trial's process into its own folder), then the job file's
    folder and that folder's parent (a job in jobs/ of the project)."""
    candidates = [Path.cwd()]
    if os.environ.get("TUNE_ORIG_WORKING_DIR"):
        candidates.append(Path(os.environ["TUNE_ORIG_WORKING_DIR"]))
    if job_path is not None:
        folder = Path(job_path).resolve().parent
        candidates += [folder, folder.parent]
    roots: list[Path] = []
    for candidate in candidates:
        if candidate not in roots:
            roots.append(candidate)
    return roots


def load_env(name: str, root: str | os.PathLike[str] | list[Path] | None = None) -> NamedEnv:
    """The environment NAME of ROOT/envs (ROOT: the working directory; a list: the first that has it).
    `EnvLookupError` when none has it; `ConfigError` (FILE:LINE: key: message) when its file is bad."""
    roots = (
        [Path(item) for item in root] if isinstance(root, list) else [Path(root) if root is not None else Path.cwd()]
    )
    if name == DEFAULT:
        raise EnvLookupError("`default` is the cluster's own environment, not a file of envs/")
    for folder in roots:
        paths = env_files(folder / ENVS_DIR).get(name)
        if paths:
            return _read(name, paths)
    folder = roots[0] / ENVS_DIR
    names = sorted(env_files(folder))
    if not folder.is_dir():
        raise EnvLookupError(
            f"no environment '{name}': there is no {ENVS_DIR}/ folder in {roots[0]} "
            f"(write {ENVS_DIR}/{name}.yaml there; `raymlp env list` shows what there is)"
        )
    there = f"there are: {', '.join(names)}" if names else "it is empty"
    raise EnvLookupError(f"no environment '{name}' in {ENVS_DIR}/ ({there})")


# --- runtime_env dicts --------------------------------------------------------------------------------

#: name -> runtime_env of the named environments this process resolved (a job's load checks them);
#: what a stage's workers get, also where the process's working directory has no envs/ (a Tune trial):
#: `raymlp.runtime.envs.stage_runtime_env` reads it.
_RESOLVED: dict[str, dict[str, Any]] = {}


def inline_runtime_env(env: Any) -> dict[str, Any]:
    """The runtime_env of an inline `{pip | uv, env_vars}` (a model or a plain mapping)."""
    data = env.model_dump(exclude_none=True) if hasattr(env, "model_dump") else dict(env)
    runtime_env: dict[str, Any] = {}
    for key in ("pip", "uv"):
        if data.get(key) is not None:
            runtime_env[key] = list(data[key])
    if data.get("env_vars"):
        runtime_env["env_vars"] = {str(name): str(value) for name, value in data["env_vars"].items()}
    return runtime_env


def resolve_env(value: Any, roots: list[Path] | None = None) -> dict[str, Any] | None:
    """The runtime_env of an `env` setting: None for `default` (or no setting), the dict of an inline
    one, or the named file's (looked up in `roots`, default `env_roots()`). A bad or unknown name
    raises `EnvLookupError` with one line that says what is wrong."""
    if value is None or value == DEFAULT:
        return None
    if not isinstance(value, str):
        return inline_runtime_env(value)
    try:
        named = load_env(value, roots or env_roots())
    except ConfigError as error:
        problems = "; ".join(str(issue) for issue in error.issues)
        raise EnvLookupError(f"environment '{value}' is not valid: {problems}") from None
    runtime_env = named.runtime_env()
    _RESOLVED[value] = runtime_env
    return json.loads(json.dumps(runtime_env))


def named_runtime_env(value: Any, root: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The runtime_env a submission carries for a job's `env` (`default`, NAME, inline), NAME looked
    up in ROOT/envs (the project root being submitted). None for `default`."""
    return resolve_env(value, [Path(root)] if root is not None else None)


def job_runtime_env(loaded: Any) -> dict[str, Any] | None:
    """The runtime_env of a loaded job's own `env` (NAME looked up beside the job as its load did)."""
    return resolve_env(loaded.config.env, env_roots(loaded.path))


def remembered_runtime_env(name: str) -> dict[str, Any] | None:
    """A copy of the runtime_env this process resolved for environment NAME (None when it resolved none)."""
    return json.loads(json.dumps(_RESOLVED[name])) if name in _RESOLVED else None
