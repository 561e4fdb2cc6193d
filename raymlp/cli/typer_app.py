"""raymlp's Typer app: help written with readable names, and commands whose first argument is a job file or a subcommand."""

from __future__ import annotations

from functools import cached_property
from typing import Any, get_args

import typer
from typer.core import TyperCommand, TyperGroup


def _argument_name(param: Any) -> str:
    name = param.metavar or param.name.upper()
    return name + "..." if param.nargs != 1 else name


def _default_metavar(param: Any) -> str:
    """What an option without its own metavar takes: PATH, N, NUMBER, or its name (--alias ALIAS)."""
    described = param.type_descriptor
    annotation = get_args(described.annotation)[0] if described.is_list else described.annotation
    if described.is_path:
        return "PATH"
    if annotation is int:
        return "N"
    if annotation is float:
        return "NUMBER"
    return param.name.upper()


class Command(TyperCommand):
    """Arguments shown by their metavar (`JOB.yaml`, `[NAME]`), not Typer's `{name}` and `<type>`; an
    option without a metavar gets one from its type or name (`--timeout NUMBER`, `--alias ALIAS`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is not None or getattr(param, "is_flag", False) or getattr(param, "count", False):
                continue
            param.metavar = param.name.upper() if param.param_type_name == "argument" else _default_metavar(param)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = _argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((_argument_name(param), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class App(typer.Typer):
    """A Typer whose commands are `Command`s, with plain help (no rich boxes) and no completion options."""

    def __init__(self, **kwargs: Any) -> None:
        for key, value in (("add_completion", False), ("rich_markup_mode", None), ("pretty_exceptions_enable", False)):
            kwargs.setdefault(key, value)
        super().__init__(**kwargs)

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(name, cls=cls or Command, **kwargs)


class JobGroup(TyperGroup):
    """`raymlp tune JOB.yaml ...` runs the default command (`default_app`'s only one); `raymlp tune results
    JOB.yaml` runs a subcommand with its own --help. Help for the group shows both."""

    default_app: typer.Typer

    @cached_property
    def default(self) -> Any:
        return typer.main.get_command(self.default_app)

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        helps = parent.help_option_names if parent is not None else ["--help"]
        if (args[0] not in self.commands and args[0] not in helps) if args else not self.no_args_is_help:
            return self.default.make_context(info_name, args, parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.default.format_help(ctx, formatter)
        self.format_commands(ctx, formatter)


def job_group(default: typer.Typer) -> type[JobGroup]:
    """The group class for a command whose default form takes a job file (`default`'s command)."""
    return type("JobGroup", (JobGroup,), {"default_app": default})
