"""Runtime environments: envs/NAME.yaml files, inline envs and the `env` references of the job and its stages."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, Tag, ValidationInfo, field_validator

from .base import NAME_PATTERN, Section

#: An environment variable's name, as a shell would take it.
ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"


def _number_as_text(value: Any) -> Any:
    """`OMP_NUM_THREADS: 4` means the text "4"; true/false are refused (quote them: "1", "true")."""
    if isinstance(value, bool):
        raise ValueError(
            f'{str(value).lower()} is a YAML boolean; an environment variable holds text: quote it: "{str(value).lower()}"'
        )
    if isinstance(value, int | float):
        return str(value)
    return value


def _check_env_var_name(value: str) -> str:
    if not re.match(ENV_VAR_PATTERN, value):
        raise ValueError(
            f"'{value}' is not an environment variable name (letters, digits and '_', not starting with a digit)"
        )
    return value


EnvVars = dict[
    Annotated[str, AfterValidator(_check_env_var_name), Field(json_schema_extra={"pattern": ENV_VAR_PATTERN})],
    Annotated[str, BeforeValidator(_number_as_text)],
]
Requirement = Annotated[str, Field(min_length=1)]

_PIP_HELP = (
    "pip requirements (requirements.txt lines: `tabulate==0.9.0`, `torch>=2.3`, a URL) installed into a "
    "virtualenv that Ray builds on every node from the nodes' own Python (which keeps its packages)."
)
_UV_HELP = "Like pip, installed with uv (faster resolution); give pip or uv, not both."
_ENV_VARS_HELP = "Environment variables of the workers, NAME: text (numbers are taken as text; quote booleans)."


def _pip_or_uv(value: Any, info: ValidationInfo) -> Any:
    if value is not None and info.data.get("pip") is not None:
        raise ValueError("give pip or uv, not both (Ray installs a worker environment with one installer)")
    return value


class _PipOrUv(Section):
    @field_validator("uv", check_fields=False)
    @classmethod
    def _uv_alone(cls, value: Any, info: ValidationInfo) -> Any:
        return _pip_or_uv(value, info)


class InlineEnv(_PipOrUv):
    """A runtime environment written in the job file itself."""

    pip: list[Requirement] | None = Field(default=None, description=_PIP_HELP)
    uv: list[Requirement] | None = Field(default=None, description=_UV_HELP)
    env_vars: EnvVars = Field(default_factory=dict, description=_ENV_VARS_HELP)


class EnvFileConfig(_PipOrUv):
    """One file of envs/: a named runtime environment (its name is the file's stem)."""

    description: str | None = Field(
        default=None, description="What the environment is for; shown by `raymlp env list`."
    )
    pip: list[Requirement] | None = Field(default=None, description=_PIP_HELP)
    uv: list[Requirement] | None = Field(default=None, description=_UV_HELP)
    install_options: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        description="Options of the installer, e.g. [--extra-index-url, https://download.pytorch.org/whl/cu128] "
        "(Ray's pip_install_options / uv_pip_install_options; they replace Ray's defaults).",
    )
    dependency_check: bool = Field(
        default=False,
        description="Run `pip check` after installing (Ray's pip_check / uv_check): a conflict fails the build.",
    )
    env_vars: EnvVars = Field(default_factory=dict, description=_ENV_VARS_HELP)
    container: str | None = Field(
        default=None,
        min_length=1,
        description="A container image the workers run in (Ray's image_uri runtime_env, started with podman on each node; "
        "the image needs the cluster's Ray and Python versions, and raymlp). Goes with env_vars only.",
    )
    imports: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]] | None = Field(
        default=None,
        description="Modules `raymlp env check` imports. Default: one per requirement, from its name "
        "(scikit-learn -> sklearn, pillow -> PIL, other names with '-' and '.' as '_').",
    )
    setup_timeout_s: int | None = Field(
        default=None,
        ge=1,
        le=86_400,
        description="Longest a node may take to build the environment (Ray's default: 600).",
    )

    @field_validator("install_options", "dependency_check")
    @classmethod
    def _needs_an_installer(cls, value: Any, info: ValidationInfo) -> Any:
        if value and info.data.get("pip") is None and info.data.get("uv") is None:
            raise ValueError("installer settings need pip or uv packages")
        return value

    @field_validator("container")
    @classmethod
    def _container_alone(cls, value: Any, info: ValidationInfo) -> Any:
        given = [key for key in ("pip", "uv", "install_options") if info.data.get(key)]
        if value is not None and (given or info.data.get("dependency_check")):
            raise ValueError(
                f"a container cannot be combined with {' or '.join(given) or 'dependency_check'}: Ray 2.60's image_uri "
                "runtime_env allows only env_vars beside it; install those packages into the image instead"
            )
        return value


def _check_env_name(value: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise ValueError(
            f"'{value}' is not an environment name: `default`, or the stem of a file envs/NAME.yaml "
            "(1-100 letters, digits, '_', '.' or '-'), or an inline mapping {pip: [...], env_vars: {...}}"
        )
    return value


#: `default` (the cluster's own environment) or NAME of envs/NAME.yaml.
EnvName = Annotated[str, AfterValidator(_check_env_name), Field(json_schema_extra={"pattern": NAME_PATTERN})]


def _env_kind(value: Any) -> str:
    return "env-inline" if isinstance(value, dict | InlineEnv) else "env-name"


#: A runtime environment: `default`, a NAME of envs/NAME.yaml, or inline {pip | uv, env_vars}.
EnvRef = Annotated[
    Annotated[EnvName, Tag("env-name")] | Annotated[InlineEnv, Tag("env-inline")],
    Discriminator(_env_kind),
]

_STAGE_ENV_HELP = (
    "Runtime environment of this stage's Ray workers: NAME of envs/NAME.yaml or inline {pip | uv, env_vars}. "
    "Ray lays it over the job's `env`: its pip/uv/container replace the job's for these workers, its env_vars "
    "are added. Default: the job's environment."
)
