"""Online endpoints on the session's Ray Serve: real HTTP requests to sklearn, torch and tensorflow
models, bad requests, API keys, a full queue, a replica killed under load, a canary and a rollback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from raymlp import load_job, run_job
from raymlp.config.schema import ServeConfig
from raymlp.context import Reporter
from raymlp.package import load_package
from raymlp.serve.deploy import deploy, endpoint_spec, wait_until_healthy
from raymlp.storage import resolve_storage

from .conftest import REPO, run_cli

pytestmark = [pytest.mark.integration]

QUIET = Reporter(quiet=True)


def _wine_records(count: int, seed: int = 0) -> list[dict]:
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame.drop(columns="target")
    return frame.sample(count, random_state=seed).to_dict("records")


@pytest.fixture(scope="module")
def models(ray_4_cpus, tmp_path_factory):
    """One registry with wine-sklearn versions 1 (a forest) and 2 (logistic regression), wine-torch,
    wine-tensorflow and wine-xgboost (short runs on one worker), breast-cancer (logistic regression; 30 features
    whose names have spaces), and the storage they live in."""
    home = tmp_path_factory.mktemp("serve") / "home"
    runs = [
        ("wine-sklearn.yaml", []),
        (
            "wine-sklearn.yaml",
            ["train.model.type=sklearn.linear_model.LogisticRegression", "train.model.params={max_iter: 500}"],
        ),
        ("wine-torch.yaml", ["train.scaling.num_workers=1", "train.epochs=4", "register.require={}"]),
        ("wine-tensorflow.yaml", ["train.scaling.num_workers=1", "train.epochs=3", "register.require={}"]),
        ("wine-xgboost.yaml", ["train.scaling.num_workers=1", "train.epochs=5", "register.require={}"]),
        (
            "wine-sklearn.yaml",
            [
                "data.source.sklearn.name=breast_cancer",
                "data.dataset.name=breast-cancer",
                "register.model=breast-cancer",
                "register.require={}",
                "train.model.type=sklearn.linear_model.LogisticRegression",
                "train.model.params={max_iter: 500}",
            ],
        ),
    ]
    summaries = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYMLP_HOME", str(home))
        for job, overrides in runs:
            summaries.append(run_job(load_job(REPO / "jobs" / job, overrides), reporter=QUIET))
        storage = resolve_storage(None)
    assert [(s.model, s.model_version) for s in summaries] == [
        ("wine-sklearn", 1),
        ("wine-sklearn", 2),
        ("wine-torch", 1),
        ("wine-tensorflow", 1),
        ("wine-xgboost", 1),
        ("breast-cancer", 1),
    ]
    return {"home": home, "storage": storage, "summaries": summaries}


def _serve(
    models, serve_port, name: str, app: str, *, alias: str | None = "champion", version: int | None = None, **settings
) -> str:
    config = ServeConfig.model_validate({"route": f"/{app}", "port": serve_port, "cpus_per_replica": 0.25, **settings})
    spec = endpoint_spec(config, name, alias=alias, version=version, storage=models["storage"])
    endpoint = deploy(spec, config, app_name=app, quiet=True)
    wait_until_healthy(endpoint)
    return endpoint.url.removesuffix("/predict")


def _delete(*apps: str) -> None:
    from ray import serve

    for app in apps:
        serve.delete(app)


def _package(models, name: str, version: int = 1):
    from raymlp.tracking import ModelRef, Tracker

    storage = models["storage"]
    path, _ = Tracker(storage.tracking_uri, Path(storage.root)).package_for(
        ModelRef(name, version=version), storage.folder("cache", "models")
    )
    return load_package(path)


def test_sklearn_torch_and_tensorflow_endpoints_answer_what_the_package_predicts(models, serve_port):
    records = _wine_records(20)
    names = {"wine-sklearn": "serve-sk", "wine-torch": "serve-torch", "wine-tensorflow": "serve-tf"}
    try:
        bases = {name: _serve(models, serve_port, name, app, alias=None, version=1) for name, app in names.items()}
        for name, base in bases.items():
            expected = _package(models, name).predict(pd.DataFrame.from_records(records))
            answer = requests.post(f"{base}/predict", json=records, timeout=30)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["model"] == name and body["version"] == 1 and answer.headers["x-raymlp-model-version"] == "1"
            assert [row["prediction"] for row in body["predictions"]] == expected["prediction"].tolist()
            for column in [c for c in expected.columns if c.startswith("probability_")]:
                served = [row["probabilities"][column.removeprefix("probability_")] for row in body["predictions"]]
                np.testing.assert_allclose(served, expected[column].to_numpy(), rtol=1e-6, atol=1e-9)
            one = requests.post(f"{base}/predict", json=records[3], timeout=30).json()
            assert one["prediction"] == expected["prediction"].iloc[3] and one["version"] == 1
            metadata = requests.get(f"{base}/metadata", timeout=10).json()
            assert metadata["model"] == name and metadata["versions"][0]["version"] == 1
            assert metadata["versions"][0]["traffic_percent"] == 100.0
            assert metadata["versions"][0]["lineage"]["dataset"]["name"] == "wine"
            assert [feature["name"] for feature in metadata["features"]] == list(records[0])
            assert requests.get(f"{base}/health", timeout=10).json()["status"] == "ok"
            spec = requests.get(f"{base}/openapi.json", timeout=10).json()
            record = spec["components"]["schemas"]["Record"]
            assert set(record["required"]) == set(records[0]) and record["additionalProperties"] is False
        _assert_metrics_exported({"serve-sk", "serve-torch", "serve-tf"})
        assert _listener(serve_port).startswith("haproxy"), "the default ingress is Serve's HAProxy"
    finally:
        _delete(*names.values())


def _listener(port: int) -> str:
    """The name of the process listening on 127.0.0.1:`port`."""
    import psutil

    pid = _listener_pid(port)
    try:
        return psutil.Process(pid).name() if pid else ""
    except psutil.Error:
        return ""


def _listener_pid(port: int) -> int | None:
    import psutil

    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            return connection.pid
    return None


def _assert_metrics_exported(apps: set[str]) -> None:
    """raymlp's request metrics reach Ray's Prometheus endpoint (what the dashboard's Grafana reads)."""
    import ray

    ports = {node["MetricsExportPort"] for node in ray.nodes() if node["Alive"]}
    deadline, seen = time.monotonic() + 60, set()
    while time.monotonic() < deadline and seen != apps:
        for port in ports:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            seen |= {app for app in apps if f'app="{app}"' in text and "raymlp_serve_requests" in text}
            assert "raymlp_serve_latency_ms_bucket" in text or seen != apps
        time.sleep(2)
    assert seen == apps


def test_bad_requests_get_4xx_naming_the_problem_and_schemathesis_finds_no_5xx(
    models, serve_port, monkeypatch, tmp_path
):
    monkeypatch.setenv("RAYMLP_TEST_KEYS", "first-key, second-key")
    try:
        base = _serve(models, serve_port, "wine-sklearn", "serve-bad")
        good = _wine_records(1)[0]
        cases = [
            ({**good, "alcohol": "strong"}, 422, "field 'alcohol': Input should be a valid number"),
            ({key: value for key, value in good.items() if key != "hue"}, 422, "field 'hue': Field required"),
            ([good, {**good, "colour": 1}], 422, "record 1, field 'colour': Extra inputs are not permitted"),
            ([], 422, "the list of records is empty"),
            (7, 422, "send one record (a JSON object) or a list of records"),
        ]
        for body, status, message in cases:
            answer = requests.post(f"{base}/predict", json=body, timeout=30)
            assert (answer.status_code, message in answer.json()["detail"]) == (status, True), (body, answer.text)
        not_json = requests.post(f"{base}/predict", data=b"alcohol=13", timeout=30)
        assert not_json.status_code == 400 and "not JSON" in not_json.json()["detail"]
        huge = requests.post(f"{base}/predict", data=b"[" + b"1," * (5 << 20) + b"1]", timeout=60)
        assert huge.status_code == 413 and "at most 1048576" in huge.json()["detail"]
        # Serve's request timeout (`serve.request_timeout_s`, 30 s here) is enforced by the replica
        # in HAProxy mode; Serve's header shortens it for one request. The replica answers after.
        late = requests.post(
            f"{base}/predict", json=_wine_records(170) * 12, timeout=30, headers={"x-request-timeout-seconds": "0.001"}
        )
        assert late.status_code == 408 and "timed out" in late.text
        assert requests.post(f"{base}/predict", json=_wine_records(3), timeout=30).status_code == 200
        for answer in (not_json, huge, late):
            assert "Traceback" not in answer.text

        # Every schemathesis check, on a model whose 30 feature names have spaces: what /openapi.json
        # promises is what the endpoint answers (numbers up to float32's range are scored, each status
        # it sends is listed). A body over the byte limit is refused with 413, which JSON Schema cannot
        # express: schemathesis is told that 413 is a refusal, and the one answer besides 2xx and 401
        # that valid data may get (stricter than its defaults, which accept any 5xx).
        cancer = _serve(models, serve_port, "breast-cancer", "serve-cancer", alias=None, version=1)
        (tmp_path / "schemathesis.toml").write_text(
            "[checks.negative_data_rejection]\nexpected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]\n"
            '[checks.positive_data_acceptance]\nexpected-statuses = ["2xx", 401, 413]\n'
        )
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{cancer}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                "60",
                "--phases",
                "examples,coverage,fuzzing",
                "--suppress-health-check",
                "all",
                "--seed",
                "7",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

        passed = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
        assert "No issues found" in result.stdout and passed and int(passed.group(2)) >= 100, result.stdout[-3000:]
        names = [feature["name"] for feature in requests.get(f"{cancer}/metadata", timeout=10).json()["features"]]
        assert "mean radius" in names and len(names) == 30
        extreme = {name: 3.4028234663852886e38 for name in names}  # scaled past float32, scored saturated
        assert requests.post(f"{cancer}/predict", json=extreme, timeout=30).status_code == 200
        assert (
            requests.post(
                f"{cancer}/predict", data=json.dumps(extreme).replace("3.4028234663852886e+38", "1.8e308"), timeout=30
            ).status_code
            == 422
        )

        keyed = _serve(models, serve_port, "wine-sklearn", "serve-keyed", api_keys_env="RAYMLP_TEST_KEYS")
        refused = requests.post(f"{keyed}/predict", json=good, timeout=30)
        assert refused.status_code == 401 and "API key" in refused.json()["detail"]
        assert (
            requests.post(f"{keyed}/predict", json=good, headers={"X-API-Key": "wrong"}, timeout=30).status_code == 401
        )
        assert requests.get(f"{keyed}/metadata", timeout=30).status_code == 401
        for headers in ({"Authorization": "Bearer second-key"}, {"X-API-Key": "first-key"}):
            assert requests.post(f"{keyed}/predict", json=good, headers=headers, timeout=30).status_code == 200
        assert requests.get(f"{keyed}/health", timeout=30).status_code == 200
    finally:
        _delete("serve-bad", "serve-keyed", "serve-cancer")


def test_a_full_queue_answers_503_and_nothing_else_fails(models, serve_port):
    from concurrent.futures import ThreadPoolExecutor

    try:
        base = _serve(
            models,
            serve_port,
            "wine-sklearn",
            "serve-queue",
            max_ongoing_requests=1,
            max_queued_requests=1,
            max_body_bytes=8 << 20,
        )
        heavy = _wine_records(178) * 40  # one request keeps the replica busy for a while

        def post(_: int) -> int:
            return requests.post(f"{base}/predict", json=heavy, timeout=120).status_code

        with ThreadPoolExecutor(24) as pool:
            statuses = list(pool.map(post, range(24)))
        assert set(statuses) <= {200, 503} and statuses.count(503) >= 10 and statuses.count(200) >= 2, statuses
    finally:
        _delete("serve-queue")


async def _hammer(url: str, body: bytes, count: int, clients: int) -> tuple[list[tuple[int, float, bool]], float]:
    """`count` POSTs of `body` from `clients` concurrent keep-alive clients: (status, seconds, has Retry-After) each,
    and the seconds it all took. Every request is bounded (60 s) and so is the whole."""
    import asyncio

    import aiohttp

    answers: list[tuple[int, float, bool]] = []
    todo = iter(range(count))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=60)
    ) as session:

        async def client() -> None:
            for _ in todo:
                started = time.perf_counter()
                async with session.post(url, data=body, headers={"content-type": "application/json"}) as answer:
                    await answer.read()
                answers.append((answer.status, time.perf_counter() - started, "retry-after" in answer.headers))

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), 120)
    return answers, time.perf_counter() - started


def test_a_burst_right_after_start_is_shed_at_once_and_the_rest_answered(models, serve_port):
    """One replica holding 4 requests and queueing 16, hit the moment it is up by 128 concurrent clients:
    every answer is 200 or 503 with Retry-After (none parked until the request timeout), refusals come at
    once, the replica keeps answering through the burst (its goodput is a fair share of the 32-client
    throughput, not the near-zero of requests parked until their timeout), and it answers right after."""
    import asyncio
    import statistics

    try:
        base = _serve(
            models,
            serve_port,
            "breast-cancer",
            "serve-burst",
            alias=None,
            version=1,
            max_ongoing_requests=4,
            max_queued_requests=16,
        )
        package = _package(models, "breast-cancer")
        body = json.dumps({name: 1.0 for name in package.feature_names}).encode()
        burst, burst_s = asyncio.run(_hammer(f"{base}/predict", body, 2000, 128))
        assert requests.post(f"{base}/predict", data=body, timeout=10).status_code == 200
        steady, steady_s = asyncio.run(_hammer(f"{base}/predict", body, 600, 32))
    finally:
        _delete("serve-burst")
    statuses = {status for status, _, _ in burst}
    refused = [seconds for status, seconds, _ in burst if status == 503]
    assert statuses <= {200, 503} and refused, statuses
    assert all(retry for status, _, retry in burst if status == 503), "a 503 without Retry-After"
    assert max(seconds for _, seconds, _ in burst) < 10, "a request was parked"
    assert statistics.median(refused) < 0.25, f"refusals took {statistics.median(refused):.3f} s (median)"
    goodput = sum(status == 200 for status, _, _ in burst) / burst_s
    throughput = sum(status == 200 for status, _, _ in steady) / steady_s
    # On 2 cores the 128 clients' own retries after instant 503s take CPU from the replica: measured 0.28-0.6x
    # here (one suite run on a slow day gave 39 vs 141 req/s); parked requests give ~0.
    assert goodput >= 0.15 * throughput, (goodput, throughput)


class _Load:
    """Client threads posting one record at a time, counting answers per version and failures."""

    def __init__(self, url: str, threads: int):
        self.url, self.stop, self.lock = url, threading.Event(), threading.Lock()
        self.versions: list[tuple[float, int]] = []
        self.failures: list[tuple[float, str]] = []
        self.record = _wine_records(1)[0]
        self.workers = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            try:
                answer = session.post(self.url, json=self.record, timeout=30)
                outcome = answer.json()["version"] if answer.status_code == 200 else f"HTTP {answer.status_code}"
            except Exception as error:  # a failed request is what we count
                outcome = repr(error)
            with self.lock:
                (self.versions if isinstance(outcome, int) else self.failures).append((time.monotonic(), outcome))

    def __enter__(self) -> _Load:
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(timeout=60)

    def answered_since(self, moment: float) -> list[int]:
        with self.lock:
            return [version for at, version in self.versions if at >= moment]

    def wait_for(self, predicate, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            moment = time.monotonic()
            time.sleep(2.0)
            recent = self.answered_since(moment)
            if recent and predicate(recent):
                return moment
        raise AssertionError(
            f"traffic never matched; last answers by version: {pd.Series(self.answered_since(moment)).value_counts().to_dict()}"
        )


def test_a_killed_replica_fails_only_its_in_flight_requests_and_its_capture_loses_at_most_one_flush(models, serve_port):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from ray.util.state import list_actors

    from raymlp.monitor.captures import Window, flattened, window_files

    flush_s = 1.0
    root = str(models["storage"].root)
    capture = {"flush_s": flush_s, "exclude": ["proline"]}
    try:
        base = _serve(models, serve_port, "wine-sklearn", "serve-kill", num_replicas=2, capture=capture)
        clients = 4
        with _Load(f"{base}/predict", clients) as load:
            started = time.monotonic()
            time.sleep(3)
            replicas = [
                actor
                for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)
                if actor.class_name == "ServeReplica:serve-kill:model"
            ]
            assert len(replicas) == 2
            killed_at = time.monotonic()
            ray.kill(ray.get_actor(replicas[0].name, namespace="serve"), no_restart=True)
            time.sleep(8)
        duration = time.monotonic() - started
        answered_after = [at for at, _ in load.versions if at > killed_at + 1]
        assert len(answered_after) > 50, "the endpoint stopped answering after a replica died"
        assert len(load.failures) <= clients, load.failures
        tagged = requests.post(f"{base}/predict", json=load.record, headers={"x-request-id": "tagged-1"}, timeout=30)
        assert tagged.status_code == 200 and tagged.headers["x-request-id"] == "tagged-1"
        made = requests.post(f"{base}/predict", json=load.record, timeout=30)
        assert len(made.headers["x-request-id"]) >= 16  # made when the client sent none
    finally:
        _delete("serve-kill")  # a replica stopped by Serve writes what it holds
    found = window_files(root, "wine-sklearn", Window())
    assert not found.skipped, found.skipped  # every captured file reads back; no partial file is visible
    table = flattened(pa.concat_tables([pq.read_table(name) for name in found.files]))
    answered = len(load.versions) + 2
    one_flush = answered / duration * flush_s
    assert answered - one_flush <= table.num_rows <= answered, (table.num_rows, answered, one_flush)
    assert "proline" not in table.column_names and "alcohol" in table.column_names
    row = table.filter(pa.compute.equal(table.column("request_id"), "tagged-1")).to_pylist()
    assert len(row) == 1 and row[0]["prediction"] == tagged.json()["prediction"]
    assert row[0]["alcohol"] == load.record["alcohol"] and row[0]["latency_ms"] > 0
    assert (
        row[0]["probability_" + str(tagged.json()["prediction"])]
        == tagged.json()["probabilities"][str(tagged.json()["prediction"])]
    )


def test_canary_share_then_switch_and_rollback_by_alias_without_failed_requests(models, serve_port, tmp_path):
    from ray import serve

    from raymlp.tracking import Tracker

    storage = models["storage"]
    tracker = Tracker(storage.tracking_uri, Path(storage.root))
    tracker.set_alias("wine-sklearn", "champion", 1, by="api")
    tracker.set_alias("wine-sklearn", "challenger", 2, by="api")
    env = {"RAYMLP_HOME": str(models["home"])}
    try:
        base = _serve(
            models,
            serve_port,
            "wine-sklearn",
            "serve-canary",
            traffic={"champion": 80, "challenger": 20},
            follow_aliases_s=0.5,
            num_replicas=2,
        )
        session = requests.Session()
        versions = [
            session.post(f"{base}/predict", json=_wine_records(1, seed=i)[0], timeout=30).json()["version"]
            for i in range(500)
        ]
        share = versions.count(2) / len(versions)
        assert set(versions) == {1, 2} and 0.13 <= share <= 0.27, share
        metadata = session.get(f"{base}/metadata", timeout=10).json()
        assert {v["version"]: v["traffic_percent"] for v in metadata["versions"]} == {1: 80.0, 2: 20.0}

        with _Load(f"{base}/predict", 3) as load:
            # The canary ends: the split becomes champion-only, applied in place (no replica restarts) ...
            config = ServeConfig(
                route="/serve-canary",
                port=serve_port,
                cpus_per_replica=0.25,
                follow_aliases_s=0.5,
                num_replicas=2,
                traffic={"champion": 100},
            )
            deploy(
                endpoint_spec(config, "wine-sklearn", alias="champion", storage=storage),
                config,
                "serve-canary",
                quiet=True,
            )
            load.wait_for(lambda recent: set(recent) == {1})
            # ... version 2 is promoted: every answer comes from it ...
            promoted = run_cli("models", "promote", "wine-sklearn:2", "--alias", "champion", cwd=tmp_path, env=env)
            assert promoted.returncode == 0, promoted.stderr
            load.wait_for(lambda recent: set(recent) == {2})
            # ... and rolled back: every answer comes from version 1 again.
            rolled = run_cli("models", "rollback", "wine-sklearn", "--alias", "champion", cwd=tmp_path, env=env)
            assert rolled.returncode == 0, rolled.stderr
            load.wait_for(lambda recent: set(recent) == {1})
        assert load.failures == [] and len(load.versions) > 100
        replicas = serve.status().applications["serve-canary"].deployments["model"].replica_states
        assert replicas.get("RUNNING") == 2
    finally:
        _delete("serve-canary")


def test_serve_build_writes_a_config_whose_application_serve_deploy_would_build(models, serve_port, tmp_path):
    """The written file passes Serve's own schema, and its import_path + args build a working application
    (what `serve deploy` and a RayService do with it)."""
    from ray import serve
    from ray._common.utils import import_attr
    from ray.serve.schema import ServeDeploySchema

    job = tmp_path / "job.yaml"
    job.write_text(
        (REPO / "jobs" / "wine-sklearn.yaml").read_text() + f"\nserve:\n  route: /built\n  port: {serve_port}\n"
        "  autoscaling: {min_replicas: 1, max_replicas: 2}\n  cpus_per_replica: 0.25\n"
    )
    built = run_cli(
        "serve",
        "build",
        str(job),
        "-o",
        str(tmp_path / "serve.yaml"),
        cwd=tmp_path,
        env={"RAYMLP_HOME": str(models["home"])},
    )
    assert built.returncode == 0, built.stderr
    import yaml

    document = yaml.safe_load((tmp_path / "serve.yaml").read_text())
    ServeDeploySchema.model_validate(document)
    application = document["applications"][0]
    assert application["deployments"][0]["autoscaling_config"]["max_replicas"] == 2
    try:
        app = import_attr(application["import_path"])(application["args"])
        serve.run(app, name=application["name"], route_prefix=application["route_prefix"], blocking=False)
        answer = requests.post(f"http://127.0.0.1:{serve_port}/built/predict", json=_wine_records(1)[0], timeout=60)
        assert answer.status_code == 200 and answer.json()["model"] == "wine-sklearn", answer.text
    finally:
        _delete(application["name"])


def _ray_processes_of(session_dir: str) -> list:
    """Ray's own processes of one cluster: those naming its session folder, and its workers (`ray::*`), which
    write their logs there. Not HAProxy, which Serve starts but which is no Ray process."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid():
                continue
            if session_dir in " ".join(process.cmdline()) or (
                process.name().startswith("ray::") and any(f.path.startswith(session_dir) for f in process.open_files())
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def _ingress_folder_of(port: int) -> Path:
    """The HAProxy folder ($TMPDIR/rmlp-*) of the HAProxy listening on `port`."""
    import psutil

    config = next(part for part in psutil.Process(_listener_pid(port)).cmdline() if part.endswith("haproxy.cfg"))
    folder = Path(config).parents[1]
    assert folder.name.startswith("rmlp-")
    return folder


def _serve_subprocess(home: Path, port: int, cwd: Path) -> subprocess.Popen:
    """`raymlp serve` on its own embedded Ray, in its own process group; returns once it says it serves."""
    env = {**os.environ, "RAYMLP_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    log = cwd / f"serve-{port}-{len(list(cwd.glob('serve-*.log')))}.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "raymlp", "serve", "--model", "breast-cancer:1", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if "press Ctrl-C to stop" in log.read_text(errors="replace"):
            return process
        time.sleep(1)
    process.kill()
    raise AssertionError(f"raymlp serve never said it serves: {log.read_text(errors='replace')[-3000:]}")


def test_a_hard_killed_serving_ray_leaves_nothing_on_its_port_and_serve_can_start_there_again(models, tmp_path):
    """SIGKILL of `raymlp serve`'s process group and of its Ray's processes: HAProxy ends with them, the port
    is free, and a new `raymlp serve` there answers; stopped with Ctrl-C, it leaves no HAProxy folder behind."""
    import signal

    import psutil

    from .conftest import _free_port

    port = _free_port()
    first = _serve_subprocess(models["home"], port, tmp_path)
    try:
        session = next(
            re.search(r"(/\S+/session_[\w.-]+)", " ".join(child.cmdline())).group(1)
            for child in psutil.Process(first.pid).children(recursive=True)
            if re.search(r"/session_[\w.-]+", " ".join(child.cmdline()))
        )
        victims = _ray_processes_of(session)
        assert any(victim.name().startswith("ray::HAProxy") for victim in victims)
        left_behind = _ingress_folder_of(port)  # nothing can remove it after a SIGKILL; the test does
        os.killpg(first.pid, signal.SIGKILL)
        for victim in victims:
            try:
                victim.kill()
            except psutil.Error:
                pass
        first.wait(30)
        deadline = time.monotonic() + 15
        while _listener(port) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _listener(port) == "", f"{_listener(port)} still listens on port {port} after its Ray was killed"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        if _listener(port) == "haproxy":  # what the assertion found: not left to hold the port after the test
            psutil.Process(_listener_pid(port)).kill()
    shutil.rmtree(left_behind, ignore_errors=True)
    second = _serve_subprocess(models["home"], port, tmp_path)
    try:
        features = requests.get(f"http://127.0.0.1:{port}/metadata", timeout=10).json()["features"]
        answer = requests.post(f"http://127.0.0.1:{port}/predict", json={f["name"]: 1.0 for f in features}, timeout=30)
        assert answer.status_code == 200, answer.text
        folder = _ingress_folder_of(port)
        second.send_signal(signal.SIGINT)
        assert second.wait(60) == 0
        assert not folder.exists() and _listener(port) == ""
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)


# --- monitoring: capture, drift, labels, replay, the report -------------------------------------


def _training_rows(models, name: str, version: int) -> pd.DataFrame:
    """The rows a registered version was trained on (its recorded split of its dataset version), with the label."""
    from raymlp.catalog import Catalog
    from raymlp.config.schema import SplitConfig
    from raymlp.data.split import split_frame
    from raymlp.data.versions import read_version_table

    lineage = _package(models, name, version).description["lineage"]
    with Catalog(models["storage"].catalog_url) as catalog:
        record = catalog.get_dataset_version(lineage["dataset"]["name"], lineage["dataset"]["version"])
    frame = read_version_table(record.path, record.manifest).to_pandas()
    return split_frame(frame, SplitConfig.model_validate(lineage["split"]), frame["target"])[0]


def _assert_exported(*fragments: str) -> None:
    """A line of Ray's Prometheus endpoint holds every fragment (within a minute: Ray exports every 10 s)."""
    import ray

    ports = {node["MetricsExportPort"] for node in ray.nodes() if node["Alive"]}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for port in ports:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            if any(all(fragment in line for fragment in fragments) for line in text.splitlines()):
                return
        time.sleep(2)
    raise AssertionError(f"no exported metric line holds {fragments}")


def _post_all(base: str, records: list[dict], ids: list[str], threads: int = 6) -> list[dict]:
    """POST each record as its own request, with its request id; the answers in order."""
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()

    def post(pair: tuple[dict, str]) -> dict:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        answer = local.session.post(f"{base}/predict", json=pair[0], headers={"x-request-id": pair[1]}, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json()

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, zip(records, ids)))


def _monitor_json(*args: str, env: dict) -> dict:
    done = run_cli("monitor", *args, "--json", cwd=Path(env["RAYMLP_HOME"]).parent, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_capture_window_is_judged_labelled_reported_and_refused_where_it_should_be(
    models, serve_port, tmp_path, capsys, monkeypatch
):
    from sklearn.metrics import accuracy_score

    from tests.browser import open_page

    env = {"RAYMLP_HOME": str(models["home"])}
    monkeypatch.setenv("RAYMLP_HOME", env["RAYMLP_HOME"])  # the calls made in this process too
    train = _training_rows(models, "wine-sklearn", 2)
    normal = train.sample(300, replace=True, random_state=11)
    shifted = train.sample(300, replace=True, random_state=12)
    for column in ("alcohol", "color_intensity"):
        shifted[column] += 1.5 * train[column].std()
    started = pd.Timestamp.now(tz="UTC").isoformat()  # other tests' captures of the model stay out
    try:
        base = _serve(
            models, serve_port, "wine-sklearn", "serve-monitor", alias=None, version=2, capture={"flush_s": 0.5}
        )
        served = _post_all(base, normal.drop(columns="target").to_dict("records"), [f"n{i}" for i in range(300)])
        boundary = pd.Timestamp.now(tz="UTC").isoformat()
        time.sleep(0.05)
        _post_all(base, shifted.drop(columns="target").to_dict("records"), [f"s{i}" for i in range(300)])
    finally:
        _delete("serve-monitor")  # its replicas write what they hold

    # Ground truth arrives later: joined once, however often it is sent.
    labels = tmp_path / "labels.csv"
    truth = pd.DataFrame({"request_id": [f"n{i}" for i in range(300)] + ["nowhere"], "target": [*normal["target"], 1]})
    truth.to_csv(labels, index=False)
    joined = run_cli(
        "monitor",
        "labels",
        "wine-sklearn:2",
        "--input",
        str(labels),
        "--label",
        "target",
        "--json",
        cwd=tmp_path,
        env=env,
    )
    assert joined.returncode == 0, joined.stderr
    from raymlp.services.monitoring import MonitorRequest, join_labels, monitor

    again = join_labels("wine-sklearn:2", str(labels), "request_id", "target", None, None)  # sent again, joined once
    for counts in (json.loads(joined.stdout), again):
        assert (counts["matched_rows"], counts["labelled_rows"], counts["unmatched_rows"]) == (300, 300, 1)
    label_files = list(Path(counts["written"]).parent.glob("labels-*.parquet"))
    assert len(label_files) == 1, "the same labels joined twice make one file"

    before = _monitor_json("wine-sklearn:2", "--since", started, "--until", boundary, env=env)
    assert before["window"]["rows"] == 300 and before["reference"]["rows"] == len(train)
    assert sum(column["drifted"] for column in before["drift"]["columns"]) <= 1
    measured = before["performance"]["measured"]
    expected = accuracy_score(normal["target"].astype(str), [str(answer["prediction"]) for answer in served])
    assert measured["rows"] == 300 and measured["metrics"]["accuracy"] == pytest.approx(expected)
    estimated = before["performance"]["estimated"]["metrics"]["accuracy"]
    assert abs(estimated - measured["metrics"]["accuracy"]) <= 0.05

    after = _monitor_json("wine-sklearn:2", "--since", boundary, env=env)
    assert after["window"]["rows"] == 300
    assert {column["column"] for column in after["drift"]["columns"] if column["drifted"]} == {
        "alcohol",
        "color_intensity",
    }
    assert any(anomaly["kind"] == "out_of_range" and anomaly["column"] == "alcohol" for anomaly in after["anomalies"])
    statistics = {column["column"]: column for column in after["profile"]}
    assert statistics["alcohol"]["rows"] == 300 and statistics["alcohol"]["minimum"] > train["alcohol"].min()
    assert (Path(after["report"]).parent / "profile.json").exists()  # the window's sketches, kept to merge later

    # The report, as a person sees it: rendered plots, no console errors, nothing fetched from outside.
    page = open_page(Path(after["report"]), tmp_path / "report.png")
    assert not page.console_errors and not page.outside_requests
    assert page.svg_count >= 13 and "color_intensity" in page.text and "wine-sklearn" in page.text

    # --fail-on-drift exits 3 for cron and CI; a corrupt capture file is skipped and named.
    folder = next(Path(after["report"]).parents[4].glob("captures/model=wine-sklearn/version=2/date=*"))
    (folder / "part-corrupt.parquet").write_bytes(b"not parquet at all")
    failing = run_cli(
        "monitor",
        "wine-sklearn:2",
        "--since",
        boundary,
        "--drift-share",
        "0.1",
        "--fail-on-drift",
        cwd=tmp_path,
        env=env,
    )
    assert failing.returncode == 3, failing.stderr
    assert "DRIFTED" in failing.stdout and "part-corrupt.parquet" in failing.stderr

    # A reference of another schema is reported as anomalies, not a crash.
    foreign = monitor(MonitorRequest("wine-sklearn:2", since=boundary, reference="breast-cancer@1")).report
    assert {anomaly["kind"] for anomaly in foreign["anomalies"]} == {"extra_column"}
    assert foreign["drift"]["columns_tested"] == 0

    # Each analysis is in the catalog and in MLflow (the training job's experiment), and its gauges reach Prometheus.
    from mlflow import MlflowClient

    from raymlp.catalog import Catalog

    storage = models["storage"]
    with Catalog(storage.catalog_url) as catalog:
        recorded = catalog.list_monitor_reports("wine-sklearn")
    assert len(recorded) >= 4 and recorded[0].reference.startswith("breast-cancer@1")
    assert any(record.drifted for record in recorded) and Path(recorded[-1].report_path).exists()
    client = MlflowClient(storage.tracking_uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("wine-sklearn").experiment_id], "tags.`raymlp.kind` = 'monitor'"
    )
    assert len(runs) >= 4 and "drift_score.alcohol" in runs[-1].data.metrics
    _assert_exported("raymlp_monitor_drift_share{", 'model="wine-sklearn"')
    _assert_exported("raymlp_capture_rows_total{", 'app="serve-monitor"')

    # Windows by rows, dataset profiles and comparisons, batch predict's capture.
    from raymlp.services.monitoring import compare_datasets, profile_dataset
    from raymlp.services.predict import predict_registered

    last = monitor(MonitorRequest("wine-sklearn:2", since=started, rows=100)).report
    assert last["window"]["rows"] == 100
    assert {c["column"] for c in last["drift"]["columns"] if c["drifted"]} == {"alcohol", "color_intensity"}
    profile = profile_dataset("wine@1", None, None)
    assert profile["rows"] == 178 and {c["column"] for c in profile["columns"]} >= {"alcohol", "target"}
    compared = compare_datasets("wine@1", "breast-cancer@1", None, None)
    kinds = {anomaly["kind"] for anomaly in compared["anomalies"]}
    assert {"missing_column", "extra_column"} <= kinds
    assert [column["column"] for column in compared["drift"]] == ["target"]  # the one column both have
    rows = tmp_path / "rows.csv"
    shifted.drop(columns="target").head(50).to_csv(rows, index=False)
    before_predict = pd.Timestamp.now(tz="UTC").isoformat()
    predict_registered(
        "wine-sklearn:2",
        str(rows),
        str(tmp_path / "out.csv"),
        None,
        gpu=False,
        job=None,
        address=None,
        progress=None,
        capture_sample=1.0,
    )
    batch = monitor(MonitorRequest("wine-sklearn:2", since=before_predict)).report
    assert batch["window"]["rows"] == 50 and batch["window"]["requests"] == 50

    from raymlp.cli import main

    for args, message in (  # refused before any work: in this process
        (["wine-sklearn:2", "--since", "2030-01-01"], "no captured rows"),
        (["no-such-model"], "no-such-model"),
        (["wine-sklearn:99"], "has no version 99"),
        (["wine-sklearn:2", "--window", "3y"], "--window"),
    ):
        capsys.readouterr()
        assert main(["monitor", *args]) == 2, args
        refused = capsys.readouterr().err
        assert message in refused and "Traceback" not in refused, (args, refused)


def test_replayed_captures_get_the_answers_the_endpoint_gave_for_every_framework(
    models, serve_port, tmp_path, monkeypatch
):
    from concurrent.futures import ThreadPoolExecutor

    from raymlp.services.monitoring import replay

    monkeypatch.setenv("RAYMLP_HOME", str(models["home"]))

    names = ["wine-torch", "wine-tensorflow", "wine-xgboost", "wine-sklearn"]
    records = pd.concat([_wine_features()] * 6).head(1000).to_dict("records")
    started = pd.Timestamp.now(tz="UTC").isoformat()  # earlier captures of the models (other tests') stay out
    apps = {name: f"serve-replay-{name.removeprefix('wine-')}" for name in names}
    try:
        bases = {
            name: _serve(models, serve_port, name, app, alias=None, version=1, capture={"flush_s": 0.5})
            for name, app in apps.items()
        }
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda name: _post_all(bases[name], records, [f"{name}-{i}" for i in range(1000)], 3), names))
    finally:
        _delete(*apps.values())
    for name in names[:-1]:  # on the test's own Ray connection
        result = replay(f"{name}:1", None, started, None, None, None)["versions"][0]
        assert result["rows"] == 1000 and result["mismatches"] == 0, (name, result)
    env = {"RAYMLP_HOME": str(models["home"])}  # and as a user runs it
    replayed = run_cli("monitor", "replay", f"{names[-1]}:1", "--since", started, "--json", cwd=tmp_path, env=env)
    assert replayed.returncode == 0, replayed.stderr + replayed.stdout
    result = json.loads(replayed.stdout)["versions"][0]
    assert result["rows"] == 1000 and result["mismatches"] == 0, result


def _wine_features() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    return load_wine(as_frame=True).frame.drop(columns="target")


def test_a_shadow_scores_a_copy_of_every_request_and_changes_no_answer(models, serve_port):
    """Version 2 shadows version 1: bodies and version headers as without a shadow, one client's p50 within 1.2x,
    and the shadow's answers captured under the same request ids (source shadow) and counted."""
    import statistics

    import pyarrow.dataset as pads

    records = _wine_records(150, seed=7)
    started = pd.Timestamp.now(tz="UTC")
    try:
        plain = _serve(
            models,
            serve_port,
            "wine-sklearn",
            "serve-unshadowed",
            alias=None,
            version=1,
            capture={"flush_s": 0.5},
            num_replicas=1,
        )
        shadowed = _serve(
            models,
            serve_port,
            "wine-sklearn",
            "serve-shadowed",
            alias=None,
            version=1,
            capture={"flush_s": 0.5},
            shadow="2",
            num_replicas=1,
        )
        session = requests.Session()
        timings: dict[str, list[float]] = {"plain": [], "shadowed": []}
        answers: dict[str, list[tuple]] = {"plain": [], "shadowed": []}
        for index, record in enumerate(records * 2):  # alternated, one client
            for kind, base in (("plain", plain), ("shadowed", shadowed)):
                request_id = f"{kind}-{index % len(records)}-{index // len(records)}"
                begin = time.perf_counter()
                reply = session.post(f"{base}/predict", json=record, headers={"x-request-id": request_id}, timeout=30)
                timings[kind].append(time.perf_counter() - begin)
                assert reply.status_code == 200 and reply.headers["x-request-id"] == request_id
                answers[kind].append((reply.json(), reply.headers["x-raymlp-model-version"]))
        assert answers["shadowed"] == answers["plain"]  # bodies and version headers unchanged
        ratio = statistics.median(timings["shadowed"]) / statistics.median(timings["plain"])
        assert ratio <= 1.2, (ratio, statistics.median(timings["plain"]))
        shadow = session.get(f"{shadowed}/metadata", timeout=10).json()["shadow"]
        assert shadow["version"] == 2
        counts = shadow["records"]
        assert counts["agreed"] + counts["disagreed"] + counts["dropped"] == 300 and counts["failed"] == 0
        assert counts["disagreed"] >= 1  # a forest and a logistic regression differ somewhere in 150 records
        assert session.get(f"{plain}/metadata", timeout=10).json()["shadow"] is None
    finally:
        _delete("serve-unshadowed", "serve-shadowed")  # a graceful stop writes what is buffered
    folder = Path(models["storage"].root) / "captures" / "model=wine-sklearn"
    parts = [  # the files written while this test ran (another test leaves a corrupt one in the folder)
        str(path) for path in folder.glob("version=*/date=*/*.parquet") if path.stat().st_mtime >= started.timestamp()
    ]
    table = pads.dataset(parts, format="parquet").to_table(columns=["request_id", "source", "model_version", "time"])
    table = table.to_pandas()
    table = table[table["time"] >= started]
    mine = table[table["request_id"].str.startswith("shadowed-")]
    served, copied = mine[mine["source"] == "serve"], mine[mine["source"] == "shadow"]
    assert set(served["model_version"].astype(str)) == {"1"} and set(copied["model_version"].astype(str)) == {"2"}
    assert set(copied["request_id"]) == set(served["request_id"]) and len(served) == 300
    assert not table[table["request_id"].str.startswith("plain-")]["source"].eq("shadow").any()
