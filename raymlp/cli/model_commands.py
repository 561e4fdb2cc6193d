"""`raymlp models ...`: parse, call raymlp.services.models, print."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import JobOpt, JsonOpt, remove_command
from .output import print_json, print_listing, print_table
from .typer_app import App

models_app = App(help="Registered models (MLflow registry).", no_args_is_help=True)

ModelArg = Annotated[
    str, typer.Argument(metavar="NAME[@ALIAS|:VERSION]", help="NAME (its latest version), NAME@ALIAS or NAME:VERSION.")
]
AliasOpt = Annotated[str, typer.Option("--alias", help="Alias to move, e.g. champion.")]


@models_app.command("list")
def models_list(as_json: JsonOpt = False, job: JobOpt = None) -> None:
    """Registered models and their versions."""
    from raymlp.services.models import list_models

    print_listing(
        list_models(job),
        as_json,
        "models",
        ["name", "version", "aliases", "dataset", "run"],
        lambda r: [r["name"], r["version"], ",".join(r["aliases"]), r["dataset"], r["run_id"]],
    )


@models_app.command("show")
def models_show(model: ModelArg, as_json: JsonOpt = False, job: JobOpt = None) -> None:
    """One model version: metrics, features, preprocessing and lineage."""
    from raymlp.services.models import describe_model

    shown, aliases = describe_model(model, job)
    if as_json:
        print_json(shown)
        return
    _print_model(shown, aliases)


@models_app.command("why")
def models_why(model: ModelArg, as_json: JsonOpt = False, job: JobOpt = None) -> None:
    """How a version came to be and how far it got: trigger, data versions, run, gates, promotion."""
    from raymlp.services.models import why

    shown = why(model, job)
    if as_json:
        print_json(shown)
        return
    typer.echo(f"{shown['model']} version {shown['version']}")
    for item in shown["chain"]:
        outcome = "" if item["outcome"] == "info" else f"{item['outcome']}: "
        typer.echo(f"  {item['step']:<10} {outcome}{item['summary']}")


def _print_model(shown: dict, aliases: list[str]) -> None:
    """`models show` for people: a summary, then metrics, features, preprocessing and lineage."""
    from .output import cell, number, print_lines, timestamp

    name, version, lineage = shown["name"], shown["version"], shown["lineage"] or {}
    features = shown["features"]
    print_table(
        f"model {name}:{version}" + (f" ({', '.join('@' + alias for alias in aliases)})" if aliases else ""),
        ["field", "value"],
        [
            ["framework", shown["framework"]],
            ["task", shown["task"]],
            ["label", shown["label"]],
            *([["classes", cell(shown["classes"])]] if shown["classes"] else []),
            [
                "features",
                f"{len(features)}: "
                + ", ".join(f"{f['name']} ({f['type']})" for f in features[:8])
                + (f", and {len(features) - 8} more" if len(features) > 8 else ""),
            ],
            ["trained", timestamp(_parse_time(lineage["trained_at"])) + " UTC" if lineage.get("trained_at") else ""],
        ],
    )
    print_table(
        "metrics", ["metric", "value"], [[key, number(value)] for key, value in sorted(shown["metrics"].items())]
    )
    print_lines(
        "preprocessing",
        [
            f"{index}. {step.get('type', '?')}: " + cell({k: v for k, v in step.items() if k != "type"})
            for index, step in enumerate(shown["preprocess"], 1)
        ],
    )
    print_lines(
        "modules",
        [
            f"{m['name']}@{m['version']} ({', '.join(m['functions'])}; sha256 {m['sha256'][:12]}...)"
            for m in shown["modules"]
        ],
    )
    dataset, job = lineage.get("dataset") or {}, lineage.get("job") or {}
    steps = []
    if dataset:
        steps.append(f"dataset {dataset['name']}@{dataset['version']} ({dataset.get('digest', '')[:19]})")
    if job:
        steps.append(f"job {job['name']} ({job.get('path')}, sha256 {str(job.get('sha256'))[:12]}...)")
    if lineage.get("run_id"):
        steps.append(
            f"run {lineage['run_id']} (MLflow run {lineage.get('mlflow_run_id')}, best epoch {lineage.get('best_epoch')})"
        )
    steps.append(f"model {name}:{version}")
    print_lines("lineage", [steps[0], *(f"-> {step}" for step in steps[1:])])


def _parse_time(text: str):
    from datetime import datetime

    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


@models_app.command("promote")
def models_promote(
    model: Annotated[str, typer.Argument(metavar="NAME:VERSION", help="The version to point the alias at.")],
    alias: AliasOpt,
    job: JobOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point an alias at a version."""
    from raymlp.services.models import promote

    moved = promote(model, alias, job)
    if as_json:
        print_json(moved)
        return
    before = moved["previous_version"]
    typer.echo(
        f"{moved['model']}@{alias} -> version {moved['version']}"
        + (f" (was version {before})" if before is not None else "")
    )


def _remove_model_version(model: str, job: Path | None, force: bool) -> tuple[dict, str]:
    from raymlp.services.models import remove_model_version

    removed = remove_model_version(model, job, force=force)
    gone = f" (alias {', '.join(removed['aliases'])} removed with it)" if removed["aliases"] else ""
    return removed, (
        f"removed {removed['model']}:{removed['version']} from the registry{gone}; "
        f"its MLflow run {removed['run_id']} stays"
    )


remove_command(
    models_app,
    "NAME:VERSION",
    "The registered model version to delete.",
    "Delete it even though an alias points at it (the alias goes).",
    """Delete a registered model version from the MLflow registry (its MLflow run stays).

    A version an alias points at (what serve and predict use) is kept unless --force.
    """,
    _remove_model_version,
)


@models_app.command("rollback")
def models_rollback(
    model: Annotated[str, typer.Argument(metavar="NAME", help="The registered model.")],
    alias: Annotated[str, typer.Option("--alias", help="Alias to move back, e.g. champion.")],
    job: JobOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move an alias back to its previous version.

    Undoes the alias's last move (promote, register, or a move made outside raymlp); run it again
    to undo the move before that. Moves are kept in the registered model's MLflow tags.
    """
    from raymlp.services.models import rollback

    moved = rollback(model, alias, job)
    if as_json:
        print_json(moved)
        return
    typer.echo(f"{moved['model']}@{alias} -> version {moved['version']} (was version {moved['previous_version']})")
