"""`raymlp submit` checks what it can before anything leaves the laptop; `cluster up` refuses what it cannot start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOBODY = "http://127.0.0.1:9"  # nothing listens there: a test that reaches it fails on the connection


def _raymlp(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raymlp", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": "", **env},
    )


@pytest.fixture
def project(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "quickstart.yaml").write_text((REPO / "jobs" / "quickstart.yaml").read_text())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "wine.csv").write_text("alcohol,target\n1.0,class_0\n")
    return tmp_path


def test_a_folder_over_rays_limit_fails_before_upload_naming_its_largest_files(project):
    (project / "data" / "images.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (project / "data" / "labels.bin").write_bytes(os.urandom(512 * 1024))
    # Ray's limit is its gRPC message size; set small here rather than writing 512 MiB
    done = _raymlp(
        "submit",
        "jobs/quickstart.yaml",
        "--address",
        NOBODY,
        cwd=project,
        RAY_max_grpc_message_size=str(2 * 1024 * 1024),
    )
    assert done.returncode == 2, done.stderr
    assert "over Ray's upload limit of 2.0 MiB; nothing was uploaded" in done.stderr
    largest = [line.split()[-1] for line in done.stderr.splitlines() if line.startswith("  ")][:2]
    assert largest == ["data/images.bin", "data/labels.bin"]
    assert ".rayignore" in done.stderr and "cannot reach" not in done.stderr


def test_ignored_and_excluded_files_do_not_count_and_the_job_fits(project):
    from raymlp.launch.workdir import check_fits, plan_working_dir

    for folder in (".venv", ".raymlp", ".git", "scratch"):
        (project / folder).mkdir()
        (project / folder / "big.bin").write_bytes(os.urandom(64 * 1024))
    (project / "run.log").write_text("noise")
    (project / ".rayignore").write_text("*.log\n")
    planned = plan_working_dir(project, ["scratch/"])
    assert {path for path, _ in planned.files} == {"jobs/quickstart.yaml", "data/wine.csv", ".rayignore"}
    check_fits(planned)
    assert planned.runtime_env()["working_dir"] == str(project.resolve())


def test_a_bad_job_file_is_refused_before_contacting_the_cluster(project):
    (project / "jobs" / "broken.yaml").write_text("version: 1\nname: x\ndata: {source: {format: csv}}\ntrain: 3\n")
    done = _raymlp("submit", "jobs/broken.yaml", "--address", NOBODY, cwd=project)
    assert done.returncode == 2
    assert "jobs/broken.yaml:4: train:" in done.stderr and "cannot reach" not in done.stderr


def test_a_job_file_outside_the_project_is_refused(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "job.yaml"
    elsewhere.write_text((project / "jobs" / "quickstart.yaml").read_text())
    done = _raymlp("submit", str(elsewhere), "--address", NOBODY, cwd=project)
    assert done.returncode == 2 and "must be inside the project folder" in done.stderr


def test_an_unreachable_cluster_is_one_clear_line(project):
    done = _raymlp("submit", "jobs/quickstart.yaml", "--address", NOBODY, cwd=project)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: cannot reach the Ray dashboard at {NOBODY}")
    # the quickstart keeps its state under ./.raymlp: on a cluster that is inside the uploaded copy
    assert "warning: the job's storage (root, catalog, tracking) resolves inside its working_dir" in done.stderr
    shared = _raymlp(
        "submit", "jobs/quickstart.yaml", "--address", NOBODY, "--env-var", "RAYMLP_HOME=/mnt/shared", cwd=project
    )
    assert shared.returncode == 1 and "warning" not in shared.stderr
    no_address = _raymlp("jobs", "list", cwd=project)
    assert no_address.returncode == 2 and "pass --address http://HEAD:8265" in no_address.stderr


def test_cluster_up_refuses_what_it_cannot_start(project):
    bucket = {
        "RAYMLP_STORAGE_ROOT": "s3://team-bucket/raymlp",
        "RAYMLP_CATALOG": "postgresql://raymlp@db/raymlp",
        "RAYMLP_TRACKING": "postgresql://raymlp@db/mlflow",
    }
    cloud = _raymlp("cluster", "up", "--local", str(REPO / "clusters" / "aws.yaml"), cwd=project, **bucket)
    assert cloud.returncode == 2 and "provider.type: --local needs fake_multinode" in cloud.stderr
    local = _raymlp("cluster", "up", str(REPO / "clusters" / "local-autoscaling.yaml"), cwd=project)
    assert local.returncode == 2 and "raymlp cluster up --local" in local.stderr
    down = _raymlp(
        "cluster",
        "down",
        "--local",
        str(REPO / "clusters" / "local-autoscaling.yaml"),
        cwd=project,
        RAYMLP_HOME=str(project / ".raymlp"),
    )
    assert down.returncode == 0 and "no local cluster" in down.stdout


# --- what the job reads goes with it (issue 18, section 1) ---------------------------------------


@pytest.fixture
def ignored_data(project):
    """The project as `make demo` leaves it: data/ written, and .gitignore leaving it out."""
    (project / ".gitignore").write_text("/.raymlp/\n/data/\n__pycache__/\n")
    return project


def test_data_that_gitignore_leaves_out_is_refused_before_upload_naming_the_rule(ignored_data):
    done = _raymlp("submit", "jobs/quickstart.yaml", "--address", NOBODY, cwd=ignored_data)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "would be left out" in line]
    assert [line.removeprefix("error: ").split(":")[0] for line in lines] == ["data.source.path", "predict.input"]
    for line in lines:
        assert "data/wine.csv would be left out of the upload by .gitignore:2: /data/, so the job" in line
        assert "--include data/wine.csv" in line and "absolute path on storage every node sees" in line
        assert line.endswith("nothing was uploaded")
    assert "cannot reach" not in done.stderr and "submitted" not in done.stderr


def test_include_carries_an_ignored_file_in_the_package_ray_uploads(ignored_data, tmp_path_factory):
    import zipfile

    from raymlp.launch.workdir import plan_working_dir, write_package

    planned = plan_working_dir(ignored_data, includes=["data/wine.csv"])
    assert planned.carried == ("data/wine.csv",)
    package = write_package(planned, tmp_path_factory.mktemp("package"))
    assert sorted(zipfile.ZipFile(package).namelist()) == [".gitignore", "data/wine.csv", "jobs/quickstart.yaml"]
    assert planned.runtime_env(package) == {"working_dir": str(package)}
    # the same files make the same package, so Ray (content-addressed) uploads it once
    assert package.read_bytes() == write_package(planned, tmp_path_factory.mktemp("again")).read_bytes()

    elsewhere = _raymlp(
        "submit", "jobs/quickstart.yaml", "--address", NOBODY, "--include", "/etc/hostname", cwd=ignored_data
    )
    assert elsewhere.returncode == 2 and "--include /etc/hostname: not inside the project folder" in elsewhere.stderr


def test_other_rules_are_named_and_absolute_paths_only_warn(ignored_data, tmp_path_factory):
    from raymlp.config import load_job
    from raymlp.errors import UsageError
    from raymlp.launch.reads import check_reads
    from raymlp.launch.workdir import plan_working_dir

    shared = tmp_path_factory.mktemp("shared") / "wine.csv"
    shared.write_text((ignored_data / "data" / "wine.csv").read_text())
    (ignored_data / "inputs").mkdir()
    (ignored_data / "inputs" / "score.csv").write_text("alcohol\n1.0\n")
    job = ignored_data / "jobs" / "quickstart.yaml"
    loaded = load_job(job, [f"data.source.path={shared}", "predict.input=inputs/score.csv"])
    assert check_reads(loaded, plan_working_dir(ignored_data), []) == [
        f"warning: data.source.path: {shared} is outside the project folder, so it is not uploaded: it must exist "
        "at that path on the cluster's nodes (shared storage)"
    ]
    with pytest.raises(
        UsageError,
        match=r"predict.input: inputs/score.csv would be left out of the upload "
        r"by --exclude inputs/, so",
    ):
        check_reads(loaded, plan_working_dir(ignored_data, ["inputs/"]), ["inputs/"])
    (ignored_data / "inputs" / ".rayignore").write_text("# scratch\n*.csv\n")
    with pytest.raises(UsageError, match=r"upload by inputs/.rayignore:2: \*.csv, so"):
        check_reads(loaded, plan_working_dir(ignored_data), [])
    missing = load_job(job, ["predict.input=inputs/nothing-*.csv", f"data.source.path={shared}"])
    with pytest.raises(UsageError, match="predict.input: inputs/nothing-.*.csv matches nothing in the project folder"):
        check_reads(missing, plan_working_dir(ignored_data), [])


def test_a_job_run_in_an_uploaded_copy_says_which_rule_left_its_data_behind(ignored_data, tmp_path_factory):
    # What Ray unpacks on a node: the upload without data/ (the .gitignore goes with it), cwd _ray_pkg_<sha>.
    copy = tmp_path_factory.mktemp("runtime_resources") / "_ray_pkg_0123456789abcdef"
    shutil.copytree(ignored_data, copy, ignore=shutil.ignore_patterns("data"))
    done = _raymlp("run", "jobs/quickstart.yaml", cwd=copy, RAYMLP_HOME=str(copy / ".raymlp"))
    assert done.returncode == 2, done.stderr
    assert "'data/wine.csv' matches no csv files" in done.stderr
    assert (
        f"this job runs in an uploaded copy of the project folder ({copy}), and .gitignore:2: /data/ left "
        "'data/wine.csv' out of the upload: submit with `raymlp submit --include data/wine.csv`"
    ) in done.stderr


# --- the dashboard link says how to get in (issue 18, section 5) ---------------------------------


def test_the_dashboard_link_says_where_the_token_is_and_never_prints_it():
    from raymlp.runtime.tokens import Token, dashboard_line

    url = "http://127.0.0.1:8265"
    assert dashboard_line(url, Token("s3cr3t", "~/.ray/auth_token"), True) == (
        f"{url} (the dashboard asks for a token: `ray get-auth-token` prints it; it is in ~/.ray/auth_token)"
    )
    assert dashboard_line(url, Token("s3cr3t", "RAY_AUTH_TOKEN_PATH (/etc/ray/token)"), True).endswith(
        "it is in /etc/ray/token)"
    )
    assert dashboard_line(url, Token("s3cr3t", "RAY_AUTH_TOKEN"), True).endswith("it is in $RAY_AUTH_TOKEN)")
    assert "ray get-auth-token" in dashboard_line(url, None, True)
    assert dashboard_line(url, Token("s3cr3t", "RAY_AUTH_TOKEN"), False) == url
    assert dashboard_line(url, None, None) == url


def test_the_embedded_rays_dashboard_link_says_how_to_get_in(monkeypatch):
    from raymlp.runtime import RayRuntime

    embedded = RayRuntime(address=None, embedded=True, startup_seconds=1.0, dashboard_url="http://127.0.0.1:8265")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "s3cr3t")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # what Ray 2.60 sets in the process that starts a local cluster
    assert embedded.dashboard == (
        "http://127.0.0.1:8265 (the dashboard asks for a token: `ray get-auth-token` "
        "prints it; it is in $RAY_AUTH_TOKEN)"
    )
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert embedded.dashboard == "http://127.0.0.1:8265"
