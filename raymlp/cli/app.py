"""Commands. Each is a thin call into the modules that do the work; heavy imports stay inside."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

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
data_app = App(help="Datasets: collect, convert, list, show, verify; preprocessing modules.", no_args_is_help=True)
models_app = App(help="Registered models (MLflow registry).", no_args_is_help=True)
modules_app = App(
    help="Preprocessing modules: your own Python transform functions, versioned in the catalog.", no_args_is_help=True
)
data_app.add_typer(modules_app, name="modules")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

JobArg = Annotated[Path, typer.Argument(metavar="JOB.yaml", help="Job file (YAML).", show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override a setting: --set train.epochs=5 (repeatable).")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join (default: RAY_ADDRESS, else an embedded local Ray).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


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
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_show_version,
                                          help="Print raymlp's version and Ray's, and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=(
        "Let Ray, MLflow and the other libraries print their own lines, and stream the output of "
        "Ray's worker processes (also RAYMLP_VERBOSE=1; any command takes it)."))] = False,
) -> None:
    """raymlp: one YAML job from raw files to a served model, on Ray."""


def _load(job: Path, overrides: list[str] | None):
    from raymlp.config import load_job

    return load_job(job, overrides or [])


def _storage_for(job: Path | None):
    from raymlp.storage import resolve_storage

    return resolve_storage(_load(job, []).config.storage if job else None)


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
            print_json({"job": str(job), "ok": False, "stages": [], "warnings": [],
                        "problems": [{"where": i.where, "key": i.key, "message": i.message} for i in error.issues]})
        raise
    if note:
        print(f"warning: {note}", file=sys.stderr)
    if as_json:
        print_json({"job": str(job), "ok": True, "stages": loaded.config.stages(), "warnings": [note] if note else [],
                    "problems": []})
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
    only: Annotated[Optional[str], typer.Option("--only", metavar="STAGES", help="Comma-separated stages to run: data (collect and convert), collect, convert, train, tune, register, predict, serve.")] = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
    keep_serving: Annotated[bool, typer.Option("--keep-serving", help="After the serve stage, keep the endpoint up until Ctrl-C.")] = False,
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
    resume: Annotated[Optional[str], typer.Option(
        "--resume", metavar="RUN", help="Continue run RUN (its driver died, or it failed) from its latest checkpoint.")] = None,
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
tune_app = App(cls=job_group(tune_default), no_args_is_help=True,
               help="Run the job's sweep (and register the best trial); `tune results JOB.yaml`: its results table.")
app.add_typer(tune_app, name="tune")


@tune_default.command("tune")
def tune(
    job: JobArg,
    overrides: SetOpt = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
    resume: Annotated[bool, typer.Option("--resume", help="Go on with the job's newest sweep that did not finish (its driver died); finished trials are not run again.")] = False,
    retry_errored: Annotated[bool, typer.Option("--retry-errored", help="With --resume: run the trials that errored again.")] = False,
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
    sweep = _unfinished_sweep(job, loaded) if resume else None
    _print_summary(run_job(loaded, only=stages, address=address, resume=sweep, retry_errored=retry_errored), as_json)


def _unfinished_sweep(job: Path, loaded) -> str:
    """The newest sweep of the job that did not succeed and whose Tune state was saved."""
    from raymlp.catalog import Catalog
    from raymlp.errors import UsageError
    from raymlp.tune.stage import SWEEP_STARTED_FILE

    storage = _storage_for(job)
    with Catalog(storage.catalog_url) as catalog:
        runs = [run for run in catalog.list_runs(loaded.config.name, limit=1000) if "tune" in run.stages]
    for run in runs:
        if run.status != "succeeded" and (storage.local_root / "runs" / run.id / SWEEP_STARTED_FILE).exists():
            return run.id
    raise UsageError(f"tune --resume: job '{loaded.config.name}' has no unfinished sweep to go on with "
                     f"({len(runs)} sweep(s), all finished or never started)")


@tune_app.command("results")
def tune_results(job: JobArg, as_json: JsonOpt = False) -> None:
    """The job's newest finished sweep: every trial's parameters, metric, state and MLflow run."""
    _print_tune_results(job, as_json)


def _print_tune_results(job: Path, as_json: bool) -> None:
    import json

    loaded = _load(job, [])
    from raymlp.catalog import Catalog
    from raymlp.errors import UsageError
    from raymlp.tune.stage import RESULTS_FILE

    storage = _storage_for(job)
    with Catalog(storage.catalog_url) as catalog:
        runs = catalog.list_runs(loaded.config.name, limit=1000)
    found = next((storage.local_root / "runs" / run.id / RESULTS_FILE for run in runs
                  if (storage.local_root / "runs" / run.id / RESULTS_FILE).exists()), None)
    if found is None:
        raise UsageError(f"tune results: job '{loaded.config.name}' has no finished sweep (run: raymlp tune {job})")
    results = json.loads(found.read_text())
    if as_json:
        print_json(results)
        return
    from .output import print_table

    from raymlp.tune.report import ordered_trials

    paths = list(results["trials"][0]["params"]) if results["trials"] else []
    ordered = ordered_trials(results)
    print_table(f"sweep {results['run_id']} of {results['job']}: {results['metric']} ({results['mode']}), {len(ordered)} trials",
                ["trial", *paths, results["metric"], "state", "epochs", "MLflow run"],
                [[row["trial"], *[json.dumps(row["params"][path]) for path in paths],
                  "-" if row["metric"] is None else f"{row['metric']:.4f}", row["state"], row["epochs"], row.get("mlflow_run_id") or ""]
                 for row in ordered])
    if results.get("report"):
        print(f"report: {results['report']}")


@app.command()
def predict(
    model: Annotated[str, typer.Option("--model", metavar="NAME[@ALIAS|:VERSION]", help="The registered model: NAME (its latest version), NAME@ALIAS or NAME:VERSION.")],
    input: Annotated[str, typer.Option("--input", metavar="PATH", help="csv/parquet/jsonl file, folder or glob.")],
    output: Annotated[Path, typer.Option("--output", help="Output .csv or .parquet file, or a folder.")],
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", metavar="ROWS", min=1, help="Rows per model call (default 65536).")] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="One GPU per model replica, as many replicas as the cluster has GPUs.")] = False,
    job: Annotated[Optional[Path], typer.Option("--job", help="Take storage locations from this job file.")] = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Batch predictions with a registered model, on Ray Data.

    Progress is a line on stderr every few seconds (Ray Data's own bars with -v on a terminal).
    """
    import logging
    import time

    from raymlp import settings
    from raymlp.errors import UsageError
    from raymlp.runtime import ray_runtime
    from raymlp.serve.batch import NO_GPU, local_gpus, predict_batch
    from raymlp.tracking import Tracker, parse_model_ref

    if gpu and not (address or settings.ray_address()) and local_gpus() == 0:
        raise UsageError(NO_GPU)  # before the package is fetched and an embedded Ray started for nothing
    ref = parse_model_ref(model)
    from raymlp.services.inputs import input_problem

    missing_input = input_problem(input)
    if missing_input:
        raise UsageError(f"--input {missing_input}")  # before Ray starts
    storage = _storage_for(job)
    package, version = Tracker(storage.tracking_uri, Path(storage.root)).package_for(ref, storage.folder("cache", "models"))
    # Ray Data draws bars only where stdout is a terminal (elsewhere it logs blocks of lines every
    # 10 s); they are a library's output, shown with -v.
    terminal = settings.verbose() and sys.stdout.isatty() and sys.stderr.isatty()
    clock = {"start": time.perf_counter(), "shown": 0.0}

    def show(rows: int) -> None:
        now = time.perf_counter() - clock["start"]
        if now - clock["shown"] >= 2.0:
            clock["shown"] = now
            print(f"{'predict':>9}  {rows:,} rows scored ({now:.1f}s)", file=sys.stderr, flush=True)

    if not terminal:  # no "progress bars disabled" notice: the lines above stand for them
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    with ray_runtime(address):
        clock["start"] = time.perf_counter()
        result = predict_batch(str(package), input, str(output), batch_size, use_gpu=gpu,
                               progress=None if terminal else show, progress_bars=terminal)
    if as_json:
        print_json({"model": ref.name, "version": version, "rows": result.rows, "output": str(result.output),
                    "seconds": round(result.seconds, 3)})
        return
    typer.echo(f"{result.rows} rows scored by {ref.name} version {version} -> {result.output} ({result.seconds:.1f}s)")


serve_default = App()  # `raymlp serve [JOB.yaml]`; `raymlp serve build JOB.yaml -o FILE` is serve_app's subcommand
serve_app = App(cls=job_group(serve_default),
                help="Put a registered model behind an HTTP endpoint on Ray Serve; `serve build`: a Serve config file.")
app.add_typer(serve_app, name="serve")
ModelServedOpt = Annotated[Optional[str], typer.Option("--model", metavar="NAME[@ALIAS|:VERSION]", help="The registered model to serve (default: the job's register section).")]
TrafficOpt = Annotated[Optional[str], typer.Option("--traffic", metavar="REF=SHARE,...", help="Split between aliases or versions: champion=90,challenger=10.")]
HostOpt = Annotated[Optional[str], typer.Option("--host", metavar="HOST", help="Listen address (default 127.0.0.1).")]
PortOpt = Annotated[Optional[int], typer.Option("--port", metavar="PORT", min=1, max=65535, help="HTTP port (default 8000).")]
RouteOpt = Annotated[Optional[str], typer.Option("--route", metavar="PREFIX", help="Route prefix (default /).")]


@serve_default.command("serve")
def serve(
    job: Annotated[Optional[Path], typer.Argument(metavar="JOB.yaml", help="Job file whose serve section (and model) to use.", show_default=False)] = None,
    model: ModelServedOpt = None,
    traffic: TrafficOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    route: RouteOpt = None,
    overrides: SetOpt = None,
    address: AddressOpt = None,
    block: Annotated[Optional[bool], typer.Option("--block/--no-block", help="Stay in the foreground until Ctrl-C (default: yes on an embedded Ray, no on a cluster).")] = None,
) -> None:
    """Put a registered model behind an HTTP endpoint on Ray Serve.

    `raymlp serve build JOB.yaml -o serve.yaml` writes the same application as a Serve config file
    for `serve deploy` or a KubeRay RayService instead.
    """
    ref, config, storage, tracker, package, version = _serving(job, overrides, model, traffic, host, port, route)
    from raymlp.runtime import ray_runtime
    from raymlp.serve.deploy import deploy, endpoint_spec, wait_until_healthy

    pinned = ref.alias is None and config.traffic is None
    app_name = ref.name
    spec = endpoint_spec(config, ref.name, alias=ref.alias, version=version,
                         package=str(package) if pinned else None, storage=storage)
    for reference in spec.traffic:  # every alias and version exists before anything starts
        if reference not in spec.packages:
            tracker.package_for(_model_ref(ref.name, reference), storage.folder("cache", "models"))
    with ray_runtime(address) as runtime:
        endpoint = deploy(spec, config, app_name=app_name)
        wait_until_healthy(endpoint)
        split = ", ".join(f"{key} {value:g}" for key, value in spec.traffic.items())
        typer.echo(f"serving {ref.name} ({split}; {ref} is version {version}) at {endpoint.url}")
        sys.stdout.flush()
        if block if block is not None else runtime.embedded:
            _wait_for_interrupt(endpoint.url)


@serve_app.command("build")
def serve_build(
    job: JobArg,
    output: Annotated[Path, typer.Option("-o", "--output", metavar="FILE.yaml", help="Where to write the Serve config.")],
    model: ModelServedOpt = None,
    traffic: TrafficOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    route: RouteOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Write the job's endpoint as a Serve config file, for `serve deploy` or a KubeRay RayService."""
    ref, config, storage, _, _, version = _serving(job, overrides, model, traffic, host, port, route)
    from raymlp.serve.deploy import endpoint_spec, serve_config_file

    pinned = ref.alias is None and config.traffic is None
    app_name = ref.name
    spec = endpoint_spec(config, ref.name, alias=ref.alias, version=None if not pinned else version,
                         storage=storage, keys_from_replica_env=True)
    written = serve_config_file(spec, config, app_name, output)
    typer.echo(f"wrote {written}: application '{app_name}' on {config.route} ({', '.join(f'{key}={value:g}' for key, value in spec.traffic.items())})")


def _serving(job: Path | None, overrides, model, traffic, host, port, route):
    """(ref, ServeConfig, storage, tracker, package folder, version) of the model to serve; fetched and checked."""
    loaded = _load(job, overrides) if job else None
    ref, config = _served_model(loaded, model, traffic, {"host": host, "port": port, "route": route})
    storage = _storage_for(job)
    tracker = _tracker(None, storage)
    package, version = tracker.package_for(ref, storage.folder("cache", "models"))
    return ref, config, storage, tracker, package, version


def _model_ref(name: str, reference: str):
    from raymlp.tracking import ModelRef

    return ModelRef(name, version=int(reference)) if reference.isdigit() else ModelRef(name, alias=reference)


def _served_model(loaded, model: str | None, traffic: str | None, options: dict[str, Any]):
    """(the model named on the command line or by the job's register section, its ServeConfig)."""
    from raymlp.config.schema import ServeConfig
    from raymlp.errors import UsageError
    from raymlp.tracking import ModelRef, parse_model_ref

    if model:
        ref = parse_model_ref(model)
    elif loaded and loaded.config.register:
        ref = ModelRef(loaded.config.register.model, alias=loaded.config.register.alias)
    else:
        raise UsageError("name the model: raymlp serve --model NAME@ALIAS, or a job file with a register section")
    base = loaded.config.serve if loaded and loaded.config.serve else ServeConfig()
    settings = base.model_dump(exclude_none=True)
    settings.update({key: value for key, value in options.items() if value is not None})
    if traffic is not None:
        split: dict[str, float] = {}
        for part in traffic.split(","):
            key, _, share = part.partition("=")
            try:
                split[key.strip()] = float(share)
            except ValueError:
                raise UsageError(f"--traffic: '{part}' is not ALIAS=SHARE or VERSION=SHARE (e.g. champion=90,challenger=10)") from None
        settings["traffic"] = split
    try:
        return ref, ServeConfig.model_validate(settings)
    except Exception as error:
        raise UsageError(f"serve settings: {error}") from None


# --- data -----------------------------------------------------------------------------------------


def _catalog(job: Path | None):
    from raymlp.catalog import Catalog

    return Catalog(_storage_for(job).catalog_url)


JobOpt = Annotated[Optional[Path], typer.Option("--job", metavar="JOB.yaml", help="Take storage locations from this job file.")]


DataAddressOpt = Annotated[Optional[str], typer.Option("--address", metavar="ADDRESS", help=(
    "Ray cluster to read ranges on (default: RAY_ADDRESS; with neither, this machine's threads: no Ray is started)."))]


@data_app.command("collect")
def data_collect(job: JobArg, overrides: SetOpt = None, address: DataAddressOpt = None) -> None:
    """Load the job's source into its data.collect table (atomically)."""
    from raymlp.errors import UsageError
    from raymlp.pipeline import run_job

    loaded = _load(job, overrides)
    if loaded.config.data.collect is None:
        raise UsageError(f"{job}: data.collect is not set; nothing to collect into")
    run_job(loaded, only=["collect"], address=address)


@data_app.command("convert")
def data_convert(job: JobArg, overrides: SetOpt = None, as_json: JsonOpt = False, address: DataAddressOpt = None) -> None:
    """Make a new immutable dataset version from the job's table or source."""
    from raymlp.pipeline import run_job

    summary = run_job(_load(job, overrides), only=["convert"], address=address)
    if as_json:
        print_json({"dataset": summary.dataset, "rows": summary.dataset_rows, "content_digest": summary.content_digest,
                    "reused": bool(summary.dataset_reused)})
    else:
        reused = " (reused: the latest version has these rows; nothing new published)" if summary.dataset_reused else ""
        typer.echo(f"{summary.dataset}: {summary.dataset_rows} rows, {summary.content_digest}{reused}")


@data_app.command("list")
def data_list(as_json: JsonOpt = False, job: JobOpt = None) -> None:
    """Registered dataset versions."""
    with _catalog(job) as catalog:
        versions = catalog.list_dataset_versions()
    rows = [
        {"name": item.name, "version": item.version, "rows": item.row_count, "content_digest": item.content_digest,
         "path": item.path, "created_at": item.created_at}
        for item in versions
    ]
    if as_json:
        print_json(rows)
    else:
        print_table("datasets", ["name", "version", "rows", "digest", "created"],
                    [[r["name"], r["version"], r["rows"], r["content_digest"][:19], r["created_at"]] for r in rows])


def _dataset_ref(ref: str, what: str = "dataset") -> tuple[str, int | None]:
    """NAME or NAME@VERSION; `wine:1` (a model's form) is refused with the right one."""
    from raymlp.errors import UsageError

    name, _, version = ref.partition("@")
    if not version and ":" in name:
        before, _, after = name.rpartition(":")
        if after.isdigit():
            raise UsageError(f"'{ref}': a {what} version is NAME@VERSION; did you mean {before}@{after}? "
                             "(NAME:VERSION is a model's version)")
        if what == "module":
            raise UsageError(f"'{ref}' is a function ref (MODULE:FUNCTION); name the module: {before} or {before}@VERSION")
    if version and not version.isdigit():
        raise UsageError(f"'{ref}' is not NAME or NAME@VERSION (a {what} version is a number)")
    return name, int(version) if version else None


@data_app.command("show")
def data_show(ref: Annotated[str, typer.Argument(metavar="NAME[@VERSION]", help="A dataset (its latest version) or one version.")], as_json: JsonOpt = False, job: JobOpt = None) -> None:
    """A dataset version: schema, counts, source and the models trained on it."""
    from .output import number, print_lines, timestamp

    name, version = _dataset_ref(ref)
    with _catalog(job) as catalog:
        record = catalog.get_dataset_version(name, version)
        models = catalog.models_using_dataset(record.name, record.version)
        collections = catalog.list_collections(record.source["table"]) if record.source.get("kind") == "table" else []
    manifest = record.manifest
    collected = next((item for item in reversed(collections)  # the collect this version read
                      if item.target_url == record.source.get("url") and item.created_at <= record.created_at), None)
    shown = {
        "name": record.name, "version": record.version, "path": record.path, "rows": record.row_count,
        "content_digest": record.content_digest, "created_at": record.created_at, "schema": manifest["schema"],
        "source": record.source, "quarantine": manifest.get("quarantine"), "validation": manifest.get("validation"),
        "files": manifest["files"], "statistics": manifest.get("statistics", {}),
        "models": [{"model": m.model_name, "version": m.model_version, "run_id": m.run_id} for m in models],
        "lineage": _lineage(record, models),
        "collected_from": None if collected is None else {
            "source": collected.source_uri, "sha256": collected.source_sha256, "rows": collected.row_count,
            "at": collected.created_at},
    }
    if as_json:
        print_json(shown)
        return
    aside = (shown["quarantine"] or {}).get("rows", 0)
    print_table(f"dataset {record.name}@{record.version}", ["field", "value"], [
        ["rows", f"{record.row_count:,}" + (f" (+{aside:,} quarantined)" if aside else "")],
        ["digest", record.content_digest], ["path", record.path], ["created", timestamp(record.created_at) + " UTC"],
        ["source", _source_line(record.source)], ["files", f"{len(manifest['files'])} Parquet file" + ("s" if len(manifest["files"]) != 1 else "")],
        ["models", ", ".join(f"{m['model']}:{m['version']}" for m in shown["models"]) or "none"],
    ])
    steps = shown["lineage"]
    if collected is not None:
        steps = [collected.source_uri + (f" (sha256 {collected.source_sha256[:12]}...)" if collected.source_sha256 else ""),
                 f"{steps[0]} (collected {timestamp(collected.created_at)} UTC, {collected.row_count:,} rows)", *steps[1:]]
    print_lines("lineage", [steps[0], *(f"-> {step}" for step in steps[1:])])
    statistics = shown["statistics"]

    def distinct(entry: dict) -> str:
        return f"> {entry['distinct_over']:,}" if "distinct_over" in entry else number(entry.get("distinct"))

    print_table("columns", ["column", "type", "nulls", "distinct", "min", "max", "mean"], [
        [c["name"], c["type"], number(statistics.get(c["name"], {}).get("nulls")), distinct(statistics.get(c["name"], {})),
         *(number(statistics.get(c["name"], {}).get(key)) for key in ("min", "max", "mean"))]
        for c in manifest["schema"]
    ])


def _source_line(source: dict) -> str:
    """A version's recorded source in one line: files, a table, a query or a scikit-learn dataset."""
    kind = source.get("kind")
    if kind == "files":
        files = source.get("files", [])
        shown = ", ".join(item["path"] for item in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        return f"{source.get('format', '')} files {shown}".strip()
    if kind == "table":
        return f"table {source['table']} in {source['url']}"
    if kind == "sql":
        return f"query on {source['url']}: {source.get('query') or source.get('table')}"
    if kind == "sklearn":
        return f"scikit-learn's {source.get('name')}"
    return f"{kind} {source.get('name') or ''}".strip()


def _lineage(record, models) -> list[str]:
    """source -> version -> models, one step each (`data show --json` gives these strings)."""
    steps = [_source_line(record.source) if record.source.get("kind") != "files"
             else "files " + ", ".join(item["path"] for item in record.source["files"])]
    steps.append(f"dataset {record.name}@{record.version} ({record.row_count} rows)")
    steps += [f"model {m.model_name} version {m.model_version} (run {m.run_id})" for m in models]
    return steps


@data_app.command("verify")
def data_verify(
    ref: Annotated[str, typer.Argument(metavar="NAME[@VERSION]", help="A dataset (its latest version) or one version.")],
    job: JobOpt = None,
    source: Annotated[bool, typer.Option("--source/--no-source", help="Also re-derive the version from its source.")] = True,
    source_url: Annotated[Optional[str], typer.Option("--source-url", metavar="URL", help="Database URL of the source (when it needs a password).")] = None,
    address: DataAddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash a version against its manifest, then prove its source yields the same rows and digest.

    Exit 1 when either check fails; with --json the findings are printed as JSON as well.
    """
    import contextlib

    from raymlp import settings
    from raymlp.data.verify import verify_against_source
    from raymlp.data.versions import verify_version
    from raymlp.errors import WorkFailed

    name, version = _dataset_ref(ref)
    with _catalog(job) as catalog:
        record = catalog.get_dataset_version(name, version)
    label = f"{record.name}@{record.version}"
    aside = (record.manifest.get("quarantine") or {}).get("rows", 0)
    report = {"dataset": record.name, "version": record.version, "rows": record.row_count, "quarantined": aside,
              "files": len(record.manifest["files"]), "content_digest": record.content_digest,
              "manifest": {"ok": True, "problems": []}, "source": None}
    problems = verify_version(record.path, record.manifest)
    if problems:
        report["manifest"] = {"ok": False, "problems": problems}
        if as_json:
            print_json(report)
        raise WorkFailed(f"{label} is damaged:\n  " + "\n  ".join(problems))
    if not as_json:
        typer.echo(f"{label}: {report['files']} files and {record.row_count} rows match the manifest ({record.content_digest})")
    if source:
        url = source_url or _source_url_from_job(job, record.manifest["source"])
        cluster = address or settings.ray_address()  # ranges read on a cluster's nodes, as convert reads them
        with contextlib.ExitStack() as stack:
            if cluster:
                from raymlp.runtime import ray_runtime

                stack.enter_context(ray_runtime(address))
            problems = verify_against_source(record.manifest, url)
        report["source"] = {"ok": not problems, "problems": problems}
        if problems:
            if as_json:
                print_json(report)
            raise WorkFailed(f"{label} differs from its source:\n  " + "\n  ".join(problems))
        if not as_json:
            typer.echo(f"{label}: its source yields the same {record.row_count} rows"
                       + (f" (+{aside} quarantined)" if aside else "") + " and the same content digest")
    if as_json:
        print_json(report)


def _source_url_from_job(job: Path | None, source: dict) -> str | None:
    """The real database URL (with ${ENV} secrets) from the job file, for a table or SQL source."""
    if job is None or source.get("kind") not in ("table", "sql"):
        return None
    data = _load(job, []).config.data
    if source["kind"] == "table" and data.collect is not None:
        return data.collect.url
    return data.source.sql.url if data.source.sql is not None else None


@data_app.command("sample")
def data_sample(
    name: Annotated[str, typer.Argument(help="iris, wine, breast_cancer, digits or diabetes")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV file to write.")],
) -> None:
    """Write a dataset that ships with scikit-learn as a CSV file (class names as labels)."""
    import os

    from raymlp.config.schema import SklearnSource
    from raymlp.data.sources import sklearn_frame
    from raymlp.errors import UsageError

    allowed = SklearnSource.model_fields["name"].annotation.__args__
    if name not in allowed:
        raise UsageError(f"unknown sample '{name}'; available: {', '.join(allowed)}")
    frame = sklearn_frame(name)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.partial")
    frame.to_csv(temporary, index=False)
    os.replace(temporary, output)
    typer.echo(f"{output}: {len(frame)} rows of scikit-learn's {name}")


@data_app.command("rm")
def data_rm(
    ref: Annotated[str, typer.Argument(metavar="NAME@VERSION", help="The dataset version to remove.")],
    force: Annotated[bool, typer.Option("--force", help="Remove it even though models were trained on it.")] = False,
    job: JobOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a dataset version: its files and its catalog entry (its number is not used again).

    A version models were trained on is kept unless --force (their lineage would name a version
    that is gone).
    """
    from raymlp.data.versions import remove_version
    from raymlp.errors import UsageError

    name, version = _dataset_ref(ref)
    if version is None:
        raise UsageError(f"data rm takes NAME@VERSION, got '{ref}' (one version at a time: raymlp data list shows them)")
    with _catalog(job) as catalog:
        catalog.get_dataset_version(name, version)  # the usual error when there is no such version
        models = catalog.models_using_dataset(name, version)
        if models and not force:
            raise UsageError(f"{name}@{version} is the training data of "
                             + ", ".join(f"model {m.model_name}:{m.model_version}" for m in models)
                             + "; remove those first (raymlp models rm), or remove it anyway with --force")
        removed = remove_version(catalog, name, version)
    removed["models"] = [f"{m.model_name}:{m.model_version}" for m in models]
    if as_json:
        print_json(removed)
        return
    typer.echo(f"removed {name}@{version}: {removed['rows']} rows, {len(removed['files'])} files "
               f"({removed['bytes']:,} bytes) from {removed['path']}, and its catalog entry"
               + (f"; models trained on it: {', '.join(removed['models'])}" if models else ""))


# --- data modules ---------------------------------------------------------------------------------


def _module_json(record, *, source: bool = False) -> dict:
    shown = {"name": record.name, "version": record.version, "sha256": record.sha256, "filename": record.filename,
             "functions": record.functions, "created_at": record.created_at}
    if source:
        shown["source"] = record.source
    return shown


@modules_app.command("add")
def modules_add(
    file: Annotated[Path, typer.Argument(help="A self-contained Python file of transform functions.", show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", help="Module name used in refs (default: the file's stem).")] = None,
    as_json: JsonOpt = False,
    job: JobOpt = None,
) -> None:
    """Check a module file (it must parse and import) and store it as a new version if its content changed."""
    from raymlp.data.modules import read_module_file

    checked = read_module_file(file, name)
    with _catalog(job) as catalog:
        added = catalog.add_module(checked.name, checked.source, str(checked.path), checked.functions)
    record = added.record
    if as_json:
        print_json({**_module_json(record), "created": added.created, "same_as": added.same_as})
        return
    if added.created:
        again = f" (same content as version {added.same_as})" if added.same_as else ""
        typer.echo(f"{record.name} version {record.version} added{again}, sha256 {record.sha256}")
    else:
        typer.echo(f"{record.name}: unchanged, identical to version {record.version} (sha256 {record.sha256}); "
                   "nothing added")
    for function in record.functions:
        typer.echo(f"  {record.name}:{function['name']}{function['signature']}  line {function['line']}"
                   + (f"  {function['doc']}" if function["doc"] else ""))


@modules_app.command("list")
def modules_list(as_json: JsonOpt = False, job: JobOpt = None) -> None:
    """Registered modules: latest version, its sha256 and functions."""
    with _catalog(job) as catalog:
        records = catalog.list_modules()
    latest: dict[str, object] = {}
    counts: dict[str, int] = {}
    for record in records:  # by name, then version: the last one seen is the latest
        latest[record.name] = record
        counts[record.name] = counts.get(record.name, 0) + 1
    rows = [{"name": r.name, "latest_version": r.version, "versions": counts[r.name], "sha256": r.sha256,
             "functions": [f["name"] for f in r.functions], "created_at": r.created_at} for r in latest.values()]
    if as_json:
        print_json(rows)
    else:
        print_table("modules", ["name", "latest", "versions", "sha256", "functions", "added"],
                    [[r["name"], r["latest_version"], r["versions"], r["sha256"][:16], ", ".join(r["functions"]),
                      r["created_at"]] for r in rows])


@modules_app.command("show")
def modules_show(
    ref: Annotated[str, typer.Argument(metavar="NAME[@VERSION]", help="A module (every version) or one version.")],
    as_json: JsonOpt = False,
    source: Annotated[bool, typer.Option("--source", help="Also print the source (of NAME@VERSION, or the latest).")] = False,
    job: JobOpt = None,
) -> None:
    """A module's versions: sha256, where each came from, and the functions it defines."""
    name, number = _dataset_ref(ref, "module")
    with _catalog(job) as catalog:
        chosen = catalog.get_module(name, number)  # a clear error when there is none
        versions = [chosen] if number else catalog.list_modules(name)
    if as_json:
        print_json({"name": name, "latest_version": versions[-1].version,
                    "versions": [_module_json(record, source=source) for record in versions]})
        return
    print_table(f"module {name}", ["version", "sha256", "functions", "file", "added"], [
        [r.version, r.sha256, ", ".join(f["name"] for f in r.functions), r.filename, r.created_at] for r in versions
    ])
    shown = versions[-1]
    print_table(f"{name}@{shown.version} functions", ["ref", "signature", "line", "doc"], [
        [f"{name}:{f['name']}", f["signature"], f["line"], f["doc"]] for f in shown.functions
    ])
    if source:
        sys.stdout.write(shown.source if shown.source.endswith("\n") else shown.source + "\n")


# --- models ---------------------------------------------------------------------------------------


def _tracker(job: Path | None, storage=None):
    from raymlp.tracking import Tracker

    storage = storage or _storage_for(job)
    return Tracker(storage.tracking_uri, Path(storage.root))


@models_app.command("list")
def models_list(as_json: JsonOpt = False, job: JobOpt = None) -> None:
    """Registered models and their versions."""
    tracker = _tracker(job)
    rows = []
    for model in tracker.client.search_registered_models():
        aliases = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for version in sorted(tracker.client.search_model_versions(f"name = '{model.name}'"), key=lambda v: int(v.version)):
            run = tracker.client.get_run(version.run_id) if version.run_id else None
            rows.append({
                "name": model.name, "version": int(version.version), "aliases": aliases.get(str(version.version), []),
                "run_id": version.run_id, "dataset": run.data.tags.get("raymlp.dataset") if run else None,
                "metrics": dict(run.data.metrics) if run else {}, "created_at": version.creation_timestamp,
            })
    if as_json:
        print_json(rows)
    else:
        print_table("models", ["name", "version", "aliases", "dataset", "run"],
                    [[r["name"], r["version"], ",".join(r["aliases"]), r["dataset"], r["run_id"]] for r in rows])


ModelArg = Annotated[str, typer.Argument(metavar="NAME[@ALIAS|:VERSION]", help="NAME (its latest version), NAME@ALIAS or NAME:VERSION.")]


@models_app.command("show")
def models_show(model: ModelArg, as_json: JsonOpt = False, job: JobOpt = None) -> None:
    """One model version: metrics, features, preprocessing and lineage."""
    import json

    from raymlp.tracking import parse_model_ref

    ref = parse_model_ref(model)
    from raymlp.package import DESCRIPTION_FILE

    storage = _storage_for(job)
    tracker = _tracker(job, storage)
    package, version = tracker.package_for(ref, storage.folder("cache", "models"))
    description = json.loads((package / DESCRIPTION_FILE).read_text())
    shown = {"name": ref.name, "version": version, **{k: description[k] for k in ("framework", "task", "label", "classes", "features", "metrics", "lineage")},
             "preprocess": description.get("preprocess", []), "modules": description.get("modules", [])}
    if as_json:
        print_json(shown)
        return
    aliases = sorted(alias for alias, at in (tracker.client.get_registered_model(ref.name).aliases or {}).items()
                     if str(at) == str(version))
    _print_model(shown, aliases)


def _print_model(shown: dict, aliases: list[str]) -> None:
    """`models show` for people: a summary, then metrics, features, preprocessing and lineage."""
    from .output import cell, number, print_lines, timestamp

    name, version, lineage = shown["name"], shown["version"], shown["lineage"] or {}
    features = shown["features"]
    print_table(f"model {name}:{version}" + (f" ({', '.join('@' + alias for alias in aliases)})" if aliases else ""),
                ["field", "value"], [
        ["framework", shown["framework"]], ["task", shown["task"]], ["label", shown["label"]],
        *([["classes", cell(shown["classes"])]] if shown["classes"] else []),
        ["features", f"{len(features)}: " + ", ".join(f"{f['name']} ({f['type']})" for f in features[:8])
         + (f", and {len(features) - 8} more" if len(features) > 8 else "")],
        ["trained", timestamp(_parse_time(lineage.get("trained_at"))) + " UTC" if lineage.get("trained_at") else ""],
    ])
    print_table("metrics", ["metric", "value"], [[key, number(value)] for key, value in sorted(shown["metrics"].items())])
    print_lines("preprocessing", [f"{index}. {step.get('type', '?')}: " + cell({k: v for k, v in step.items() if k != "type"})
                                  for index, step in enumerate(shown["preprocess"], 1)])
    print_lines("modules", [f"{m['name']}@{m['version']} ({', '.join(m['functions'])}; sha256 {m['sha256'][:12]}...)"
                            for m in shown["modules"]])
    dataset, job = lineage.get("dataset") or {}, lineage.get("job") or {}
    steps = []
    if dataset:
        steps.append(f"dataset {dataset['name']}@{dataset['version']} ({dataset.get('digest', '')[:19]})")
    if job:
        steps.append(f"job {job['name']} ({job.get('path')}, sha256 {str(job.get('sha256'))[:12]}...)")
    if lineage.get("run_id"):
        steps.append(f"run {lineage['run_id']} (MLflow run {lineage.get('mlflow_run_id')}, best epoch {lineage.get('best_epoch')})")
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
    alias: Annotated[str, typer.Option("--alias", help="Alias to move, e.g. champion.")],
    job: JobOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point an alias at a version."""
    from raymlp.errors import UsageError
    from raymlp.tracking import parse_model_ref

    ref = parse_model_ref(model)
    if ref.version is None:
        raise UsageError(f"promote needs NAME:VERSION, got '{model}'")
    tracker = _tracker(job)
    tracker.resolve(ref)
    before = (tracker.client.get_registered_model(ref.name).aliases or {}).get(alias)
    tracker.set_alias(ref.name, alias, ref.version, by="promote")
    if as_json:
        print_json({"model": ref.name, "alias": alias, "version": ref.version,
                    "previous_version": None if before is None else int(before)})
        return
    typer.echo(f"{ref.name}@{alias} -> version {ref.version}" + (f" (was version {before})" if before is not None else ""))


@models_app.command("rm")
def models_rm(
    model: Annotated[str, typer.Argument(metavar="NAME:VERSION", help="The registered model version to delete.")],
    force: Annotated[bool, typer.Option("--force", help="Delete it even though an alias points at it (the alias goes).")] = False,
    job: JobOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a registered model version from the MLflow registry (its MLflow run stays).

    A version an alias points at (what serve and predict use) is kept unless --force.
    """
    from raymlp.errors import UsageError
    from raymlp.tracking import parse_model_ref

    ref = parse_model_ref(model)
    if ref.version is None:
        raise UsageError(f"models rm takes NAME:VERSION, got '{model}'")
    storage = _storage_for(job)
    removed = _tracker(job, storage).remove_version(ref.name, ref.version, force=force)
    from raymlp.catalog import Catalog

    with Catalog(storage.catalog_url) as catalog:
        catalog.delete_model_version(ref.name, ref.version)  # its lineage: the dataset is no longer in use by it
    if as_json:
        print_json(removed)
        return
    gone = f" (alias {', '.join(removed['aliases'])} removed with it)" if removed["aliases"] else ""
    typer.echo(f"removed {ref.name}:{removed['version']} from the registry{gone}; its MLflow run {removed['run_id']} stays")


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
    from raymlp.errors import UsageError
    from raymlp.tracking import parse_model_ref

    ref = parse_model_ref(model)
    if ref.alias or ref.version:
        raise UsageError(f"rollback takes the model NAME and --alias ALIAS, got '{model}'")
    before, after = _tracker(job).rollback_alias(ref.name, alias)
    if as_json:
        print_json({"model": ref.name, "alias": alias, "version": after, "previous_version": before})
        return
    typer.echo(f"{ref.name}@{alias} -> version {after} (was version {before})")
