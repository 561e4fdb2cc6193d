"""Datasets in a bucket: sources read from s3://, versions published there with the same guarantees
as on disk, and store failures as one clear line. Against a real S3-compatible server (moto, in
server mode on loopback; tests/s3server.py), no Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from raymlp.cli import main
from raymlp.errors import UsageError
from raymlp.storage import files
from raymlp.uris import parse_uri


def test_uris_are_checked_and_pick_their_filesystem(monkeypatch):
    assert parse_uri("s3://bucket/a//b/") == files.ObjectURI("s3", "bucket", "a/b")
    assert str(parse_uri("gs://my_bucket.eu/x")) == "gs://my_bucket.eu/x"
    assert files.join("s3://bucket/a", "b", "c.json") == "s3://bucket/a/b/c.json"
    assert files.parent("gs://bucket/a/b") == "gs://bucket/a"
    assert not files.is_remote("file:///tmp/x") and files.local_path("file:///tmp/x") == Path("/tmp/x")
    for bad, why in [
        ("s3://", "does not name a bucket"),
        ("s3://Bad_Bucket/x", "does not name a bucket"),
        ("s3://bucket/a/../b", "'..' in its key"),
        ("ftp://host/x", "not a local path or a URI raymlp can read"),
    ]:
        with pytest.raises(UsageError, match=why) as raised:
            parse_uri(bad, key="storage.root")
        assert str(raised.value).startswith("storage.root: ")
    # gs:// goes to pyarrow's GCS filesystem, s3:// to its S3 filesystem, each made without a request
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    files.forget_filesystems()
    gcs, path = files.arrow_filesystem("gs://bucket/data/x.csv")
    assert (type(gcs).__name__, path) == ("GcsFileSystem", "bucket/data/x.csv")
    s3, path = files.arrow_filesystem("s3://bucket/data/x.csv")
    assert (type(s3).__name__, path) == ("S3FileSystem", "bucket/data/x.csv")
    files.forget_filesystems()


def test_a_malformed_uri_in_the_job_is_refused_with_its_line(tmp_path, raymlp_home, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(
        "version: 1\nname: x\nstorage:\n  root: s3://No_Such/prefix\n"
        "data:\n  source: {format: csv, path: 'gs://bkt/../x.csv'}\n  dataset: {name: x}\n"
    )
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err
    assert f"{job}:4: storage.root: 's3://No_Such/prefix' does not name a bucket" in err
    assert f"{job}:6: data.source.path: 'gs://bkt/../x.csv' has '.' or '..' in its key" in err


# --- a bucket on the session's S3 server ------------------------------------------------------


def wine_like(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(rows),
            "alcohol": rng.normal(13, 1, rows).round(3),
            "kind": rng.choice(["red", "white", "rosé"], rows),
            "score": rng.integers(0, 10, rows),
        }
    )


def put(bucket: str, key: str, data: bytes) -> str:
    name = f"{bucket}/{key}"
    files.write_bytes(name, data)
    return name


def job_file(folder: Path, name: str, root: str, source: str, file_format: str = "csv", extra: str = "") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        version: 1
        name: {name}
        storage: {{root: '{root}', catalog: 'sqlite:///{folder}/catalog.db'}}
        data:
          source: {{format: {file_format}, path: '{source}'}}
          dataset: {{name: {name}}}
        """)
        + extra
    )
    return path


def convert(job: Path, capsys) -> dict:
    assert main(["data", "convert", str(job), "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def csv_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("file_format", ["csv", "parquet", "json", "images"])
def test_a_source_in_the_bucket_makes_the_version_the_local_file_makes(
    file_format, tmp_path, raymlp_home, s3_bucket, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    table = wine_like(3000)
    local = tmp_path / "local"
    local.mkdir()
    if file_format == "images":
        from PIL import Image

        for label, color in [("red", (200, 0, 0)), ("blue", (0, 0, 200))]:
            for index in range(3):
                image = local / "pics" / label / f"{index}.png"
                image.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8 + index, 8), color).save(image)
                put(s3_bucket, f"in/pics/{label}/{index}.png", image.read_bytes())
        put(s3_bucket, "in/pics/red/notes.txt", b"not an image")
        local_source, remote_source = str(local / "pics"), f"{s3_bucket}/in/pics"
    else:
        if file_format == "csv":
            data = csv_bytes(table) + b'4000,1.5,"broken\n'  # a malformed record, kept aside
        elif file_format == "parquet":
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, row_group_size=700)
            data = sink.getvalue().to_pybytes()
        else:
            data = b"".join(json.dumps(row).encode() + b"\n" for row in table.to_pylist()) + b"not json\n"
        for half in (1, 2):
            (local / f"part{half}.{file_format}").write_bytes(data)
            put(s3_bucket, f"in/part{half}.{file_format}", data)
        put(s3_bucket, "in/README.md", b"not data")
        local_source = str(local / f"*.{file_format}")
        remote_source = f"{s3_bucket}/in/*.{file_format}" if file_format != "json" else f"{s3_bucket}/in/"
    schema = (
        "  schema: {on_error: quarantine, columns: {score: {type: int, max: 8}}}\n" if file_format != "images" else ""
    )
    local_job = job_file(tmp_path, "here", str(tmp_path / "root"), local_source, file_format, schema)
    bucket_job = job_file(tmp_path, "there", f"{s3_bucket}/team/root", remote_source, file_format, schema)
    here, there = convert(local_job, capsys), convert(bucket_job, capsys)

    assert there["content_digest"] == here["content_digest"]
    assert (there["rows"], there["quarantined_rows"]) == (here["rows"], here["quarantined_rows"])
    assert there["path"].startswith(f"{s3_bucket}/team/root/datasets/there/v-")
    manifest = files.read_json(f"{there['path']}/manifest.json")
    assert manifest["version"] == 1
    listed = files.list_files(there["path"])
    assert sorted(files.name_of(name) for name in listed) == sorted(
        [item["path"] for item in manifest["files"]]
        + ["manifest.json"]
        + (["quarantine.parquet"] if manifest["quarantine"] else [])
    )
    for item in manifest["files"]:  # every part's sha256 is of its bytes in the bucket
        assert files.sha256_of(f"{there['path']}/{item['path']}") == item["sha256"]
    recorded = [item["path"] for item in manifest["source"]["files"]]
    assert all(name.startswith(f"{s3_bucket}/in/") for name in recorded)
    assert main(["data", "verify", "there@1", "--job", str(bucket_job)]) == 0, capsys.readouterr().err
    capsys.readouterr()


def test_verify_rereads_the_objects(tmp_path, raymlp_home, s3_bucket, capsys):
    source = put(s3_bucket, "in/wine.csv", csv_bytes(wine_like(500)))
    job = job_file(tmp_path, "wine", f"{s3_bucket}/root", source)
    version = convert(job, capsys)
    part = f"{version['path']}/{files.read_json(version['path'] + '/manifest.json')['files'][0]['path']}"
    files.write_bytes(part, files.read_bytes(part)[:-10] + b"x" * 10)  # same size, other bytes
    assert main(["data", "verify", "wine@1", "--job", str(job)]) == 1
    assert "sha256 differs from the manifest" in capsys.readouterr().err
    put(s3_bucket, "in/wine.csv", csv_bytes(wine_like(501)))
    files.write_bytes(part, b"")  # both wrong now; the source is re-read from the bucket
    assert main(["data", "verify", "wine@1", "--job", str(job)]) == 1
    capsys.readouterr()


def test_two_publishers_at_once_make_two_whole_versions(tmp_path, raymlp_home, s3_bucket, capsys):
    jobs = []
    for seed in (1, 2):
        source = put(s3_bucket, f"in/{seed}.csv", csv_bytes(wine_like(40_000, seed)))
        jobs.append(job_file(tmp_path, "same", f"{s3_bucket}/root", source).rename(tmp_path / f"job{seed}.yaml"))
    env = {**os.environ}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "raymlp", "data", "convert", str(job), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for job in jobs
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    made = [json.loads(out) for out, _ in outputs]
    assert sorted(version["version"] for version in made) == [1, 2]
    assert made[0]["content_digest"] != made[1]["content_digest"]
    assert main(["data", "list", "--json", "--job", str(jobs[0])]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted((item["version"], item["content_digest"]) for item in listed) == sorted(
        (version["version"], version["content_digest"]) for version in made
    )
    for number in (1, 2):
        assert main(["data", "verify", f"same@{number}", "--job", str(jobs[0])]) == 0, capsys.readouterr().err
    capsys.readouterr()


def test_a_publish_killed_midway_leaves_no_version_and_the_next_cleans_up(tmp_path, raymlp_home, s3_bucket, capsys):
    source = put(s3_bucket, "in/big.csv", csv_bytes(wine_like(600_000)))
    job = job_file(tmp_path, "big", f"{s3_bucket}/root", source)
    datasets = f"{s3_bucket}/root/datasets/big"
    env = {**os.environ, "RAYMLP_READ_RANGE_BYTES": str(1 << 20)}  # many parts: the kill lands among them
    process = subprocess.Popen(
        [sys.executable, "-m", "raymlp", "data", "convert", str(job)], env=env, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any(name.endswith(".parquet") for name in files.list_files(datasets)):
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the convert ended before any part was written"
    left = files.list_files(datasets)
    assert left and not any(name.endswith("manifest.json") for name in left)
    assert main(["data", "list", "--json", "--job", str(job)]) == 0
    assert json.loads(capsys.readouterr().out) == []

    version = convert(job, capsys)
    assert (version["version"], version["rows"]) == (1, 600_000)
    remaining = {name[len(datasets) + 1 :].split("/")[0] for name in files.list_files(datasets)}
    assert remaining == {files.name_of(version["path"])}, "the killed writer's parts are gone"
    assert main(["data", "verify", "big@1", "--job", str(job)]) == 0, capsys.readouterr().err
    capsys.readouterr()


def test_store_failures_are_one_clear_line(tmp_path, raymlp_home, s3_server, s3_bucket, monkeypatch, capsys):
    source = put(s3_bucket, "in/wine.csv", csv_bytes(wine_like(100)))
    bucket = parse_uri(s3_bucket).bucket

    def run(job: Path, env: dict[str, str]) -> tuple[int, str]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        files.forget_filesystems()
        code = main(["data", "convert", str(job)])
        err = capsys.readouterr().err.strip()
        return code, err

    good = job_file(tmp_path, "wine", f"{s3_bucket}/root", source)
    code, err = run(good, s3_server.env(secret_key="wrong-secret"))
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"s3://{bucket}" in err and "credentials" in err and "AWS_ACCESS_KEY_ID (set)" in err

    read_only = s3_server.read_only_user(bucket)
    code, err = run(good, s3_server.env(*read_only))
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"s3://{bucket}: permission denied (write 'root/datasets/wine/v-" in err

    missing = job_file(tmp_path, "wine2", "s3://no-such-bucket-here/root", source)
    code, err = run(missing, s3_server.env())
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "s3://no-such-bucket-here: the bucket does not exist" in err

    gone = job_file(tmp_path, "wine3", f"{s3_bucket}/root", f"{s3_bucket}/in/nothing-*.csv")
    code, err = run(gone, s3_server.env())
    assert code == 2 and "matches no csv objects" in err, err
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("raymlp-")]


def test_a_removed_version_leaves_its_number_taken_and_its_objects_gone(tmp_path, raymlp_home, s3_bucket, capsys):
    source = put(s3_bucket, "in/wine.csv", csv_bytes(wine_like(300)))
    job = job_file(tmp_path, "wine", f"{s3_bucket}/root", source)
    first = convert(job, capsys)
    assert main(["data", "rm", "wine@1", "--job", str(job), "--json"]) == 0, capsys.readouterr().err
    removed = json.loads(capsys.readouterr().out)
    assert removed["path"] == f"{s3_bucket}/root/datasets/wine/v1" and "manifest.json" in removed["files"]
    assert files.list_files(first["path"]) == []
    assert (
        files.read_json(f"{s3_bucket}/root/datasets/wine/v1/REMOVED.json")["content_digest"] == first["content_digest"]
    )
    again = convert(job, capsys)
    assert again["version"] == 2 and again["content_digest"] == first["content_digest"]
