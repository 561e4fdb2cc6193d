"""`raymlp submit`, `raymlp jobs`, `raymlp cluster`: work sent to Ray clusters, and the clusters."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import JobArg, JsonOpt, SetOpt, app
from .output import print_json, print_table
from .typer_app import App

jobs_app = App(help="Ray jobs on a cluster: list, status, logs, stop.", no_args_is_help=True)
cluster_app = App(help="Cluster files (clusters/): validate, up, down.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(cluster_app, name="cluster")

ClusterAddressOpt = Annotated[
    str | None, typer.Option("--address", help="The cluster's dashboard, http://HEAD:8265 (default: RAY_ADDRESS).")
]
SubmissionArg = Annotated[str, typer.Argument(help="Submission id (raymlp jobs list shows them).", show_default=False)]
ClusterFileArg = Annotated[
    Path, typer.Argument(help="A file in clusters/: launcher YAML or KubeRay manifest.", show_default=False)
]


@app.command()
def submit(
    job: JobArg,
    address: ClusterAddressOpt = None,
    env: Annotated[
        str | None, typer.Option("--env", help="Runtime environment: a name in envs/ (default: the job file's `env`).")
    ] = None,
    overrides: SetOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the job's logs until it ends; exit 1 unless it succeeded.")
    ] = False,
    env_vars: Annotated[
        list[str] | None,
        typer.Option(
            "--env-var",
            metavar="NAME=VALUE",
            help="Environment variable for the job, e.g. RAYMLP_HOME=/mnt/shared/raymlp (repeatable).",
        ),
    ] = None,
    excludes: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude",
            metavar="PATTERN",
            help="Leave files out of the upload (gitignore syntax; repeatable; also read from .rayignore).",
        ),
    ] = None,
    includes: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            metavar="PATH",
            help="Upload this file or folder even though .gitignore, .rayignore or an exclude leaves it out, e.g. data/wine.csv (repeatable; within Ray's upload limit).",
        ),
    ] = None,
    submission_id: Annotated[
        str | None,
        typer.Option("--submission-id", metavar="ID", help="Id for the job (default: raymlp-NAME-TIME-XXXX)."),
    ] = None,
    cpus: Annotated[
        float | None, typer.Option("--entrypoint-num-cpus", help="CPUs reserved for the job's driver.")
    ] = None,
    gpus: Annotated[
        float | None, typer.Option("--entrypoint-num-gpus", help="GPUs reserved for the job's driver.")
    ] = None,
    memory: Annotated[
        int | None, typer.Option("--entrypoint-memory", help="Memory (bytes) reserved for the job's driver.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a job file on a Ray cluster: `raymlp run JOB` as a Ray job, the project folder as its working_dir.

    The job file is checked here first, and the folder measured against Ray's upload limit, so a
    mistake costs no upload. Prints the submission id and the job's dashboard page.
    """
    from raymlp.launch.submit import SubmitRequest, describe_failure, exit_code
    from raymlp.launch.submit import follow as follow_job
    from raymlp.launch.submit import submit as submit_job

    request = SubmitRequest(
        job_file=job,
        address=address,
        env=env,
        overrides=list(overrides or []),
        env_vars=_pairs(env_vars, "--env-var"),
        excludes=list(excludes or []),
        includes=list(includes or []),
        submission_id=submission_id,
        entrypoint_num_cpus=cpus,
        entrypoint_num_gpus=gpus,
        entrypoint_memory=memory,
    )
    submission, cluster = submit_job(request)
    if as_json and not follow:
        print_json(
            {
                "submission_id": submission.submission_id,
                "url": submission.job_url,
                "entrypoint": submission.entrypoint,
                "files": submission.uploaded_files,
                "bytes": submission.uploaded_bytes,
                "carried": list(submission.carried),
            }
        )
        return
    shown = ", ".join(submission.carried[:3]) + (
        f" and {len(submission.carried) - 3} more" if len(submission.carried) > 3 else ""
    )
    carried = f"; --include carried {shown}" if submission.carried else ""
    print(
        f"submitted {submission.submission_id} ({submission.uploaded_files} files, "
        f"{submission.uploaded_bytes / 1024:.0f} KiB{carried}): {submission.entrypoint}",
        file=sys.stderr,
    )
    from raymlp.runtime.tokens import dashboard_line

    print(f"dashboard: {dashboard_line(submission.job_url, cluster.token, cluster.requires_token)}", file=sys.stderr)
    if not follow:
        print(
            f"follow it with: raymlp jobs logs {submission.submission_id} --follow --address "
            f"{submission.dashboard_url}",
            file=sys.stderr,
        )
        typer.echo(submission.submission_id)
        return
    info = _following(cluster, submission.submission_id, follow_job)
    print(f"{submission.submission_id}: {info.status}", file=sys.stderr)
    if exit_code(info):
        from raymlp.errors import WorkFailed

        raise WorkFailed(describe_failure(info))


def _following(cluster, submission_id: str, follow_job):
    """Stream a job's logs; Ctrl-C stops watching, not the job."""
    try:
        return follow_job(cluster, submission_id)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; {submission_id} goes on running (raymlp jobs stop {submission_id} "
            f"--address {cluster.dashboard_url} ends it)",
            file=sys.stderr,
        )
        raise typer.Exit(130) from None


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    from raymlp.errors import UsageError

    pairs: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{option} {item!r}: expected NAME=VALUE")
        pairs[name.strip()] = value
    return pairs


@jobs_app.command("list")
def jobs_list(address: ClusterAddressOpt = None, as_json: JsonOpt = False) -> None:
    """The cluster's jobs, newest first."""
    from raymlp.launch.client import connect
    from raymlp.launch.submit import list_jobs, summary

    cluster = connect(address)
    rows = [summary(info, cluster.dashboard_url) for info in list_jobs(cluster)]
    if as_json:
        print_json(rows)
        return
    print_table(
        f"jobs on {cluster.dashboard_url}",
        ["submission id", "status", "raymlp job", "started", "seconds"],
        [
            [
                row["submission_id"] or row["job_id"],
                row["status"],
                row["raymlp_job"] or "",
                row["started"] or "",
                row["seconds"] if row["seconds"] is not None else "",
            ]
            for row in rows
        ],
    )


@jobs_app.command("status")
def jobs_status(submission: SubmissionArg, address: ClusterAddressOpt = None, as_json: JsonOpt = False) -> None:
    """A job's status, timing and message; exit 1 when it failed or was stopped."""
    from raymlp.launch.client import connect
    from raymlp.launch.submit import FINISHED, details, summary

    cluster = connect(address)
    row = summary(details(cluster, submission), cluster.dashboard_url)
    if as_json:
        print_json(row)
    else:
        for key, value in row.items():
            if value is not None:
                typer.echo(f"{key}: {value}")
    if row["status"] in FINISHED and row["status"] != "SUCCEEDED":
        raise typer.Exit(1)


@jobs_app.command("logs")
def jobs_logs(
    submission: SubmissionArg,
    address: ClusterAddressOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends; exit 1 unless it succeeded.")
    ] = False,
) -> None:
    """A job's driver output."""
    from raymlp.launch.client import connect
    from raymlp.launch.submit import describe_failure, exit_code, logs
    from raymlp.launch.submit import follow as follow_job

    cluster = connect(address)
    if not follow:
        sys.stdout.write(logs(cluster, submission))
        return
    info = _following(cluster, submission, follow_job)
    if exit_code(info):
        from raymlp.errors import WorkFailed

        raise WorkFailed(describe_failure(info))


@jobs_app.command("stop")
def jobs_stop(submission: SubmissionArg, address: ClusterAddressOpt = None) -> None:
    """Stop a running job (Ray ends its driver and the tasks and actors it started)."""
    from raymlp.launch.client import connect
    from raymlp.launch.submit import stop

    cluster = connect(address)
    info = stop(cluster, submission)
    typer.echo(f"{submission}: {info.status}")


LocalOpt = Annotated[bool, typer.Option("--local", help="Run the file's fake_multinode cluster on this machine.")]


@cluster_app.command("validate")
def cluster_validate(files: Annotated[list[Path], typer.Argument(help="Cluster files.", show_default=False)]) -> None:
    """Check launcher YAMLs against Ray's schema (ray/autoscaler/ray-schema.json) and KubeRay manifests'
    structure; every problem as FILE:LINE: key: message (exit 2)."""
    from raymlp.errors import UsageError
    from raymlp.launch.clusters import validate_cluster_file

    problems: list[str] = []
    for file in files:
        try:
            checked = validate_cluster_file(file)
        except UsageError as error:
            problems.append(str(error))
            continue
        typer.echo(f"{file}: ok ({_describe(checked)})")
    if problems:
        raise UsageError("\n".join(problems))


def _describe(checked) -> str:
    if checked.kind == "launcher":
        return f"cluster {checked.name}, provider {checked.provider}"
    return f"{checked.kind} {checked.name}"


@cluster_app.command("up")
def cluster_up(
    file: ClusterFileArg,
    local: LocalOpt = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (ray up -y).")] = False,
    port: Annotated[
        int | None, typer.Option("--port", help="--local: the head's GCS port (default: a free one).")
    ] = None,
    dashboard_port: Annotated[
        int | None, typer.Option("--dashboard-port", help="--local: dashboard port (default 8265, else a free one).")
    ] = None,
) -> None:
    """Start a cluster: `ray up FILE` for a launcher YAML, `kubectl apply -f FILE` for a KubeRay
    manifest, or with --local a fake_multinode cluster on this machine."""
    if local:
        from raymlp.launch import local_cluster

        cluster = local_cluster.up(file, port=port, dashboard_port=dashboard_port)
        from raymlp.runtime.tokens import Token, dashboard_line

        token = Token("", cluster.token_source)  # where the token is; its value is never printed
        typer.echo(f"cluster {cluster.name} is up: dashboard {dashboard_line(cluster.dashboard_url, token, True)}")
        typer.echo(f"  submit:  raymlp submit JOB.yaml --address {cluster.dashboard_url}")
        typer.echo(
            f"  workers: join when work needs them, leave when idle (see {file}); token from {cluster.token_source}"
        )
        typer.echo(f"  stop:    raymlp cluster down --local {file}   (log: {cluster.log})")
        return
    _wrap(file, "up", yes)


@cluster_app.command("down")
def cluster_down(
    file: ClusterFileArg,
    local: LocalOpt = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (ray down -y).")] = False,
) -> None:
    """Stop a cluster started with `raymlp cluster up` (or `ray up`, or `kubectl apply`)."""
    if local:
        from raymlp.launch import local_cluster

        stopped = local_cluster.down(file)
        typer.echo(f"cluster {stopped.name} stopped" if stopped else f"no local cluster of {file} is running")
        return
    _wrap(file, "down", yes)


def _wrap(file: Path, verb: str, yes: bool) -> None:
    import shutil
    import subprocess
    import tempfile

    from raymlp.errors import UsageError
    from raymlp.launch.clusters import validate_cluster_file
    from raymlp.launch.local_cluster import _ray_cli

    checked = validate_cluster_file(file)
    # The file with its ${RAYMLP_*} settings filled in, beside the original (the same name: ray keys
    # a cluster by its cluster_name, kubectl by the manifests' names, not by the file).
    expanded_folder = Path(tempfile.mkdtemp(prefix="raymlp-cluster-"))
    expanded = expanded_folder / Path(file).name
    expanded.write_text(checked.text)
    if checked.kind == "launcher":
        if checked.provider == "fake_multinode":
            raise UsageError(
                f"{file}: a fake_multinode cluster runs on this machine: raymlp cluster {verb} --local {file}"
            )
        command = [_ray_cli(), verb, str(expanded), *(["-y"] if yes else [])]
    else:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise UsageError(
                f"{file} is a KubeRay {checked.kind}: it needs kubectl on PATH (and the KubeRay operator "
                "in the cluster)"
            )
        command = [kubectl, "apply" if verb == "up" else "delete", "-f", str(expanded)]
    print("+ " + " ".join(command).replace(str(expanded), str(file)), file=sys.stderr)
    try:
        code = subprocess.call(command)
    finally:
        shutil.rmtree(expanded_folder, ignore_errors=True)
    if code:
        raise typer.Exit(1)
