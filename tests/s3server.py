"""A real S3-compatible server on loopback for the storage tests: moto in server mode (from PyPI),
one process per test session, a fresh bucket per test.

moto accepts any credentials unless IAM checks are on; the server here turns them on after making
a user with every right (`root`), so a wrong secret, an unknown key and a read-only user are refused
as AWS refuses them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    log: Path

    def env(self, access_key: str | None = None, secret_key: str | None = None) -> dict[str, str]:
        """What a process needs to reach the server: the standard AWS variables, nothing raymlp's own."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": access_key or self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # no instance role here: do not wait for one
        }

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        name = f"raymlp-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def read_only_user(self, bucket: str) -> tuple[str, str]:
        """Keys of a user who may list and read `bucket` and nothing else."""
        return self._user(
            [
                {
                    "Effect": "Allow",
                    "Action": ["s3:Get*", "s3:List*", "s3:Head*"],
                    "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                }
            ]
        )

    def _user(self, statements: list[dict]) -> tuple[str, str]:
        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )
        name = f"user-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=name)
        iam.put_user_policy(
            UserName=name,
            PolicyName="only-this",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
        )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, S3Server]:
    port = _free_port()
    log = folder / "moto.log"
    env = dict(os.environ)
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"moto server ended at start:\n{log.read_text()}") from None
            time.sleep(0.2)
    else:
        process.kill()
        raise RuntimeError(f"moto server did not listen on {port} within 60 s")
    access_key, secret_key = _root_keys(endpoint)
    return process, S3Server(endpoint, access_key, secret_key, log)


def _root_keys(endpoint: str) -> tuple[str, str]:
    """An IAM user with every right, made before moto's auth checks are switched on (the
    `/moto-api/reset-auth` call); every request after it is checked against IAM."""
    import boto3
    import requests

    iam = boto3.client(
        "iam", endpoint_url=endpoint, aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1"
    )
    iam.create_user(UserName="root")
    iam.put_user_policy(
        UserName="root",
        PolicyName="everything",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName="root")["AccessKey"]
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    process, server = start_server(tmp_path_factory.mktemp("s3"))
    yield server
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch) -> str:
    """A new, empty bucket on the session's S3 server, and this process's AWS_* variables set to reach
    it with keys that may do anything; returns `s3://BUCKET`."""
    from raymlp.storage import files

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    files.forget_filesystems()
    return f"s3://{s3_server.new_bucket()}"
