"""`raymlp monitor MODEL` (drift, anomalies, performance; an HTML report), `monitor labels` and
`monitor replay`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import app
from .options import AddressOpt, JobOpt, JsonOpt
from .output import number, print_drift_table, print_json
from .typer_app import App, job_group

ModelArg = Annotated[
    str,
    typer.Argument(
        metavar="NAME[@ALIAS|:VERSION]",
        help="The registered model: NAME (every captured version), NAME@ALIAS or NAME:VERSION.",
        show_default=False,
    ),
]
WindowOpt = Annotated[
    str | None,
    typer.Option("--window", metavar="DURATION", help="The last so long: 30m, 24h, 7d (default: the job's, else 24h)."),
]
SinceOpt = Annotated[str | None, typer.Option("--since", metavar="TIME", help="Rows that arrived from this ISO time.")]
UntilOpt = Annotated[
    str | None, typer.Option("--until", metavar="TIME", help="Rows that arrived before this ISO time.")
]
RowsOpt = Annotated[int | None, typer.Option("--rows", metavar="N", min=1, help="Only the last N rows of the window.")]

monitor_default = App()  # `raymlp monitor MODEL`; `monitor labels` and `monitor replay` are subcommands
monitor_app = App(
    cls=job_group(monitor_default),
    no_args_is_help=True,
    help="Compare what a model's endpoint saw with what it learned from: drift, anomalies, performance; "
    "`monitor labels`: join ground truth; `monitor replay`: run captured requests through batch predict.",
)
app.add_typer(monitor_app, name="monitor")


@monitor_default.command("monitor")
def monitor(
    model: ModelArg,
    window: WindowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    rows: RowsOpt = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            metavar="DATASET@VERSION|capture:SINCE..UNTIL",
            help="What the window is compared with (default: the model's training split).",
        ),
    ] = None,
    drift_share: Annotated[
        float | None,
        typer.Option(
            "--drift-share", metavar="SHARE", min=0.0, max=1.0, help="Data drifts when this share of columns do."
        ),
    ] = None,
    correction: Annotated[
        str | None,
        typer.Option("--correction", metavar="none|bonferroni|fdr", help="Multiple-testing correction of p-values."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", metavar="FILE.html", help="Also write the report here.")
    ] = None,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help="Exit 3 when the data drifts (for cron and CI).")
    ] = False,
    job: JobOpt = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drift per column, anomalies and performance of a window of the model's capture; writes an HTML report."""
    from raymlp.errors import UsageError
    from raymlp.services.monitoring import EXIT_DRIFT, MonitorRequest
    from raymlp.services.monitoring import monitor as analyse

    if correction is not None and correction not in ("none", "bonferroni", "fdr"):
        raise UsageError(f"--correction {correction}: none, bonferroni or fdr")
    outcome = analyse(
        MonitorRequest(
            model=model,
            window=window,
            since=since,
            until=until,
            rows=rows,
            reference=reference,
            drift_share=drift_share,
            correction=correction,
            job=job,
            address=address,
            output=output,
        )
    )
    report = outcome.report
    if as_json:
        print_json({**report, "report": outcome.html})
    else:
        _print_summary(report, outcome.html)
    if outcome.drifted and (fail_on_drift or outcome.fail_on_drift):
        raise typer.Exit(EXIT_DRIFT)


def _print_summary(report: dict[str, Any], html: str) -> None:
    drift = report["drift"]
    window = report["window"]
    print(
        f"{report['model']} versions {', '.join(report['versions'])}: {window['rows']:,} rows "
        f"({window['description']}) against {report['reference']['description']}"
    )
    print_drift_table("drift per column", drift["columns"], drift["prediction"])
    verdict = "DRIFTED" if drift["drifted"] else "no data drift"
    print(
        f"{verdict}: {drift['columns_drifted']} of {drift['columns_tested']} columns drifted "
        f"(share {drift['share']:.3g}, threshold {drift['share_threshold']:.3g}, correction {drift['correction']})"
    )
    for anomaly in report["anomalies"]:
        print(f"anomaly: {anomaly['message']}")
    performance = report["performance"]
    for kind in ("measured", "estimated"):
        found = performance.get(kind)
        if found and found.get("metrics"):
            values = ", ".join(f"{name} {number(value)}" for name, value in found["metrics"].items())
            print(f"{kind} on {found['rows']:,} rows: {values}")
    for skipped in report["skipped_files"]:
        print(f"skipped {skipped['path']}: {skipped['reason']}", file=sys.stderr)
    print(f"report: {html}")


@monitor_app.command("labels")
def labels(
    model: ModelArg,
    input: Annotated[str, typer.Option("--input", metavar="PATH", help="Labels: a .csv, .parquet or .jsonl file.")],
    label: Annotated[str, typer.Option("--label", metavar="COLUMN", help="The column holding the ground truth.")],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            metavar="COLUMN",
            help="request_id (with a record column for requests of several records), or a captured feature.",
        ),
    ] = "request_id",
    job: JobOpt = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Join ground truth that arrived later to the model's capture (idempotent: the same file joins once)."""
    from raymlp.services.monitoring import join_labels

    joined = join_labels(model, input, key, label, job, address)
    if as_json:
        print_json(joined)
        return
    print(
        f"{joined['input_rows']:,} label rows: {joined['matched_rows']:,} matched "
        f"{joined['labelled_rows']:,} captured rows, {joined['unmatched_rows']:,} matched nothing"
    )
    print(f"labels: {joined['written']}")
    if joined["unmatched"]:
        print(f"unmatched rows kept in {joined['unmatched']}")


@monitor_app.command("replay")
def replay(
    model: ModelArg,
    window: WindowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    job: JobOpt = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run captured requests through batch predict and compare every answer with what the endpoint gave (exit 1 on a difference)."""
    from raymlp.services.monitoring import replay as run_replay

    result = run_replay(model, window, since, until, job, address)
    if as_json:
        print_json(result)
    else:
        for version in result["versions"]:
            print(
                f"{result['model']}:{version['version']}: {version['rows']:,} captured rows replayed, "
                f"{version['mismatches']} differ (largest probability difference {number(version['max_difference'])})"
            )
            for example in version["examples"]:
                print(f"  {example}")
    if any(version["mismatches"] for version in result["versions"]):
        raise typer.Exit(1)
