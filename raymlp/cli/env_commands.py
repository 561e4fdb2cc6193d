"""`raymlp env`: named runtime environments (envs/*.yaml)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from .app import JsonOpt, app
from .output import print_json, print_table
from .typer_app import App

env_app = App(help="Named runtime environments (envs/*.yaml): list, show, check on a cluster.", no_args_is_help=True)
app.add_typer(env_app, name="env")

NameArg = Annotated[str, typer.Argument(help="Environment name: the stem of envs/NAME.yaml.", show_default=False)]


def _summary(named) -> dict:
    return {
        "name": named.name,
        "file": named.label,
        "description": named.config.description,
        "kind": named.kind,
        "requirements": named.requirements,
        "env_vars": sorted(named.config.env_vars),
        "container": named.config.container,
        "imports": named.imports(),
    }


@env_app.command("list")
def env_list(as_json: JsonOpt = False) -> None:
    """The environments of envs/ in the working directory (exit 2 when a file is not valid)."""
    from raymlp.config.envs import ENVS_DIR, list_envs

    envs = list_envs()
    if as_json:
        print_json([_summary(named) for named in envs])
        return
    if not envs:
        print(
            f"no environments: write {ENVS_DIR}/NAME.yaml (see `raymlp schema` and {ENVS_DIR}/README.md)",
            file=sys.stderr,
        )
        return
    print_table(
        "environments",
        ["name", "kind", "installs", "description"],
        [[named.name, named.kind, named.describe(), named.config.description or ""] for named in envs],
    )


@env_app.command("show")
def env_show(name: NameArg, as_json: JsonOpt = False) -> None:
    """An environment's settings and the Ray runtime_env it becomes (values from ${ENV} shown as such)."""
    import json

    from raymlp.config.envs import load_env

    named = load_env(name)
    shown: dict[str, Any] = {
        "name": named.name,
        "file": named.label,
        "kind": named.kind,
        "settings": named.public_settings(),
        "imports": named.imports(),
        "runtime_env": named.public_runtime_env(),
    }
    if as_json:
        print_json(shown)
        return
    rows = [["file", shown["file"]], ["kind", named.kind]]
    rows += [
        [key, json.dumps(value) if not isinstance(value, str) else value] for key, value in shown["settings"].items()
    ]
    if named.config.imports is None:
        rows.append(["imports (derived)", ", ".join(shown["imports"]) or "none"])
    rows.append(["runtime_env", json.dumps(shown["runtime_env"])])
    print_table(f"environment {named.name}", ["setting", "value"], rows)


@env_app.command("check")
def env_check(
    name: NameArg,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="The cluster's dashboard, e.g. http://HEAD:8265 (default: RAY_ADDRESS, else an embedded local Ray).",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=1,
            help="Seconds to wait for the build and the imports (default: 900, or the file's setup_timeout_s + 300).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the environment on the cluster (a Ray job whose runtime_env it is) and import its packages
    there; print the build log and the versions found. Exit 1 when the build or an import fails."""
    from raymlp.launch.env_check import check_env

    result = check_env(name, address=address, out=sys.stderr, timeout_s=timeout)
    if as_json:
        from dataclasses import asdict

        print_json({key: value for key, value in asdict(result).items() if key not in ("build_log", "job_log")})
        return
    rows = [[module, found.get("version") or "?", found.get("file") or ""] for module, found in result.modules.items()]
    rows += [[f"${name}", "set" if present else "MISSING", "env_vars"] for name, present in result.env_vars.items()]
    rows += [["python", result.python or "?", result.executable or ""], ["ray", result.ray or "not importable", ""]]
    print_table(
        f"environment {result.name}: built and imported in {result.seconds:.1f}s on {result.dashboard_url}",
        ["module", "version", "from"],
        rows,
    )
    if result.ray is None:
        print(
            f"warning: the check ran under {result.executable}, which has no ray: `python` on the cluster's PATH is "
            "not Ray's Python, so a job's `python ...` entrypoint would not find Ray either",
            file=sys.stderr,
        )


@env_app.command("schema")
def env_schema() -> None:
    """Print the JSON Schema of an environment file (envs/NAME.yaml)."""
    from raymlp.config.schema import EnvFileConfig

    schema = EnvFileConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "raymlp environment file (envs/NAME.yaml)"
    print_json(schema)
