"""`raymlp data ...` and `raymlp data modules ...`: parse, call raymlp.services.datasets (or the
pipeline's data stages), print."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .options import AddressOpt, JobArg, JobOpt, JsonOpt, SetOpt, remove_command
from .output import number, print_drift_table, print_json, print_listing, print_table
from .typer_app import App

data_app = App(help="Datasets: collect, convert, list, show, verify; preprocessing modules.", no_args_is_help=True)
modules_app = App(
    help="Preprocessing modules: your own Python transform functions, versioned in the catalog.", no_args_is_help=True
)
data_app.add_typer(modules_app, name="modules")

DataAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        metavar="ADDRESS",
        help=(
            "Ray cluster to read ranges on (default: RAY_ADDRESS; with neither, this machine's threads: no Ray is started)."
        ),
    ),
]
DatasetArg = Annotated[
    str, typer.Argument(metavar="NAME[@VERSION]", help="A dataset (its latest version) or one version.")
]


@data_app.command("collect")
def data_collect(job: JobArg, overrides: SetOpt = None, address: DataAddressOpt = None) -> None:
    """Load the job's source into its data.collect table (atomically)."""
    from raymlp.errors import UsageError
    from raymlp.pipeline import run_job
    from raymlp.services.jobs import load

    loaded = load(job, overrides)
    if loaded.config.data.collect is None:
        raise UsageError(f"{job}: data.collect is not set; nothing to collect into")
    run_job(loaded, only=["collect"], address=address)


@data_app.command("convert")
def data_convert(
    job: JobArg, overrides: SetOpt = None, as_json: JsonOpt = False, address: DataAddressOpt = None
) -> None:
    """Make a new immutable dataset version from the job's table or source."""
    from raymlp.pipeline import run_job
    from raymlp.services.jobs import load

    summary = run_job(load(job, overrides), only=["convert"], address=address)
    if as_json:
        print_json(
            {
                "dataset": summary.dataset,
                "version": int(summary.dataset.rpartition("@")[2]) if summary.dataset else None,
                "path": summary.dataset_path,
                "rows": summary.dataset_rows,
                "quarantined_rows": summary.quarantined_rows,
                "content_digest": summary.content_digest,
                "reused": bool(summary.dataset_reused),
            }
        )
    else:
        reused = " (reused: the latest version has these rows; nothing new published)" if summary.dataset_reused else ""
        typer.echo(f"{summary.dataset}: {summary.dataset_rows} rows, {summary.content_digest}{reused}")


@data_app.command("list")
def data_list(as_json: JsonOpt = False, job: JobOpt = None) -> None:
    """Registered dataset versions."""
    from raymlp.services.datasets import list_datasets

    print_listing(
        list_datasets(job),
        as_json,
        "datasets",
        ["name", "version", "rows", "digest", "created"],
        lambda r: [r["name"], r["version"], r["rows"], r["content_digest"][:19], r["created_at"]],
    )


def _dataset_ref(ref: str, what: str = "dataset") -> tuple[str, int | None]:
    """NAME or NAME@VERSION; `wine:1` (a model's form) is refused with the right one."""
    from raymlp.services.datasets import parse_dataset_ref

    return parse_dataset_ref(ref, what)


@data_app.command("show")
def data_show(ref: DatasetArg, as_json: JsonOpt = False, job: JobOpt = None) -> None:
    """A dataset version: schema, counts, source and the models trained on it."""
    from raymlp.services.datasets import describe_dataset, source_line

    from .output import number, print_lines, timestamp

    shown, record, collected = describe_dataset(*_dataset_ref(ref), job)
    if as_json:
        print_json(shown)
        return
    manifest = record.manifest
    aside = (shown["quarantine"] or {}).get("rows", 0)
    print_table(
        f"dataset {record.name}@{record.version}",
        ["field", "value"],
        [
            ["rows", f"{record.row_count:,}" + (f" (+{aside:,} quarantined)" if aside else "")],
            ["digest", record.content_digest],
            ["path", record.path],
            ["created", timestamp(record.created_at) + " UTC"],
            ["source", source_line(record.source)],
            ["files", f"{len(manifest['files'])} Parquet file" + ("s" if len(manifest["files"]) != 1 else "")],
            ["models", ", ".join(f"{m['model']}:{m['version']}" for m in shown["models"]) or "none"],
        ],
    )
    steps = shown["lineage"]
    if collected is not None:
        steps = [
            collected.source_uri + (f" (sha256 {collected.source_sha256[:12]}...)" if collected.source_sha256 else ""),
            f"{steps[0]} (collected {timestamp(collected.created_at)} UTC, {collected.row_count:,} rows)",
            *steps[1:],
        ]
    print_lines("lineage", [steps[0], *(f"-> {step}" for step in steps[1:])])
    statistics = shown["statistics"]

    def distinct(entry: dict) -> str:
        return f"> {entry['distinct_over']:,}" if "distinct_over" in entry else number(entry.get("distinct"))

    print_table(
        "columns",
        ["column", "type", "nulls", "distinct", "min", "max", "mean"],
        [
            [
                c["name"],
                c["type"],
                number(statistics.get(c["name"], {}).get("nulls")),
                distinct(statistics.get(c["name"], {})),
                *(number(statistics.get(c["name"], {}).get(key)) for key in ("min", "max", "mean")),
            ]
            for c in manifest["schema"]
        ],
    )


@data_app.command("profile")
def data_profile(ref: DatasetArg, as_json: JsonOpt = False, job: JobOpt = None, address: AddressOpt = None) -> None:
    """Per-column statistics of a dataset version (computed on Ray Data once, then kept under the storage root)."""
    from raymlp.services.monitoring import profile_dataset

    profile = profile_dataset(ref, job, address)
    if as_json:
        print_json(profile)
        return
    rows = []
    for column in profile["columns"]:
        spread = (
            f"{number(column['minimum'])} .. {number(column['maximum'])}, median {number(column['median'])}"
            if "minimum" in column
            else ", ".join(f"{item['value']} ({item['count']})" for item in column.get("top", [])[:3])
        )
        rows.append([column["column"], column["type"], column["missing"], column["distinct"], spread])
    print_table(
        f"{profile['dataset']}: {profile['rows']:,} rows", ["column", "type", "missing", "distinct", "values"], rows
    )


@data_app.command("compare")
def data_compare(
    reference: Annotated[
        str, typer.Argument(metavar="NAME@VERSION", help="The reference version.", show_default=False)
    ],
    current: Annotated[
        str, typer.Argument(metavar="NAME@VERSION", help="The version compared with it.", show_default=False)
    ],
    as_json: JsonOpt = False,
    job: JobOpt = None,
    address: AddressOpt = None,
) -> None:
    """Schema and statistics anomalies of one dataset version against another, and each column's drift."""
    from raymlp.services.monitoring import compare_datasets

    comparison = compare_datasets(reference, current, job, address)
    if as_json:
        print_json(comparison)
        return
    print_drift_table(f"{comparison['current']} against {comparison['reference']}", comparison["drift"])
    for anomaly in comparison["anomalies"]:
        print(f"anomaly: {anomaly['message']}")
    if not comparison["anomalies"]:
        print("no anomalies")


@data_app.command("verify")
def data_verify(
    ref: DatasetArg,
    job: JobOpt = None,
    source: Annotated[
        bool, typer.Option("--source/--no-source", help="Also re-derive the version from its source.")
    ] = True,
    source_url: Annotated[
        str | None,
        typer.Option("--source-url", metavar="URL", help="Database URL of the source (when it needs a password)."),
    ] = None,
    address: DataAddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash a version against its manifest, then prove its source yields the same rows and digest.

    Exit 1 when either check fails; with --json the findings are printed as JSON as well.
    """
    from raymlp.services.datasets import verify_dataset

    def manifest_ok(report: dict) -> None:
        if not as_json:
            typer.echo(
                f"{report['dataset']}@{report['version']}: {report['files']} files and {report['rows']} rows "
                f"match the manifest ({report['content_digest']})"
            )

    report = verify_dataset(
        *_dataset_ref(ref),
        job,
        source=source,
        source_url=source_url,
        address=address,
        on_report=print_json if as_json else lambda _: None,
        on_manifest_ok=manifest_ok,
    )
    if source and not as_json:
        aside = report["quarantined"]
        typer.echo(
            f"{report['dataset']}@{report['version']}: its source yields the same {report['rows']} rows"
            + (f" (+{aside} quarantined)" if aside else "")
            + " and the same content digest"
        )
    if as_json:
        print_json(report)


@data_app.command("sample")
def data_sample(
    name: Annotated[str, typer.Argument(help="iris, wine, breast_cancer, digits or diabetes")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV file to write.")],
) -> None:
    """Write a dataset that ships with scikit-learn as a CSV file (class names as labels)."""
    from raymlp.services.datasets import write_sample

    rows = write_sample(name, output)
    typer.echo(f"{output}: {rows} rows of scikit-learn's {name}")


def _remove_dataset(ref: str, job: Path | None, force: bool) -> tuple[dict, str]:
    from raymlp.services.datasets import remove_dataset

    name, version = _dataset_ref(ref)
    removed = remove_dataset(ref, name, version, job, force=force)
    return removed, (
        f"removed {name}@{version}: {removed['rows']} rows, {len(removed['files'])} files "
        f"({removed['bytes']:,} bytes) from {removed['path']}, and its catalog entry"
        + (f"; models trained on it: {', '.join(removed['models'])}" if removed["models"] else "")
    )


remove_command(
    data_app,
    "NAME@VERSION",
    "The dataset version to remove.",
    "Remove it even though models were trained on it.",
    """Remove a dataset version: its files and its catalog entry (its number is not used again).

    A version models were trained on is kept unless --force (their lineage would name a version
    that is gone).
    """,
    _remove_dataset,
)


# --- data modules ---------------------------------------------------------------------------------


@modules_app.command("add")
def modules_add(
    file: Annotated[
        Path, typer.Argument(help="A self-contained Python file of transform functions.", show_default=False)
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="Module name used in refs (default: the file's stem).")
    ] = None,
    as_json: JsonOpt = False,
    job: JobOpt = None,
) -> None:
    """Check a module file (it must parse and import) and store it as a new version if its content changed."""
    from raymlp.services.datasets import add_module, module_json

    added = add_module(file, name, job)
    record = added.record
    if as_json:
        print_json({**module_json(record), "created": added.created, "same_as": added.same_as})
        return
    if added.created:
        again = f" (same content as version {added.same_as})" if added.same_as else ""
        typer.echo(f"{record.name} version {record.version} added{again}, sha256 {record.sha256}")
    else:
        typer.echo(
            f"{record.name}: unchanged, identical to version {record.version} (sha256 {record.sha256}); nothing added"
        )
    for function in record.functions:
        typer.echo(
            f"  {record.name}:{function['name']}{function['signature']}  line {function['line']}"
            + (f"  {function['doc']}" if function["doc"] else "")
        )


@modules_app.command("list")
def modules_list(as_json: JsonOpt = False, job: JobOpt = None) -> None:
    """Registered modules: latest version, its sha256 and functions."""
    from raymlp.services.datasets import list_modules

    print_listing(
        list_modules(job),
        as_json,
        "modules",
        ["name", "latest", "versions", "sha256", "functions", "added"],
        lambda r: [
            r["name"],
            r["latest_version"],
            r["versions"],
            r["sha256"][:16],
            ", ".join(r["functions"]),
            r["created_at"],
        ],
    )


@modules_app.command("show")
def modules_show(
    ref: Annotated[str, typer.Argument(metavar="NAME[@VERSION]", help="A module (every version) or one version.")],
    as_json: JsonOpt = False,
    source: Annotated[
        bool, typer.Option("--source", help="Also print the source (of NAME@VERSION, or the latest).")
    ] = False,
    job: JobOpt = None,
) -> None:
    """A module's versions: sha256, where each came from, and the functions it defines."""
    from raymlp.services.datasets import module_json, module_versions

    name, number = _dataset_ref(ref, "module")
    versions = module_versions(name, number, job)
    if as_json:
        print_json(
            {
                "name": name,
                "latest_version": versions[-1].version,
                "versions": [module_json(record, source=source) for record in versions],
            }
        )
        return
    print_table(
        f"module {name}",
        ["version", "sha256", "functions", "file", "added"],
        [[r.version, r.sha256, ", ".join(f["name"] for f in r.functions), r.filename, r.created_at] for r in versions],
    )
    shown = versions[-1]
    print_table(
        f"{name}@{shown.version} functions",
        ["ref", "signature", "line", "doc"],
        [[f"{name}:{f['name']}", f["signature"], f["line"], f["doc"]] for f in shown.functions],
    )
    if source:
        sys.stdout.write(shown.source if shown.source.endswith("\n") else shown.source + "\n")
