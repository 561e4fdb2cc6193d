"""Commands. Each is a thin call into the modules that do the work; heavy imports stay inside."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .output import print_json, print_table

app = typer.Typer(
    help="raymlp: one YAML job from raw files to a served model, on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Datasets: collect, convert, list, show, verify; preprocessing modules.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models (MLflow registry).", no_args_is_help=True)
modules_app = typer.Typer(
    help="Preprocessing modules: your own Python transform functions, versioned in the catalog.", no_args_is_help=True
)
data_app.add_typer(modules_app, name="modules")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

JobArg = Annotated[Path, typer.Argument(help="Job file (YAML).", show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a setting: --set train.epochs=5 (repeatable).")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join (default: RAY_ADDRESS, else an embedded local Ray).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _load(job: Path, overrides: list[str] | None):
    from raymlp.config import load_job

    return load_job(job, overrides or [])


def _storage_for(job: Path | None):
    from raymlp.storage import resolve_storage

    return resolve_storage(_load(job, []).config.storage if job else None)


@app.command()
def validate(job: JobArg, overrides: SetOpt = None) -> None:
    """Check a job file; print every problem as FILE:LINE: key: message (exit 2 when any)."""
    from raymlp.config.inputs import validate_inputs

    loaded = _load(job, overrides)
    note = validate_inputs(loaded)  # what the job reads: files, headers, imports, module refs
    if note:
        print(f"warning: {note}", file=sys.stderr)
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
    only: Annotated[Optional[str], typer.Option("--only", help="Comma-separated stages to run, e.g. data,train.")] = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
    keep_serving: Annotated[bool, typer.Option("--keep-serving", help="After the serve stage, keep the endpoint up until Ctrl-C.")] = False,
) -> None:
    """Run a job's stages end to end and print what was made."""
    from raymlp.pipeline import run_job

    loaded = _load(job, overrides)
    stages = _expand_only(only)
    keep = (lambda summary: _wait_for_interrupt(summary.endpoint)) if keep_serving else None
    summary = run_job(loaded, only=stages, address=address, on_serving=keep)
    _print_summary(summary, as_json)


def _expand_only(only: str | None) -> list[str] | None:
    if not only:
        return None
    names: list[str] = []
    for name in (part.strip() for part in only.split(",") if part.strip()):
        names += ["collect", "convert"] if name == "data" else [name]
    return names


def _print_summary(summary, as_json: bool) -> None:
    from dataclasses import asdict

    from .output import print_summary

    if as_json:
        print_json(asdict(summary))
    else:
        print_summary(summary)


def _wait_for_interrupt(endpoint: str) -> None:
    import time

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


@app.command()
def tune(
    job: Annotated[str, typer.Argument(help="Job file (YAML); or `results` followed by the job file.", show_default=False)],
    results_of: Annotated[Optional[Path], typer.Argument(help="With `results`: the job file.", show_default=False)] = None,
    overrides: SetOpt = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
    resume: Annotated[bool, typer.Option("--resume", help="Go on with the job's newest sweep that did not finish (its driver died); finished trials are not run again.")] = False,
    retry_errored: Annotated[bool, typer.Option("--retry-errored", help="With --resume: run the trials that errored again.")] = False,
) -> None:
    """Run the job's sweep (and register the best trial when the job says so); `tune results JOB`
    prints the latest sweep's results table."""
    from raymlp.errors import UsageError

    if job == "results":
        if results_of is None:
            raise UsageError("tune results: name the job file: raymlp tune results JOB.yaml")
        _print_tune_results(results_of, as_json)
        return
    if results_of is not None:
        raise UsageError(f"tune: one job file, got '{job}' and '{results_of}' (for a sweep's results: raymlp tune results JOB.yaml)")
    from raymlp.pipeline import run_job

    loaded = _load(Path(job), overrides)
    if loaded.config.tune is None:
        raise UsageError(f"{job}: the job has no tune section")
    stages = [name for name in ("tune", "register") if name in loaded.config.stages()]
    if retry_errored and not resume:
        raise UsageError("--retry-errored goes with --resume")
    sweep = _unfinished_sweep(Path(job), loaded) if resume else None
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


def _print_tune_results(job: Path, as_json: bool) -> None:
    import json

    from raymlp.catalog import Catalog
    from raymlp.errors import UsageError
    from raymlp.tune.stage import RESULTS_FILE

    loaded = _load(job, [])
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
    model: Annotated[str, typer.Option("--model", help="NAME, NAME@ALIAS or NAME:VERSION in the registry.")],
    input: Annotated[str, typer.Option("--input", help="csv/parquet/jsonl file, folder or glob.")],
    output: Annotated[Path, typer.Option("--output", help="Output .csv or .parquet file, or a folder.")],
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Rows per model call (default 65536).")] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="One GPU per model replica, as many replicas as the cluster has GPUs.")] = False,
    job: Annotated[Optional[Path], typer.Option("--job", help="Take storage locations from this job file.")] = None,
    address: AddressOpt = None,
) -> None:
    """Batch predictions with a registered model, on Ray Data.

    On a terminal Ray Data's progress bars show; otherwise (a pipe, a log file) one plain line on
    stderr every few seconds.
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
    from raymlp.config.inputs import input_problem

    missing_input = input_problem(input)
    if missing_input:
        raise UsageError(f"--input {missing_input}")  # before Ray starts
    storage = _storage_for(job)
    package, version = Tracker(storage.tracking_uri, Path(storage.root)).package_for(ref, storage.folder("cache", "models"))
    # Ray Data draws bars only where stdout is a terminal (elsewhere it logs blocks of lines every
    # 10 s); the bars themselves go to stderr.
    terminal = sys.stdout.isatty() and sys.stderr.isatty()
    clock = {"start": time.perf_counter(), "shown": 0.0}

    def show(rows: int) -> None:
        now = time.perf_counter() - clock["start"]
        if now - clock["shown"] >= 2.0:
            clock["shown"] = now
            print(f"predict: {rows:,} rows scored ({now:.1f}s)", file=sys.stderr, flush=True)

    if not terminal:  # no "progress bars disabled" notice in a log: the lines above stand for them
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    with ray_runtime(address):
        clock["start"] = time.perf_counter()
        result = predict_batch(str(package), input, str(output), batch_size, use_gpu=gpu,
                               progress=None if terminal else show, progress_bars=terminal)
    typer.echo(f"{result.rows} rows scored by {ref.name} version {version} -> {result.output} ({result.seconds:.1f}s)")


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def serve(
    job: Annotated[Optional[str], typer.Argument(help="Job file whose serve section (and model) to use; or 'build'.")] = None,
    build_job: Annotated[Optional[Path], typer.Argument(help="With 'build': the job file to write a Serve config for.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="NAME@ALIAS, NAME:VERSION or NAME to serve.")] = None,
    traffic: Annotated[Optional[str], typer.Option("--traffic", help="Split between aliases or versions: champion=90,challenger=10.")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Listen address (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", min=1, max=65535, help="HTTP port (default 8000).")] = None,
    route: Annotated[Optional[str], typer.Option("--route", help="Route prefix (default /).")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="With 'build': where to write the Serve config.")] = None,
    overrides: SetOpt = None,
    address: AddressOpt = None,
    block: Annotated[Optional[bool], typer.Option("--block/--no-block", help="Stay in the foreground until Ctrl-C (default: yes on an embedded Ray, no on a cluster).")] = None,
) -> None:
    """Put a registered model behind an HTTP endpoint on Ray Serve.

    `raymlp serve build JOB.yaml -o serve.yaml` writes the same application as a Serve config file
    for `serve deploy` or a KubeRay RayService instead.
    """
    from raymlp.errors import UsageError
    from raymlp.runtime import ray_runtime
    from raymlp.serve.deploy import deploy, endpoint_spec, serve_config_file, wait_until_healthy

    building = job == "build"
    if building:
        if build_job is None or output is None:
            raise UsageError("usage: raymlp serve build JOB.yaml -o serve.yaml")
        job_path: Path | None = build_job
    else:
        if build_job is not None or output is not None:
            raise UsageError("-o and a second file only go with 'raymlp serve build JOB.yaml -o serve.yaml'")
        job_path = Path(job) if job else None
    loaded = _load(job_path, overrides) if job_path else None
    ref, config = _served_model(loaded, model, traffic, {"host": host, "port": port, "route": route})
    storage = _storage_for(job_path)
    tracker = _tracker(None, storage)
    package, version = tracker.package_for(ref, storage.folder("cache", "models"))
    pinned = ref.alias is None and config.traffic is None
    app_name = ref.name
    if building:
        spec = endpoint_spec(config, ref.name, alias=ref.alias, version=None if not pinned else version,
                             storage=storage, keys_from_replica_env=True)
        written = serve_config_file(spec, config, app_name, output)
        typer.echo(f"wrote {written}: application '{app_name}' on {config.route} ({', '.join(f'{key}={value:g}' for key, value in spec.traffic.items())})")
        return
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


JobOpt = Annotated[Optional[Path], typer.Option("--job", help="Take storage locations from this job file.")]


@data_app.command("collect")
def data_collect(job: JobArg, overrides: SetOpt = None) -> None:
    """Load the job's source into its data.collect table (atomically)."""
    from raymlp.errors import UsageError
    from raymlp.pipeline import run_job

    loaded = _load(job, overrides)
    if loaded.config.data.collect is None:
        raise UsageError(f"{job}: data.collect is not set; nothing to collect into")
    run_job(loaded, only=["collect"])


@data_app.command("convert")
def data_convert(job: JobArg, overrides: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Make a new immutable dataset version from the job's table or source."""
    from raymlp.pipeline import run_job

    summary = run_job(_load(job, overrides), only=["convert"])
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


def _dataset_ref(ref: str) -> tuple[str, int | None]:
    from raymlp.errors import UsageError

    name, _, version = ref.partition("@")
    if version and not version.isdigit():
        raise UsageError(f"'{ref}' is not NAME or NAME@VERSION (a version is a number)")
    return name, int(version) if version else None


@data_app.command("show")
def data_show(ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")], as_json: JsonOpt = False, job: JobOpt = None) -> None:
    """A dataset version: schema, counts, source and the models trained on it."""
    name, version = _dataset_ref(ref)
    with _catalog(job) as catalog:
        record = catalog.get_dataset_version(name, version)
        models = catalog.models_using_dataset(record.name, record.version)
    manifest = record.manifest
    shown = {
        "name": record.name, "version": record.version, "path": record.path, "rows": record.row_count,
        "content_digest": record.content_digest, "schema": manifest["schema"], "source": record.source,
        "quarantine": manifest.get("quarantine"), "validation": manifest.get("validation"),
        "files": manifest["files"], "statistics": manifest.get("statistics", {}),
        "models": [{"model": m.model_name, "version": m.model_version, "run_id": m.run_id} for m in models],
        "lineage": _lineage(record, models),
    }
    if as_json:
        print_json(shown)
        return
    print_table(f"{record.name}@{record.version}", ["field", "value"], [
        ["rows", record.row_count], ["digest", record.content_digest], ["path", record.path],
        ["source", shown["source"]], ["quarantined", (shown["quarantine"] or {}).get("rows", 0)],
        ["models", ", ".join(f"{m['model']}:{m['version']}" for m in shown["models"]) or "none"],
    ])
    print_table("lineage", ["step"], [[step] for step in shown["lineage"]])
    statistics = shown["statistics"]

    def number(value) -> str:
        return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)

    def distinct(entry: dict) -> str:
        return f"> {entry['distinct_over']:,}" if "distinct_over" in entry else number(entry.get("distinct"))

    print_table("columns", ["column", "type", "nulls", "distinct", "min", "max", "mean"], [
        [c["name"], c["type"], number(statistics.get(c["name"], {}).get("nulls")), distinct(statistics.get(c["name"], {})),
         *(number(statistics.get(c["name"], {}).get(key)) for key in ("min", "max", "mean"))]
        for c in manifest["schema"]
    ])


def _lineage(record, models) -> list[str]:
    """source -> table -> version -> models, as lines."""
    source = record.source
    steps = []
    if source.get("kind") == "table":
        steps.append(f"table {source['table']} in {source['url']}")
    elif source.get("kind") == "files":
        steps.append("files " + ", ".join(item["path"] for item in source["files"]))
    else:
        steps.append(f"{source.get('kind')} {source.get('name') or source.get('table') or source.get('query') or ''}".strip())
    steps.append(f"dataset {record.name}@{record.version} ({record.row_count} rows)")
    steps += [f"model {m.model_name} version {m.model_version} (run {m.run_id})" for m in models]
    return steps


@data_app.command("verify")
def data_verify(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")],
    job: JobOpt = None,
    source: Annotated[bool, typer.Option("--source/--no-source", help="Also re-derive the version from its source.")] = True,
    source_url: Annotated[Optional[str], typer.Option("--source-url", help="Database URL of the source (when it needs a password).")] = None,
) -> None:
    """Re-hash a version against its manifest, then prove its source yields the same rows and digest."""
    from raymlp.data.verify import verify_against_source
    from raymlp.data.versions import verify_version
    from raymlp.errors import WorkFailed

    name, version = _dataset_ref(ref)
    with _catalog(job) as catalog:
        record = catalog.get_dataset_version(name, version)
    problems = verify_version(record.path, record.manifest)
    if problems:
        raise WorkFailed(f"{record.name}@{record.version} is damaged:\n  " + "\n  ".join(problems))
    typer.echo(f"{record.name}@{record.version}: {len(record.manifest['files'])} files and {record.row_count} rows "
               f"match the manifest ({record.content_digest})")
    if not source:
        return
    url = source_url or _source_url_from_job(job, record.manifest["source"])
    problems = verify_against_source(record.manifest, url)
    if problems:
        raise WorkFailed(f"{record.name}@{record.version} differs from its source:\n  " + "\n  ".join(problems))
    aside = (record.manifest.get("quarantine") or {}).get("rows", 0)
    typer.echo(f"{record.name}@{record.version}: its source yields the same {record.row_count} rows"
               + (f" (+{aside} quarantined)" if aside else "") + " and the same content digest")


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
    ref: Annotated[str, typer.Argument(help="NAME (every version) or NAME@VERSION")],
    as_json: JsonOpt = False,
    source: Annotated[bool, typer.Option("--source", help="Also print the source (of NAME@VERSION, or the latest).")] = False,
    job: JobOpt = None,
) -> None:
    """A module's versions: sha256, where each came from, and the functions it defines."""
    from raymlp.errors import UsageError

    name, _, number = ref.partition("@")
    if number and not number.isdigit():
        raise UsageError(f"'{ref}' is not NAME or NAME@VERSION (a version is a number)")
    with _catalog(job) as catalog:
        chosen = catalog.get_module(name, int(number) if number else None)  # a clear error when there is none
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


@models_app.command("show")
def models_show(model: Annotated[str, typer.Argument(help="NAME, NAME@ALIAS or NAME:VERSION")], as_json: JsonOpt = False, job: JobOpt = None) -> None:
    """One model version: metrics, lineage and features."""
    import json

    from raymlp.tracking import parse_model_ref

    ref = parse_model_ref(model)
    from raymlp.train.package import DESCRIPTION_FILE

    storage = _storage_for(job)
    tracker = _tracker(job, storage)
    package, version = tracker.package_for(ref, storage.folder("cache", "models"))
    description = json.loads((package / DESCRIPTION_FILE).read_text())
    shown = {"name": ref.name, "version": version, **{k: description[k] for k in ("framework", "task", "label", "classes", "features", "metrics", "lineage")},
             "preprocess": description.get("preprocess", []), "modules": description.get("modules", [])}
    if as_json:
        print_json(shown)
    else:
        print_table(f"{ref.name} version {version}", ["field", "value"], [[key, value] for key, value in shown.items()])


@models_app.command("promote")
def models_promote(
    model: Annotated[str, typer.Argument(help="NAME:VERSION to point the alias at")],
    alias: Annotated[str, typer.Option("--alias", help="Alias to move, e.g. champion.")],
    job: JobOpt = None,
) -> None:
    """Point an alias at a version."""
    from raymlp.errors import UsageError
    from raymlp.tracking import parse_model_ref

    ref = parse_model_ref(model)
    if ref.version is None:
        raise UsageError(f"promote needs NAME:VERSION, got '{model}'")
    tracker = _tracker(job)
    tracker.resolve(ref)
    tracker.set_alias(ref.name, alias, ref.version, by="promote")
    typer.echo(f"{ref.name}@{alias} -> version {ref.version}")


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
    model: Annotated[str, typer.Argument(help="NAME of the registered model")],
    alias: Annotated[str, typer.Option("--alias", help="Alias to move back, e.g. champion.")],
    job: JobOpt = None,
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
    typer.echo(f"{ref.name}@{alias} -> version {after} (was version {before})")
