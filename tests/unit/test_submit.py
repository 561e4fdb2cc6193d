"""`raymlp submit` checks what it can before anything leaves the laptop; `cluster up` refuses what it cannot start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOBODY = "http://127.0.0.1:9"  # nothing listens there: a test that reaches it fails on the connection


def _raymlp(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raymlp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "RAY_ADDRESS": "", **env})


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
    done = _raymlp("submit", "jobs/quickstart.yaml", "--address", NOBODY, cwd=project,
                   RAY_max_grpc_message_size=str(2 * 1024 * 1024))
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
    shared = _raymlp("submit", "jobs/quickstart.yaml", "--address", NOBODY, "--env-var", "RAYMLP_HOME=/mnt/shared",
                     cwd=project)
    assert shared.returncode == 1 and "warning" not in shared.stderr
    no_address = _raymlp("jobs", "list", cwd=project)
    assert no_address.returncode == 2 and "pass --address http://HEAD:8265" in no_address.stderr


def test_cluster_up_refuses_what_it_cannot_start(project):
    cloud = _raymlp("cluster", "up", "--local", str(REPO / "clusters" / "aws.yaml"), cwd=project)
    assert cloud.returncode == 2 and "provider.type: --local needs fake_multinode" in cloud.stderr
    local = _raymlp("cluster", "up", str(REPO / "clusters" / "local-autoscaling.yaml"), cwd=project)
    assert local.returncode == 2 and "raymlp cluster up --local" in local.stderr
    down = _raymlp("cluster", "down", "--local", str(REPO / "clusters" / "local-autoscaling.yaml"), cwd=project,
                   RAYMLP_HOME=str(project / ".raymlp"))
    assert down.returncode == 0 and "no local cluster" in down.stdout
