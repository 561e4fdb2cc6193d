"""Runtime environments as a process hands them to Ray: a stage's workers' (`stage_runtime_env`), and
what `ray.init` may still be given inside a submitted Ray job (`outside_the_submission`).

Env files are read in `raymlp.config.envs`; this module reconciles what they say with the runtime_env
a submitted job already runs in. `raymlp.runtime.ray_runtime` is the one caller of the
reconciliation (once per connection, for the job's env and the forwarded RAY_API_SERVER_ADDRESS).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from raymlp import ray_internals
from raymlp.config.envs import remembered_runtime_env, resolve_env
from raymlp.errors import UsageError


def stage_runtime_env(value: Any) -> dict[str, Any] | None:
    """The runtime_env of a stage's `env` (`train.env`, `predict.env`, `serve.env`), None when it has
    none: Ray lays it over the job's (per key; env_vars add up)."""
    if isinstance(value, str):
        remembered = remembered_runtime_env(value)
        if remembered is not None:
            return remembered
    return resolve_env(value)


# --- inside a submitted Ray job ------------------------------------------------------------------------


def submission_runtime_env() -> dict[str, Any] | None:
    """The runtime_env this process's Ray job was submitted with (None outside a submitted job)."""
    text = os.environ.get(ray_internals.job_config_env_var())
    if not text:
        return None
    try:
        return json.loads(text).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return {}


def _normalised(key: str, value: Any) -> Any:
    """A pip/uv setting as Ray keeps it (the submission's runtime_env is already in this form: a
    dict with Ray's defaults filled in, e.g. uv's --no-cache)."""
    from ray.runtime_env import RuntimeEnv

    try:
        return RuntimeEnv(**{key: value}).to_dict().get(key)
    except Exception:  # not a form Ray takes: compared as given
        return value


def _same_setting(key: str, ours: Any, theirs: Any) -> bool:
    if key in ("pip", "uv"):
        return _normalised(key, ours) == _normalised(key, theirs)
    return ours == theirs


_KINDS = ("pip", "uv", "conda", "image_uri", "container")


def outside_the_submission(
    runtime_env: dict[str, Any] | None, described: str = "the job file's env", forwarded: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """What `ray.init` may still be given inside a submitted Ray job: the parts of `runtime_env` the
    submission's own runtime_env does not already have. Ray merges the two and refuses a key both
    give (env_vars: a name both give), even with equal values. A setting both give alike is dropped
    here; packages or an image they give differently are a `UsageError` that says how to make them
    agree; an env var the submission sets to another value keeps the submission's (`raymlp submit
    --env-var` overrides the job file), said on stderr by name.

    `forwarded`: env vars raymlp itself adds for the job's processes (RAY_API_SERVER_ADDRESS), under
    the job env's own of the same name; the submission's value of one wins the same way, said with
    the variable's own name."""
    theirs = submission_runtime_env()
    if forwarded:
        return _forwarding(_outside(theirs, runtime_env, described), theirs, forwarded)
    return _outside(theirs, runtime_env, described)


def _forwarding(
    runtime_env: dict[str, Any] | None, theirs: dict[str, Any] | None, forwarded: dict[str, str]
) -> dict[str, Any] | None:
    """`runtime_env` with the `forwarded` env vars laid under its own, less those the submission has."""
    merged = dict(runtime_env or {})
    merged["env_vars"] = {**forwarded, **(merged.get("env_vars") or {})}
    for name in forwarded:
        merged = _outside(theirs, merged, name) or {}
    return merged or None


def _outside(
    theirs: dict[str, Any] | None, runtime_env: dict[str, Any] | None, described: str
) -> dict[str, Any] | None:
    if theirs is None or not runtime_env:
        return runtime_env
    remaining: dict[str, Any] = {}
    disagree: list[str] = []
    for key, value in runtime_env.items():
        if key == "env_vars":
            their_vars = theirs.get("env_vars") or {}
            extra = {name: text for name, text in value.items() if name not in their_vars}
            overridden = sorted(name for name, text in value.items() if name in their_vars and their_vars[name] != text)
            if overridden:
                print(
                    f"note: env_vars {', '.join(overridden)}: the submission's values are used, not {described}'s",
                    file=sys.stderr,
                )
            if extra:
                remaining["env_vars"] = extra
        elif key == "config":
            if "config" not in theirs:
                remaining[key] = value  # build settings only: the submission's, when it has some, stand
        elif key in theirs:
            if not _same_setting(key, value, theirs[key]):
                disagree.append(key)
        elif key in _KINDS and any(kind in theirs for kind in _KINDS):
            disagree.append(f"{key} (the submission has {', '.join(kind for kind in _KINDS if kind in theirs)})")
        else:
            remaining[key] = value
    if disagree:
        theirs_shown = {key: theirs[key] for key in ("pip", "uv", "conda", "image_uri") if key in theirs}
        raise UsageError(
            f"{described} and the runtime_env this Ray job was submitted with disagree on {', '.join(disagree)} "
            f"(the submission's: {json.dumps(theirs_shown)}), and the job's workers cannot have both. "
            "Submit with `raymlp submit`, which sends the job file's env, or give "
            "`ray job submit --runtime-env` the same settings, or set `env: default` in the job file to keep the submission's"
        )
    return remaining or None
