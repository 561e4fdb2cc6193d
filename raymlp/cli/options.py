"""Arguments and options several commands share (their help text is the commands' contract)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .output import print_json

JobArg = Annotated[Path, typer.Argument(metavar="JOB.yaml", help="Job file (YAML).", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE", help="Override a setting: --set train.epochs=5 (repeatable)."),
]
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="Ray cluster to join (default: RAY_ADDRESS, else an embedded local Ray)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
JobOpt = Annotated[
    Path | None, typer.Option("--job", metavar="JOB.yaml", help="Take storage locations from this job file.")
]


def remove_command(
    group: Any,
    metavar: str,
    what: str,
    force: str,
    doc: str,
    remove: Callable[[str, Path | None, bool], tuple[dict[str, Any], str]],
) -> None:
    """Add `GROUP rm REF [--force] [--job JOB.yaml] [--json]` to `group`: `remove(ref, job, force)` calls
    the service and returns (what --json prints, the line printed otherwise); `what` and `force` are
    the help of REF and --force, `doc` the command's."""

    def rm(ref: str, force: bool = False, job: Path | None = None, as_json: bool = False) -> None:
        removed, line = remove(ref, job, force)
        if as_json:
            print_json(removed)
            return
        typer.echo(line)

    rm.__doc__ = doc
    rm.__annotations__ = {
        "ref": Annotated[str, typer.Argument(metavar=metavar, help=what)],
        "force": Annotated[bool, typer.Option("--force", help=force)],
        "job": JobOpt,
        "as_json": JsonOpt,
        "return": None,
    }
    group.command("rm")(rm)
