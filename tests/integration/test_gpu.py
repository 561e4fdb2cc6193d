"""On a real CUDA GPU, with the session's real Ray, MLflow store and Serve:

- `raymlp train` of a torch job with `train.scaling.use_gpu: true` trains, and its forward passes
  ran on cuda in a Ray Train worker that Ray gave a GPU;
- an endpoint with `serve.gpus_per_replica: 1` answers HTTP /predict from a replica whose model is
  on cuda, with what the package predicts in plain Python on the CPU;
- `raymlp predict --gpu` scores on cuda and writes the same predictions as `raymlp predict` on CPUs;
- `train.mixed_precision: true` (float16 autocast, a GPU-only path) still trains to the bar.

raymlp records nothing about the device it trained or predicted on, so the model is a user's
builder (`train.model.type: custom`, a real raymlp feature) whose network notes, once per process
and device, where its forward pass ran: the device, Ray's GPU ids for that worker and the GPU's
name. The notes are files in a folder the job names; each step looks at the notes written while it ran.

Where torch sees no CUDA GPU (or with `RAYMLP_GPU_TEST_ON_CPU=1`) the same steps run on CPUs,
expecting the CPU everywhere and `predict --gpu` refused, so the paths are covered in CI too.
`RAYMLP_GPU_TEST_REPORT=FILE` writes what was seen (notes, metrics, differences) as JSON.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from .conftest import REPO, json_output, run_cli


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


ON_CPU = os.environ.get("RAYMLP_GPU_TEST_ON_CPU") == "1" or not _cuda_available()

pytestmark = [pytest.mark.integration, pytest.mark.gpu]

EXPECTED = "cpu" if ON_CPU else "cuda"
MODEL = "wine-gpu"
TIMEOUT = 300
REPORT: dict = {"expected_device": EXPECTED}

PROBE = '''
import json
import os
import time

import torch


class Probe(torch.nn.Module):
    """A small MLP that notes, once per process and device, where its forward pass ran."""

    def __init__(self, inner, notes):
        super().__init__()
        self.inner, self.notes, self.seen = inner, notes, set()

    def forward(self, x):
        if str(x.device) not in self.seen:
            self.seen.add(str(x.device))
            note(self.notes, x)
        return self.inner(x)


def note(folder, x):
    record = {"t": time.time(), "pid": os.getpid(), "device": str(x.device), "training": torch.is_grad_enabled()}
    try:
        import ray

        if ray.is_initialized():
            record["gpu_ids"] = [str(each) for each in ray.get_gpu_ids()]
            record["actor"] = ray.get_runtime_context().get_actor_name()
    except Exception as error:  # outside a Ray worker
        record["ray"] = repr(error)
    if x.is_cuda:
        record["cuda_name"] = torch.cuda.get_device_name(x.device)
    record["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    with open(os.path.join(folder, f"{os.getpid()}-{time.time_ns()}.json"), "w") as out:
        json.dump(record, out)


def build(input_shape, output_dim, params):
    width = params["width"]
    inner = torch.nn.Sequential(
        torch.nn.Linear(input_shape[0], width), torch.nn.ReLU(),
        torch.nn.Linear(width, width // 2), torch.nn.ReLU(),
        torch.nn.Linear(width // 2, output_dim),
    )
    return Probe(inner, params["notes"])
'''


def _notes(folder: Path, since: float, until: float) -> list[dict]:
    """Notes written by other processes (not this test's) between two moments."""
    found = []
    for path in folder.glob("*.json"):
        record = json.loads(path.read_text())
        if since <= record["t"] <= until and record["pid"] != os.getpid():
            found.append(record)
    return sorted(found, key=lambda record: record["t"])


def _on_expected_device(notes: list[dict]) -> list[dict]:
    """Notes of forward passes on the expected device, by a worker Ray gave a GPU (or none, on the CPU)."""
    return [
        note
        for note in notes
        if note["device"].startswith(EXPECTED) and (ON_CPU or (note.get("gpu_ids") and note.get("cuda_name")))
    ]


def _report(key: str, value) -> None:
    REPORT[key] = value
    target = os.environ.get("RAYMLP_GPU_TEST_REPORT")
    if target:
        Path(target).write_text(json.dumps(REPORT, indent=2, default=str))


def _wine_features() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    return load_wine(as_frame=True).frame.drop(columns="target")


def _assert_same_predictions(got: pd.DataFrame, expected: pd.DataFrame, what: str) -> float:
    """Identical classes, probabilities equal to 1e-5 (a GPU's float32 sums differ from a CPU's in
    the last bits); returns the largest difference."""
    assert len(got) == len(expected), what
    assert [str(v) for v in got["prediction"]] == [str(v) for v in expected["prediction"]], what
    columns = sorted(name for name in expected.columns if name.startswith("probability_"))
    assert columns and sorted(name for name in got.columns if name.startswith("probability_")) == columns, what
    difference = np.abs(got[columns].to_numpy(dtype=float) - expected[columns].to_numpy(dtype=float)).max()
    np.testing.assert_allclose(
        got[columns].to_numpy(dtype=float), expected[columns].to_numpy(dtype=float), rtol=0, atol=1e-5, err_msg=what
    )
    return float(difference)


@pytest.fixture(scope="module")
def project(tmp_path_factory, ray_4_cpus):
    """A project folder with the GPU job (wine, the probe network, one GPU worker), its dataset
    converted, and the environment that makes `raymlp` subprocesses join the session's Ray."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    _report("ray_cluster_gpus", gpus)
    if not ON_CPU:
        assert gpus >= 1, f"torch sees a GPU but the session's Ray has none: {ray.cluster_resources()}"
    folder = tmp_path_factory.mktemp("gpu")
    notes = folder / "notes"
    notes.mkdir()
    (folder / "nets.py").write_text(PROBE)
    job = (REPO / "jobs" / "wine-torch.yaml").read_text()
    replaced = {
        "model: {type: mlp, hidden_layers: [32, 16], dropout: 0.1}": f'model: {{type: custom, builder: "nets:build", params: {{width: 32, notes: "{notes}"}}}}',
        "scaling: {num_workers: 2}": f"scaling: {{num_workers: 1, use_gpu: {'false' if ON_CPU else 'true'}}}",
        "model: wine-torch": f"model: {MODEL}",
        # A GPU's float32 sums differ from a CPU's: no accuracy gate on registering (the tests hold a bar of their own).
        'require: {test_accuracy: ">= 0.9"}': "require: {}",
    }
    for old, new in replaced.items():
        assert old in job, f"jobs/wine-torch.yaml changed: no '{old}'"
        job = job.replace(old, new)
    (folder / "job.yaml").write_text(job)
    env = {"RAYMLP_HOME": str(folder / ".raymlp"), "RAY_ADDRESS": ray_4_cpus}
    converted = run_cli("data", "convert", "job.yaml", cwd=folder, env=env, timeout=TIMEOUT)
    assert converted.returncode == 0, converted.stdout[-2000:] + converted.stderr[-4000:]
    return {"folder": folder, "notes": notes, "env": env}


@pytest.fixture(scope="module")
def trained(project):
    """`raymlp train job.yaml` on a GPU worker; the summary and the notes written while it ran."""
    started = time.time()
    result = run_cli("train", "job.yaml", "--json", cwd=project["folder"], env=project["env"], timeout=TIMEOUT)
    ended = time.time()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    summary = json_output(result)
    notes = _notes(project["notes"], started, ended)
    _report("train", {"seconds": round(ended - started, 1), "metrics": summary.get("metrics"), "notes": notes})
    return {"summary": summary, "notes": notes}


@pytest.fixture(scope="module")
def package(project, trained):
    """The registered package, loaded in this process on the CPU (plain Python, no Ray worker)."""
    from raymlp.package import load_package
    from raymlp.storage import resolve_storage
    from raymlp.tracking import ModelRef, Tracker

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYMLP_HOME", project["env"]["RAYMLP_HOME"])
        storage = resolve_storage(None)
    path, _ = Tracker(storage.tracking_uri, Path(storage.root)).package_for(
        ModelRef(MODEL, version=trained["summary"]["model_version"]), storage.folder("cache", "models")
    )
    loaded = load_package(path)
    assert next(loaded.network.parameters()).device.type == "cpu"
    return {"package": loaded, "storage": storage}


def test_raymlp_train_with_use_gpu_trains_on_cuda(trained):
    summary = trained["summary"]
    assert summary["model"] == MODEL and summary["alias_moved"], summary
    assert summary["metrics"]["test_accuracy"] >= 0.85, summary["metrics"]
    training = [note for note in _on_expected_device(trained["notes"]) if note["training"]]
    assert training, f"no forward pass with gradients ran on {EXPECTED} in a worker with a GPU: {trained['notes']}"
    if not ON_CPU:
        assert all(note["gpu_ids"] for note in training), training


def test_gpu_serve_replica_answers_http_like_the_package_on_the_cpu(project, trained, package, serve_port):
    from ray import serve

    from raymlp.config.schema import ServeConfig
    from raymlp.serve.deploy import deploy, endpoint_spec, wait_until_healthy

    records = _wine_features().sample(60, random_state=3).to_dict("records")
    expected = package["package"].predict(pd.DataFrame.from_records(records))
    config = ServeConfig.model_validate(
        {"route": "/wine-gpu", "port": serve_port, "cpus_per_replica": 0.25, "gpus_per_replica": 0 if ON_CPU else 1}
    )
    version = trained["summary"]["model_version"]
    started = time.time()
    try:
        endpoint = deploy(
            endpoint_spec(config, MODEL, alias=None, version=version, storage=package["storage"]),
            config,
            app_name="serve-gpu",
            quiet=True,
        )
        wait_until_healthy(endpoint, timeout_s=120)
        answer = requests.post(endpoint.url, json=records, timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == MODEL and body["version"] == version
        one = requests.post(endpoint.url, json=records[5], timeout=60)
        assert one.status_code == 200 and one.json()["prediction"] == expected["prediction"].iloc[5], one.text
    finally:
        serve.delete("serve-gpu")  # the one GPU is needed again by `predict --gpu`
    notes = _notes(project["notes"], started, time.time())
    served = pd.DataFrame(
        [
            {"prediction": row["prediction"], **{f"probability_{k}": v for k, v in row["probabilities"].items()}}
            for row in body["predictions"]
        ]
    )
    difference = _assert_same_predictions(served, expected, "Serve replica vs the package on the CPU")
    _report("serve", {"max_probability_difference": difference, "notes": notes})
    replica = [note for note in _on_expected_device(notes) if not note["training"]]
    assert replica, f"the replica did not predict on {EXPECTED} with a GPU of its own: {notes}"
    assert any(word in str(note.get("actor")).lower() for note in replica for word in ("replica", "serve-gpu")), replica


def test_raymlp_predict_gpu_gives_the_cpu_predictions(project, trained, package):
    folder, env = project["folder"], project["env"]
    rows = _wine_features()
    rows.to_csv(folder / "rows.csv", index=False)
    expected = package["package"].predict(rows)
    model = f"{MODEL}:{trained['summary']['model_version']}"

    started = time.time()
    on_cpus = run_cli(
        "predict", "--model", model, "--input", "rows.csv", "--output", "cpu.csv", cwd=folder, env=env, timeout=TIMEOUT
    )
    cpu_ended = time.time()
    assert on_cpus.returncode == 0, on_cpus.stdout[-2000:] + on_cpus.stderr[-4000:]
    cpu_notes = _notes(project["notes"], started, cpu_ended)
    assert cpu_notes and all(note["device"] == "cpu" for note in cpu_notes), cpu_notes

    on_gpu = run_cli(
        "predict",
        "--model",
        model,
        "--input",
        "rows.csv",
        "--output",
        "gpu.csv",
        "--gpu",
        cwd=folder,
        env=env,
        timeout=TIMEOUT,
    )
    gpu_notes = _notes(project["notes"], cpu_ended, time.time())
    if ON_CPU:  # no GPU in the cluster: refused before anything runs
        assert on_gpu.returncode == 2 and "--gpu: no GPU here" in on_gpu.stderr, on_gpu.stderr[-2000:]
        return
    assert on_gpu.returncode == 0, on_gpu.stdout[-2000:] + on_gpu.stderr[-4000:]
    assert f"{len(rows)} rows scored by {MODEL}" in on_gpu.stdout, on_gpu.stdout
    assert _on_expected_device(gpu_notes), f"predict --gpu did not score on cuda in a GPU actor: {gpu_notes}"
    assert not [note for note in gpu_notes if note.get("gpu_ids") and note["device"] == "cpu"], gpu_notes

    cpu, gpu = pd.read_csv(folder / "cpu.csv"), pd.read_csv(folder / "gpu.csv")
    np.testing.assert_array_equal(gpu[rows.columns].to_numpy(), rows.to_numpy())
    differences = {
        "gpu_vs_package": _assert_same_predictions(gpu, expected, "predict --gpu vs the package on the CPU"),
        "cpu_vs_package": _assert_same_predictions(cpu, expected, "predict vs the package on the CPU"),
        "gpu_vs_cpu": _assert_same_predictions(gpu, cpu, "predict --gpu vs predict"),
    }
    _report("predict", {"max_probability_difference": differences, "cpu_notes": cpu_notes, "gpu_notes": gpu_notes})


def test_mixed_precision_training_on_the_gpu_reaches_the_bar(project):
    """float16 autocast and gradient scaling: torch's GPU-only path (`mixed_precision` is ignored on CPUs)."""
    started = time.time()
    result = run_cli(
        "train",
        "job.yaml",
        "--json",
        "--set",
        "train.mixed_precision=true",
        "--set",
        f"register.model={MODEL}-amp",
        cwd=project["folder"],
        env=project["env"],
        timeout=TIMEOUT,
    )
    ended = time.time()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    summary = json_output(result)
    notes = _notes(project["notes"], started, ended)
    _report(
        "mixed_precision", {"seconds": round(ended - started, 1), "metrics": summary.get("metrics"), "notes": notes}
    )
    assert summary["metrics"]["test_accuracy"] >= 0.85, summary["metrics"]
    assert [note for note in _on_expected_device(notes) if note["training"]], notes
