"""The cluster files in clusters/ and their validator (raymlp.launch.clusters); no Ray is started."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from raymlp.errors import UsageError
from raymlp.launch.clusters import ClusterFile, ClusterFileError, validate_cluster_file

CLUSTERS = Path(__file__).resolve().parents[2] / "clusters"
CLUSTER_FILES = sorted(CLUSTERS.rglob("*.yaml"))
#: What a user exports before `raymlp cluster up` of a cloud cluster file (no shared disk).
SETTINGS = {
    "RAYMLP_STORAGE_ROOT": "s3://team-bucket/raymlp",
    "RAYMLP_CATALOG": "postgresql://raymlp@db:5432/raymlp",
    "RAYMLP_TRACKING": "postgresql://raymlp@db:5432/mlflow",
}


@pytest.fixture(autouse=True)
def bucket_settings(monkeypatch) -> None:
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    "name", ["aws.yaml", "gcp.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/rayservice.yaml"]
)
def test_cloud_clusters_take_the_bucket_from_the_environment_and_share_no_disk(name: str, monkeypatch) -> None:
    path = CLUSTERS / name
    text = path.read_text()
    assert "persistentVolumeClaim" not in text and "/mnt/raymlp" not in text and "RAYMLP_HOME" not in text
    checked = validate_cluster_file(path)
    for variable, value in SETTINGS.items():
        assert "${" + variable + "}" in text
        assert value in checked.text and "${" + variable + "}" not in checked.text
    monkeypatch.delenv("RAYMLP_STORAGE_ROOT")
    with pytest.raises(ClusterFileError) as refused:
        validate_cluster_file(path)
    line = _line_of(text, "${RAYMLP_STORAGE_ROOT}")
    assert str(refused.value).startswith(
        f"{path}:{line}: environment variable RAYMLP_STORAGE_ROOT is not set; export it before `raymlp cluster up`"
    )


def test_there_are_cluster_files() -> None:
    assert CLUSTER_FILES, f"no *.yaml under {CLUSTERS}"
    names = {path.relative_to(CLUSTERS).as_posix() for path in CLUSTER_FILES}
    assert {
        "aws.yaml",
        "gcp.yaml",
        "onprem.yaml",
        "local-autoscaling.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob.yaml",
        "kuberay/rayservice.yaml",
    } <= names


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda path: path.relative_to(CLUSTERS).as_posix())
def test_every_cluster_file_passes(path: Path) -> None:
    checked = validate_cluster_file(path)
    assert isinstance(checked, ClusterFile)
    assert checked.name
    if checked.kind == "launcher":
        assert checked.provider
    else:
        assert checked.provider is None


def test_what_the_files_are() -> None:
    assert validate_cluster_file(CLUSTERS / "aws.yaml") == ClusterFile(
        CLUSTERS / "aws.yaml", "launcher", "raymlp", "aws"
    )
    assert validate_cluster_file(CLUSTERS / "onprem.yaml").provider == "local"
    assert validate_cluster_file(CLUSTERS / "local-autoscaling.yaml").provider == "fake_multinode"
    assert validate_cluster_file(CLUSTERS / "kuberay" / "raycluster.yaml").kind == "RayCluster"
    assert validate_cluster_file(CLUSTERS / "kuberay" / "rayjob.yaml").kind == "RayJob"
    assert validate_cluster_file(CLUSTERS / "kuberay" / "rayservice.yaml").kind == "RayService"


# --- broken copies ------------------------------------------------------------------------------


def _line_of(text: str, fragment: str) -> int:
    """1-based line of the first line holding `fragment`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if fragment in line:
            return number
    raise AssertionError(f"{fragment!r} not in the text")


def _problems(tmp_path: Path, name: str, text: str) -> list[str]:
    broken = tmp_path / name
    broken.write_text(text)
    with pytest.raises(ClusterFileError) as raised:
        validate_cluster_file(broken)
    assert isinstance(raised.value, UsageError) and raised.value.exit_code == 2
    lines = str(raised.value).splitlines()
    assert re.fullmatch(r"\d+ problems? in the cluster file", lines[-1])
    return [line.removeprefix(f"{broken}:") for line in lines[:-1]]


def test_launcher_without_provider(tmp_path: Path) -> None:
    text = (CLUSTERS / "aws.yaml").read_text()
    broken = re.sub(r"\nprovider:\n(?:  .*\n)+", "\n", text)
    assert "provider:" not in broken
    problems = _problems(tmp_path, "aws.yaml", broken)
    first_key = _line_of(broken, "cluster_name:")
    assert problems == [
        f"{first_key}: provider: required key is missing (where the machines come from: provider.type "
        "is one of aws, gcp, azure, local, kuberay, vsphere, aliyun, readonly, spark, fake_multinode, "
        "fake_multinode_docker, external)"
    ]


def test_launcher_wrong_type(tmp_path: Path) -> None:
    text = (CLUSTERS / "local-autoscaling.yaml").read_text()
    broken = text.replace("max_workers: 3\nupscaling_speed", 'max_workers: "three"\nupscaling_speed')
    problems = _problems(tmp_path, "local.yaml", broken)
    assert problems == [f"{_line_of(broken, 'three')}: max_workers: must be an integer, got 'three'"]


def test_launcher_unknown_head_node_type_lists_the_types(tmp_path: Path) -> None:
    text = (CLUSTERS / "aws.yaml").read_text()
    broken = text.replace("head_node_type: ray.head.cpu", "head_node_type: ray.head.nope")
    problems = _problems(tmp_path, "aws.yaml", broken)
    assert problems == [
        f"{_line_of(broken, 'ray.head.nope')}: head_node_type: unknown node type 'ray.head.nope'; "
        "available_node_types defines: ray.head.cpu, ray.worker.cpu, ray.worker.gpu"
    ]


def test_launcher_every_problem_in_file_order(tmp_path: Path) -> None:
    text = (CLUSTERS / "gcp.yaml").read_text()
    broken = (
        text.replace("idle_timeout_minutes: 10", "idle_timeout_minutes: 10\nworkers_max: 3")
        .replace("min_workers: 0\n    max_workers: 4", "min_workers: 5\n    max_workers: 4")
        .replace("resources: {CPU: 16}", "resources: {CPU: 16}\n    max_worker: 2")
    )
    problems = _problems(tmp_path, "gcp.yaml", broken)
    assert [problem.split(": ")[0:2] for problem in problems] == [
        [str(_line_of(broken, "workers_max")), "workers_max"],
        [str(_line_of(broken, "max_worker: 2")), "available_node_types.ray_worker_cpu.max_worker"],
        [str(_line_of(broken, "min_workers: 5")), "available_node_types.ray_worker_gpu.min_workers"],
    ]
    assert "did you mean 'max_workers'?" in problems[1]
    assert "5 is more than max_workers (4)" in problems[2]


def test_on_prem_needs_its_machines(tmp_path: Path) -> None:
    text = (CLUSTERS / "onprem.yaml").read_text()
    broken = text.replace("  worker_ips: [10.0.0.11, 10.0.0.12, 10.0.0.13]\n", "")
    problems = _problems(tmp_path, "onprem.yaml", broken)
    assert problems == [
        f"{_line_of(broken, 'provider:')}: provider.worker_ips: required with provider.type local "
        "(or give provider.coordinator_address)"
    ]


def test_raycluster_min_replicas_above_max(tmp_path: Path) -> None:
    text = (CLUSTERS / "kuberay" / "raycluster.yaml").read_text()
    broken = text.replace("minReplicas: 0\n      maxReplicas: 4", "minReplicas: 5\n      maxReplicas: 4")
    problems = _problems(tmp_path, "raycluster.yaml", broken)
    assert problems == [
        f"{_line_of(broken, 'minReplicas: 5')}: spec.workerGroupSpecs.1.minReplicas: 5 is more than maxReplicas (4)"
    ]


def test_raycluster_wrong_api_version(tmp_path: Path) -> None:
    text = (CLUSTERS / "kuberay" / "raycluster.yaml").read_text()
    broken = text.replace("apiVersion: ray.io/v1\n", "apiVersion: ray.io/v1alpha1\n")
    problems = _problems(tmp_path, "raycluster.yaml", broken)
    assert problems == [f"{_line_of(broken, 'ray.io/v1alpha1')}: apiVersion: must be ray.io/v1, got 'ray.io/v1alpha1'"]


def test_raycluster_typo_and_unquoted_start_param(tmp_path: Path) -> None:
    text = (CLUSTERS / "kuberay" / "raycluster.yaml").read_text()
    broken = text.replace("maxReplicas: 8", "maxReplica: 8").replace('disable-usage-stats: "true"', "num-cpus: 0")
    problems = _problems(tmp_path, "raycluster.yaml", broken)
    assert problems[0].startswith(
        f"{_line_of(broken, 'num-cpus')}: spec.headGroupSpec.rayStartParams.num-cpus: must be a string"
    )
    assert problems[1].startswith(
        f"{_line_of(broken, 'maxReplica: 8')}: spec.workerGroupSpecs.0.maxReplica: "
        "unknown key; did you mean 'maxReplicas'?"
    )


def test_rayservice_old_serve_key_inside_serve_config(tmp_path: Path) -> None:
    text = (CLUSTERS / "kuberay" / "rayservice.yaml").read_text()
    broken = text.replace("max_ongoing_requests: 32", "max_concurrent_queries: 32")
    problems = _problems(tmp_path, "rayservice.yaml", broken)
    assert problems == [
        f"{_line_of(broken, 'max_concurrent_queries')}: "
        "spec.serveConfigV2.applications.0.deployments.0.max_concurrent_queries: "
        "Ray 2.60's Serve ignores this key: it is max_ongoing_requests now"
    ]


def test_rayjob_needs_a_cluster(tmp_path: Path) -> None:
    text = (CLUSTERS / "kuberay" / "rayjob.yaml").read_text()
    broken = text[: text.index("  rayClusterSpec:")]
    problems = _problems(tmp_path, "rayjob.yaml", broken)
    assert problems == [
        f"{_line_of(broken, 'spec:')}: spec: needs rayClusterSpec (a cluster made for this job) or "
        "clusterSelector (labels of a running RayCluster, e.g. ray.io/cluster: NAME)"
    ]


def test_each_document_of_a_manifest_file_is_checked(tmp_path: Path) -> None:
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: raymlp-ray-token}\nstringData: {auth_token: x}\n---\n"
    text = secret + (CLUSTERS / "kuberay" / "raycluster.yaml").read_text()
    checked = validate_cluster_file(_write(tmp_path / "both.yaml", text))
    assert (checked.kind, checked.name) == ("RayCluster", "raymlp")
    broken = text.replace("kind: Secret\nmetadata: {name: raymlp-ray-token}", "kind: Secret\nmetadata: {}")
    broken = broken.replace("kind: RayCluster", "kind: RayClustr")
    problems = _problems(tmp_path, "both.yaml", broken)
    assert problems == [
        "3: metadata.name: required key is missing",
        f"{_line_of(broken, 'RayClustr')}: kind: unknown Ray resource 'RayClustr'; allowed: RayCluster, RayJob, RayService",
    ]


def test_files_that_are_not_cluster_files(tmp_path: Path) -> None:
    assert _problems(tmp_path, "empty.yaml", "# nothing\n")[0].startswith("1: the file is empty")
    assert _problems(tmp_path, "bad.yaml", "cluster_name: [x\n")[0].startswith("2: invalid YAML")
    assert _problems(tmp_path, "dup.yaml", "cluster_name: a\ncluster_name: b\nprovider: {type: aws, region: x}\n") == [
        "2: cluster_name: duplicate key (first given at line 1)"
    ]
    with pytest.raises(ClusterFileError, match="no such cluster file"):
        validate_cluster_file(tmp_path / "missing.yaml")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
