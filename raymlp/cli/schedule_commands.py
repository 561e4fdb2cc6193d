"""`raymlp scheduler`, `raymlp schedule`, `raymlp trigger`, `raymlp pipelines`: jobs that run by themselves."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import app
from .options import JobArg, JobOpt, JsonOpt
from .output import print_json, print_table, timestamp
from .typer_app import App

scheduler_app = App(
    help="The scheduler on the cluster (a detached Ray actor; its state is in the catalog): start, stop, status.",
    no_args_is_help=True,
)
schedule_app = App(
    help="Scheduled jobs: add a job file's triggers, list, history, pause, resume, remove, export.",
    no_args_is_help=True,
)
app.add_typer(scheduler_app, name="scheduler")
app.add_typer(schedule_app, name="schedule")

NameArg = Annotated[str, typer.Argument(metavar="JOB", help="A scheduled job's name.", show_default=False)]
SchedulerNameOpt = Annotated[
    str, typer.Option("--name", metavar="NAME", help="The scheduler's name (several may share a catalog).")
]
ClusterOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="The cluster: RAY_ADDRESS form, or its dashboard http://HEAD:8265 (default: RAY_ADDRESS; with "
        "neither, an embedded Ray and the scheduler in the foreground until Ctrl-C).",
    ),
]


def _catalog(job: Path | None) -> Any:
    from raymlp.services.datasets import catalog_for

    return catalog_for(job)


@scheduler_app.command("start")
def scheduler_start(
    address: ClusterOpt = None,
    catalog: Annotated[
        str | None,
        typer.Option(
            "--catalog", metavar="URL", help="The catalog it serves (default: the job's, else RAYMLP_HOME's)."
        ),
    ] = None,
    name: SchedulerNameOpt = "default",
    tick: Annotated[
        float | None, typer.Option("--tick", metavar="SECONDS", min=0.05, help="Seconds between looks (default 1).")
    ] = None,
    job: JobOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a scheduler on the cluster; it runs the jobs added with `raymlp schedule add` when their triggers fire."""
    from raymlp.scheduler.actor import start
    from raymlp.services.jobs import storage_for

    catalog_url = catalog or storage_for(job).catalog_url

    def started(status: dict[str, Any]) -> None:
        print(
            f"scheduler {status['name']} runs here for {status['catalog']} (Ctrl-C stops it); "
            f"Ray jobs go to {status['dashboard']}",
            file=sys.stderr,
        )

    status = start(catalog_url, name, address, tick, on_started=started)
    if as_json:
        print_json(status)
    elif not status.get("foreground"):
        again = " (already running)" if status.get("already_running") else ""
        typer.echo(f"scheduler {status['name']} runs on the cluster{again}: catalog {status['catalog']}")


@scheduler_app.command("stop")
def scheduler_stop(address: ClusterOpt = None, name: SchedulerNameOpt = "default") -> None:
    """Stop a scheduler (runs it started go on; another scheduler, or this one started again, follows them)."""
    from raymlp.runtime import ray_runtime
    from raymlp.scheduler.actor import stop_actor

    with ray_runtime(_joined(address)):
        stopped = stop_actor(name)
    if not stopped:
        from raymlp.errors import UsageError

        raise UsageError(f"no scheduler named {name!r} runs on this cluster (raymlp scheduler status lists them)")
    typer.echo(f"scheduler {name} stopped")


@scheduler_app.command("status")
def scheduler_status(address: ClusterOpt = None, as_json: JsonOpt = False) -> None:
    """The schedulers running on the cluster: name, catalog, host, looks, errors."""
    from raymlp.runtime import ray_runtime
    from raymlp.scheduler.actor import statuses

    with ray_runtime(_joined(address)):
        found = statuses()
    if as_json:
        print_json(found)
        return
    print_table(
        "Schedulers",
        ["name", "catalog", "host", "pid", "started", "looks", "errors"],
        [
            [
                s["name"],
                s.get("catalog"),
                s.get("host"),
                s.get("pid"),
                s.get("started_at"),
                s.get("ticks"),
                s.get("errors"),
            ]
            for s in found
        ],
    )


def _joined(address: str | None) -> str:
    from raymlp import settings
    from raymlp.errors import UsageError

    chosen = address or settings.ray_address()
    if not chosen or chosen.startswith(("http://", "https://")):
        raise UsageError(
            "a scheduler runs on a cluster: give --address (RAY_ADDRESS form, e.g. 10.0.0.5:6379 or auto) or set "
            "RAY_ADDRESS; from a laptop, run this command as a Ray job (ray job submit -- raymlp scheduler ...)"
        )
    return chosen


@schedule_app.command("add")
def schedule_add(
    job_file: JobArg,
    env: Annotated[
        str | None, typer.Option("--env", help="Runtime environment: a name in envs/ (default: the job file's `env`).")
    ] = None,
    excludes: Annotated[
        list[str] | None, typer.Option("--exclude", metavar="PATTERN", help="Leave files out of the snapshot.")
    ] = None,
    includes: Annotated[
        list[str] | None, typer.Option("--include", metavar="PATH", help="Carry a file .gitignore leaves out.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Schedule a job: its project folder is kept (as `raymlp submit` uploads it) and its triggers recorded."""
    from raymlp.scheduler.pipelines import add

    added = add(job_file, env=env, excludes=excludes or [], includes=includes or [])
    if as_json:
        print_json(
            {
                "job": added.pipeline.name,
                "file": added.pipeline.job_file,
                "project": added.pipeline.project,
                "catalog": added.catalog_url,
                "triggers": [trigger.definition for trigger in added.triggers],
            }
        )
        return
    triggers = ", ".join(trigger.name for trigger in added.triggers) or "none (raymlp trigger runs it)"
    typer.echo(
        f"scheduled {added.pipeline.name} ({added.pipeline.job_file}; project {added.uploaded_bytes} bytes at "
        f"{added.pipeline.project}); triggers: {triggers}; catalog {added.catalog_url}"
    )


@schedule_app.command("list")
def schedule_list(job: JobOpt = None, as_json: JsonOpt = False) -> None:
    """Scheduled jobs and their triggers: kind, last firing, next firing."""
    from raymlp.scheduler.engine import describe_trigger, next_firing, utcnow

    with _catalog(job) as catalog:
        pipelines = {pipeline.name: pipeline for pipeline in catalog.list_pipelines()}
        triggers = catalog.list_triggers()
    now = utcnow()
    rows = []
    for trigger in triggers:
        pipeline = pipelines[trigger.pipeline]
        upcoming = None if pipeline.paused else next_firing(pipeline, trigger, now)
        rows.append(
            {
                "job": pipeline.name,
                "trigger": trigger.name,
                "when": describe_trigger(trigger.definition),
                "paused": pipeline.paused,
                "last_due": trigger.last_due.isoformat() if trigger.last_due else None,
                "next": upcoming.isoformat() if upcoming else None,
                "concurrency": pipeline.settings.get("concurrency"),
            }
        )
    for name, pipeline in pipelines.items():
        if not any(row["job"] == name for row in rows):
            rows.append(
                {
                    "job": name,
                    "trigger": None,
                    "when": "on request",
                    "paused": pipeline.paused,
                    "last_due": None,
                    "next": None,
                    "concurrency": pipeline.settings.get("concurrency"),
                }
            )
    if as_json:
        print_json(rows)
        return
    print_table(
        "Schedules",
        ["job", "trigger", "when", "state", "last firing", "next firing", "concurrency"],
        [
            [
                row["job"],
                row["trigger"],
                row["when"],
                "paused" if row["paused"] else "active",
                _when(row["last_due"]),
                _when(row["next"]),
                row["concurrency"],
            ]
            for row in rows
        ],
    )


def _when(iso: str | None) -> str | None:
    from datetime import datetime

    return timestamp(datetime.fromisoformat(iso)) if iso else None


@schedule_app.command("history")
def schedule_history(
    name: Annotated[str | None, typer.Argument(metavar="[JOB]", help="Only this job's firings.")] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", min=1, help="Newest N firings.")] = 50,
    job: JobOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every firing, newest first: trigger, why, who, the Ray job, its result."""
    from raymlp.scheduler.pipelines import firing_json

    with _catalog(job) as catalog:
        firings = catalog.list_firings(name, limit=limit)
        if name is not None and not firings:
            catalog.get_pipeline(name)  # a name that is not there says which are
    if as_json:
        print_json([firing_json(firing) for firing in firings])
        return
    print_table(
        "Firings",
        ["id", "job", "trigger", "state", "created", "finished", "fired by", "ray job", "reason / error"],
        [
            [
                f.id,
                f.pipeline,
                f.trigger,
                f.state,
                timestamp(f.created_at),
                timestamp(f.finished_at),
                f.fired_by,
                f.submission_id,
                f.reason
                + (f" | {f.error.splitlines()[0]}" if f.error else "")
                + (f" | {f.details['outcome']}" if f.details.get("outcome") else ""),
            ]
            for f in firings
        ],
    )


def _set_paused(name: str, job: Path | None, paused: bool) -> None:
    with _catalog(job) as catalog:
        catalog.set_pipeline_paused(name, paused)
    typer.echo(f"{name} {'paused' if paused else 'resumed'}")


@schedule_app.command("pause")
def schedule_pause(name: NameArg, job: JobOpt = None) -> None:
    """No trigger of the job fires until it is resumed (a run under way goes on; `raymlp trigger` still runs it)."""
    _set_paused(name, job, True)


@schedule_app.command("resume")
def schedule_resume(name: NameArg, job: JobOpt = None) -> None:
    """The job's triggers fire again (times missed while paused count as the job's catch_up says)."""
    _set_paused(name, job, False)


@schedule_app.command("remove")
def schedule_remove(name: NameArg, job: JobOpt = None) -> None:
    """Take the job off the schedule (its history stays; a run under way goes on)."""
    with _catalog(job) as catalog:
        catalog.remove_pipeline(name)
    typer.echo(f"{name} removed from the schedule")


@schedule_app.command("export")
def schedule_export(
    job_file: JobArg,
    kuberay: Annotated[
        bool, typer.Option("--kuberay", help="A KubeRay RayCronJob manifest per clock trigger.")
    ] = False,
    airflow: Annotated[bool, typer.Option("--airflow", help="An Airflow DAG file.")] = False,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", metavar="FILE", help="Write here (default: standard output).")
    ] = None,
    cluster: Annotated[
        str, typer.Option("--cluster", metavar="NAME", help="The RayCluster the RayCronJob submits to.")
    ] = "raymlp",
    dashboard: Annotated[
        str,
        typer.Option("--dashboard", metavar="URL", help="The Ray dashboard the DAG submits to (or RAY_DASHBOARD_URL)."),
    ] = "http://raymlp-head-svc:8265",
    trigger: Annotated[
        str | None,
        typer.Option("--trigger", metavar="NAME", help="The clock trigger the DAG follows (default: the first)."),
    ] = None,
    working_dir: Annotated[
        str | None,
        typer.Option(
            "--working-dir",
            metavar="URL",
            help="A zip of the project the cluster can read (default: a snapshot put in the job's storage bucket).",
        ),
    ] = None,
) -> None:
    """The job's cron and interval triggers for a scheduler you already run: KubeRay's RayCronJob or Airflow."""
    from raymlp.errors import UsageError
    from raymlp.scheduler.exports import airflow_dag, exported_job, kuberay_manifests

    if kuberay == airflow:
        raise UsageError("schedule export: give one of --kuberay or --airflow")
    exported = exported_job(job_file, working_dir)
    text = kuberay_manifests(exported, cluster) if kuberay else airflow_dag(exported, dashboard, trigger)
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text)
    typer.echo(f"wrote {output}", err=True)


@app.command("trigger")
def trigger(
    name: Annotated[
        str, typer.Argument(metavar="JOB", help="A scheduled job's name, or its job file.", show_default=False)
    ],
    reason: Annotated[str | None, typer.Option("--reason", metavar="TEXT", help="Why: kept in the history.")] = None,
    job: JobOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a scheduled job now: a scheduler starts it at its next look, by the job's concurrency policy."""
    from raymlp.scheduler.pipelines import firing_json, request

    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        from raymlp.services.jobs import load

        job, name = job or Path(name), load(Path(name)).config.name
    with _catalog(job) as catalog:
        firing = request(catalog, name, reason)
    _wake_schedulers()
    if as_json:
        print_json(firing_json(firing))
        return
    typer.echo(f"firing {firing.id} of {firing.pipeline} recorded ({firing.reason}); a scheduler starts it")


def _wake_schedulers() -> None:
    """Ask the schedulers of the cluster this shell names to look now (none reachable: they look within a tick)."""
    from raymlp import settings

    address = settings.ray_address()
    if not address or address.startswith(("http://", "https://")):
        return
    try:
        from raymlp.runtime import ray_runtime
        from raymlp.scheduler.actor import wake_all

        with ray_runtime(address):
            wake_all()
    except Exception:  # waking is a courtesy: the firing is recorded
        pass


@app.command("pipelines")
def pipelines(job: JobOpt = None, as_json: JsonOpt = False) -> None:
    """Each scheduled job: state, last run and its result, next run, last error."""
    from raymlp.scheduler.pipelines import views

    with _catalog(job) as catalog:
        shown = views(catalog)
    if as_json:
        print_json([view.to_json() for view in shown])
        return
    print_table(
        "Pipelines",
        ["job", "state", "running", "last run", "result", "next run", "next trigger", "waiting", "last error"],
        [
            [
                view.name,
                view.state,
                view.running.submission_id if view.running else None,
                timestamp(view.last.finished_at) if view.last else None,
                view.last.state if view.last else None,
                timestamp(view.next_run) if view.next_run else None,
                view.next_trigger,
                view.pending,
                (view.last_error or "").strip().splitlines()[0] if view.last_error else None,
            ]
            for view in shown
        ],
    )
