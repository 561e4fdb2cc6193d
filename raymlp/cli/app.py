"""Commands. Each parses its arguments, calls one service (raymlp.services, or the pipeline for a
job's stages) and prints; heavy imports stay inside. `data` and `models` live in data_commands.py and
model_commands.py, the options several commands share in options.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .data_commands import data_app
from .model_commands import models_app
from .options import AddressOpt, JobArg, JsonOpt, SetOpt
from .output import print_json, print_table
from .typer_app import App, job_group

app = App(
    help="raymlp: one YAML job from raw files to a served model, on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},  # every subcommand inherits it
)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from raymlp import __version__

        try:
            ray = version("ray")
        except PackageNotFoundError:
            ray = "not installed"
        typer.echo(f"raymlp {__version__} (Ray {ray}, Python {sys.version.split()[0]})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="Print raymlp's version and Ray's, and exit."
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help=(
                "Let Ray, MLflow and the other libraries print their own lines, and stream the output of "
                "Ray's worker processes (also RAYMLP_VERBOSE=1; any command takes it)."
            ),
        ),
    ] = False,
) -> None:
    """raymlp: one YAML job from raw files to a served model, on Ray."""


def _load(job: Path, overrides: list[str] | None):
    from raymlp.services.jobs import load

    return load(job, overrides)


@app.command()
def validate(job: JobArg, overrides: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Check a job file; print every problem as FILE:LINE: key: message (exit 2 when any).

    With --json the result goes to stdout as JSON as well, problems or not: ok, stages, warnings,
    and problems (each with where, key and message).
    """
    from raymlp.config import ConfigError
    from raymlp.services.inputs import validate_inputs

    try:
        loaded = _load(job, overrides)
        note = validate_inputs(loaded)  # what the job reads: files, headers, imports, module refs
    except ConfigError as error:
        if as_json:
            print_json(
                {
                    "job": str(job),
                    "ok": False,
                    "stages": [],
                    "warnings": [],
                    "problems": [{"where": i.where, "key": i.key, "message": i.message} for i in error.issues],
                }
            )
        raise
    if note:
        print(f"warning: {note}", file=sys.stderr)
    if as_json:
        print_json(
            {
                "job": str(job),
                "ok": True,
                "stages": loaded.config.stages(),
                "warnings": [note] if note else [],
                "problems": [],
            }
        )
        return
    typer.echo(f"{job}: ok ({', '.join(loaded.config.stages())})")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the job file."""
    from raymlp.config import job_json_schema

    print_json(job_json_schema())


@app.command()
def run(
    job: JobArg,
    overrides: SetOpt = None,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            metavar="STAGES",
            help="Comma-separated stages to run: data (collect and convert), collect, convert, train, tune, register, predict, serve.",
        ),
    ] = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
    keep_serving: Annotated[
        bool, typer.Option("--keep-serving", help="After the serve stage, keep the endpoint up until Ctrl-C.")
    ] = False,
) -> None:
    """Run a job's stages end to end and print what was made."""
    from raymlp.pipeline import run_job

    loaded = _load(job, overrides)
    stages = _expand_only(only, loaded.config.stages())
    keep = (lambda summary: _wait_for_interrupt(summary.endpoint)) if keep_serving else None
    summary = run_job(loaded, only=stages, address=address, on_serving=keep)
    _print_summary(summary, as_json)


def _expand_only(only: str | None, stages: list[str]) -> list[str] | None:
    """--only's stage names; `data` is the job's data stages (collect when it has one, and convert)."""
    if not only:
        return None
    names: list[str] = []
    for name in (part.strip() for part in only.split(",") if part.strip()):
        names += [stage for stage in ("collect", "convert") if stage in stages] if name == "data" else [name]
    return names


def _print_summary(summary, as_json: bool) -> None:
    from dataclasses import asdict

    from .output import print_summary

    if as_json:
        print_json(asdict(summary))
    else:
        print_summary(summary)


def _wait_for_interrupt(endpoint: str) -> None:
    import signal
    import time

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM (`kill`, a service manager, a container stop) ends the endpoint as Ctrl-C does, so
    # Serve, its HAProxy and their files go with it; SIGINT too where a shell started us ignoring it.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"serving {endpoint}; press Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


@app.command()
def train(
    job: JobArg,
    overrides: SetOpt = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="RUN",
            help="Continue run RUN (its driver died, or it failed) from its latest checkpoint.",
        ),
    ] = None,
) -> None:
    """Train (and register, when the job says so) on the dataset's latest version."""
    from raymlp.pipeline import run_job

    loaded = _load(job, overrides)
    stages = [name for name in ("train", "register") if name in loaded.config.stages()]
    if "train" not in stages:
        from raymlp.errors import UsageError

        raise UsageError(f"{job}: the job has no train section")
    _print_summary(run_job(loaded, only=stages, address=address, resume=resume), as_json)


tune_default = App()  # `raymlp tune JOB.yaml`; `raymlp tune results JOB.yaml` is tune_app's subcommand
tune_app = App(
    cls=job_group(tune_default),
    no_args_is_help=True,
    help="Run the job's sweep (and register the best trial); `tune results JOB.yaml`: its results table.",
)
app.add_typer(tune_app, name="tune")


@tune_default.command("tune")
def tune(
    job: JobArg,
    overrides: SetOpt = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Go on with the job's newest sweep that did not finish (its driver died); finished trials are not run again.",
        ),
    ] = False,
    retry_errored: Annotated[
        bool, typer.Option("--retry-errored", help="With --resume: run the trials that errored again.")
    ] = False,
) -> None:
    """Run the job's sweep (and register the best trial when the job says so)."""
    from raymlp.errors import UsageError
    from raymlp.pipeline import run_job

    loaded = _load(job, overrides)
    if loaded.config.tune is None:
        raise UsageError(f"{job}: the job has no tune section")
    stages = [name for name in ("tune", "register") if name in loaded.config.stages()]
    if retry_errored and not resume:
        raise UsageError("--retry-errored goes with --resume")
    from raymlp.services.sweeps import unfinished_sweep

    sweep = unfinished_sweep(job, loaded) if resume else None
    _print_summary(run_job(loaded, only=stages, address=address, resume=sweep, retry_errored=retry_errored), as_json)


@tune_app.command("results")
def tune_results(job: JobArg, as_json: JsonOpt = False) -> None:
    """The job's newest finished sweep: every trial's parameters, metric, state and MLflow run."""
    from raymlp.services.sweeps import results_table, sweep_results

    results = sweep_results(job)
    if as_json:
        print_json(results)
        return
    print_table(*results_table(results))
    if results.get("report"):
        print(f"report: {results['report']}")


@app.command()
def predict(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            metavar="NAME[@ALIAS|:VERSION]",
            help="The registered model: NAME (its latest version), NAME@ALIAS or NAME:VERSION.",
        ),
    ],
    input: Annotated[str, typer.Option("--input", metavar="PATH", help="csv/parquet/jsonl file, folder or glob.")],
    output: Annotated[
        str,
        typer.Option(
            "--output", metavar="PATH", help="Output .csv or .parquet file, or a folder; local or s3://, gs://."
        ),
    ],
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", metavar="ROWS", min=1, help="Rows per model call (default 65536).")
    ] = None,
    gpu: Annotated[
        bool, typer.Option("--gpu", help="One GPU per model replica, as many replicas as the cluster has GPUs.")
    ] = False,
    job: Annotated[Path | None, typer.Option("--job", help="Take storage locations from this job file.")] = None,
    capture: Annotated[
        bool,
        typer.Option(
            "--capture", help="Also write the rows and predictions to the capture (storage root), for `raymlp monitor`."
        ),
    ] = False,
    capture_sample: Annotated[
        float,
        typer.Option("--capture-sample", metavar="SHARE", min=0.0, max=1.0, help="Share of rows captured (default 1)."),
    ] = 1.0,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Batch predictions with a registered model, on Ray Data.

    Progress is a line on stderr every few seconds (Ray Data's own bars with -v on a terminal).
    """
    import time

    from raymlp import settings
    from raymlp.services.predict import predict_registered

    # Ray Data draws bars only where stdout is a terminal (elsewhere it logs blocks of lines every
    # 10 s); they are a library's output, shown with -v.
    terminal = settings.verbose() and sys.stdout.isatty() and sys.stderr.isatty()
    clock = {"start": time.perf_counter(), "shown": 0.0}

    def show(rows: int) -> None:
        now = time.perf_counter() - clock["start"]
        if now - clock["shown"] >= 2.0:
            clock["shown"] = now
            print(f"{'predict':>9}  {rows:,} rows scored ({now:.1f}s)", file=sys.stderr, flush=True)

    def started() -> None:
        clock["start"] = time.perf_counter()

    result = predict_registered(
        model,
        input,
        output,
        batch_size,
        gpu=gpu,
        job=job,
        address=address,
        progress=None if terminal else show,
        on_start=started,
        capture_sample=capture_sample if capture else None,
    )
    if as_json:
        print_json(
            {
                "model": result.model,
                "version": result.version,
                "rows": result.rows,
                "output": str(result.output),
                "seconds": round(result.seconds, 3),
            }
        )
        return
    typer.echo(
        f"{result.rows} rows scored by {result.model} version {result.version} -> {result.output} ({result.seconds:.1f}s)"
    )


serve_default = App()  # `raymlp serve [JOB.yaml]`; `raymlp serve build JOB.yaml -o FILE` is serve_app's subcommand
serve_app = App(
    cls=job_group(serve_default),
    help="Put a registered model behind an HTTP endpoint on Ray Serve; `serve build`: a Serve config file.",
)
app.add_typer(serve_app, name="serve")
ModelServedOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        metavar="NAME[@ALIAS|:VERSION]",
        help="The registered model to serve (default: the job's register section).",
    ),
]
TrafficOpt = Annotated[
    str | None,
    typer.Option(
        "--traffic", metavar="REF=SHARE,...", help="Split between aliases or versions: champion=90,challenger=10."
    ),
]
HostOpt = Annotated[str | None, typer.Option("--host", metavar="HOST", help="Listen address (default 127.0.0.1).")]
PortOpt = Annotated[
    int | None, typer.Option("--port", metavar="PORT", min=1, max=65535, help="HTTP port (default 8000).")
]
RouteOpt = Annotated[str | None, typer.Option("--route", metavar="PREFIX", help="Route prefix (default /).")]
#: What `serve` and `serve build` both take, in this order, in the place of their `endpoint` parameter.
_ENDPOINT_OPTIONS = {
    "model": ModelServedOpt,
    "traffic": TrafficOpt,
    "host": HostOpt,
    "port": PortOpt,
    "route": RouteOpt,
    "overrides": SetOpt,
}


def _endpoint_options(command):
    """Give a serve command --model, --traffic, --host, --port, --route and --set where its `endpoint`
    parameter stands; the command gets them as one `endpoint` dict."""
    import functools
    import inspect
    import typing

    signature = inspect.signature(command)
    parameters = []
    for parameter in signature.parameters.values():
        if parameter.name == "endpoint":
            parameters += [
                inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=option)
                for name, option in _ENDPOINT_OPTIONS.items()
            ]
        else:
            parameters.append(parameter)

    @functools.wraps(command)
    def with_options(**values):
        endpoint = {name: values.pop(name) for name in _ENDPOINT_OPTIONS}
        return command(endpoint=endpoint, **values)

    hints = typing.get_type_hints(command, include_extras=True)  # this module's annotations are strings
    with_options.__signature__ = signature.replace(
        parameters=[  # type: ignore[attr-defined]
            parameter.replace(annotation=hints.get(parameter.name, parameter.annotation)) for parameter in parameters
        ]
    )
    return with_options


def _resolve_serving(job, endpoint: dict):
    from raymlp.services.serving import resolve_serving

    return resolve_serving(
        job,
        endpoint["overrides"],
        endpoint["model"],
        endpoint["traffic"],
        {key: endpoint[key] for key in ("host", "port", "route")},
    )


@serve_default.command("serve")
@_endpoint_options
def serve(
    job: Annotated[
        Path | None,
        typer.Argument(metavar="JOB.yaml", help="Job file whose serve section (and model) to use.", show_default=False),
    ] = None,
    endpoint: dict = None,  # type: ignore[assignment]  # _endpoint_options: --model ... --set
    address: AddressOpt = None,
    block: Annotated[
        bool | None,
        typer.Option(
            "--block/--no-block",
            help="Stay in the foreground until Ctrl-C (default: yes on an embedded Ray, no on a cluster).",
        ),
    ] = None,
) -> None:
    """Put a registered model behind an HTTP endpoint on Ray Serve.

    `raymlp serve build JOB.yaml -o serve.yaml` writes the same application as a Serve config file
    for `serve deploy` or a KubeRay RayService instead.
    """
    from raymlp.services.serving import serve_registered

    serving = _resolve_serving(job, endpoint)
    with serve_registered(serving, address) as served:
        typer.echo(
            f"serving {serving.ref.name} ({served.split}; {serving.ref} is version {serving.version}) at {served.url}"
        )
        sys.stdout.flush()
        if block if block is not None else served.embedded:
            _wait_for_interrupt(served.url)


@serve_app.command("build")
@_endpoint_options
def serve_build(
    job: JobArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", metavar="FILE.yaml", help="Where to write the Serve config.")
    ],
    endpoint: dict = None,  # type: ignore[assignment]  # _endpoint_options: --model ... --set
) -> None:
    """Write the job's endpoint as a Serve config file, for `serve deploy` or a KubeRay RayService."""
    from raymlp.services.serving import build_serve_config

    serving = _resolve_serving(job, endpoint)
    written, split = build_serve_config(serving, output)
    typer.echo(f"wrote {written}: application '{serving.app_name}' on {serving.config.route} ({split})")
