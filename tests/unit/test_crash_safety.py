"""SIGKILL in the middle of a collect or a convert leaves nothing half-visible; a re-run completes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

pytestmark = [pytest.mark.slow]

JOB = """\
version: 1
name: crash
data:
  source: {{format: csv, path: {csv}}}
  collect: {{url: "sqlite:///{db}", table: events, mode: replace}}
  dataset: {{name: events}}
"""


def write_events(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "id": np.arange(rows),
            "value": rng.random(rows),
            "kind": rng.choice(["a", "b", "c"], rows),
            "count": rng.integers(0, 1000, rows),
            "score": rng.normal(size=rows),
        }
    )
    pacsv.write_csv(table, path)


def start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "raymlp", *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def kill_when(process: subprocess.Popen, ready, timeout_s: float = 120.0) -> None:
    """SIGKILL `process` as soon as `ready()` is true; fail if it finished first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return
        if process.poll() is not None:
            pytest.fail(f"the command finished before it could be killed mid-write: {process.stderr.read()[-2000:]}")
        time.sleep(0.02)
    process.kill()
    pytest.fail("the command never reached the point to kill it at")


@pytest.fixture
def project(tmp_path):
    (tmp_path / "small.csv").write_text("id,value,kind,count,score\n1,0.5,a,3,0.1\n2,0.25,b,4,-0.2\n")
    write_events(tmp_path / "big.csv", 600_000)
    db = tmp_path / "warehouse.db"
    (tmp_path / "job.yaml").write_text(JOB.format(csv="small.csv", db=db))
    (tmp_path / "big.yaml").write_text(JOB.format(csv="big.csv", db=db))
    return tmp_path, db, {"RAYMLP_HOME": str(tmp_path / ".raymlp")}


def table_rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT * FROM events ORDER BY id").fetchall()


def table_names(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return sorted(row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def test_killed_collect_leaves_the_old_table_whole(project):
    folder, db, env = project
    first = subprocess.run(
        [sys.executable, "-m", "raymlp", "data", "collect", "job.yaml"],
        cwd=folder,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr
    before = table_rows(db)
    big_hash = (folder / "big.csv").read_bytes()

    process = start(["data", "collect", "big.yaml"], folder, env)
    kill_when(process, lambda: (folder / "warehouse.db-journal").exists())  # a write transaction is open
    assert table_rows(db) == before
    assert table_names(db) == ["events"], "no staging table may survive a crash"
    assert (folder / "big.csv").read_bytes() == big_hash

    again = subprocess.run(
        [sys.executable, "-m", "raymlp", "data", "collect", "big.yaml"],
        cwd=folder,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    assert len(table_rows(db)) == 600_000


def test_killed_convert_publishes_no_version(project):
    folder, db, env = project
    collected = subprocess.run(
        [sys.executable, "-m", "raymlp", "data", "collect", "big.yaml"],
        cwd=folder,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert collected.returncode == 0, collected.stderr
    datasets = folder / ".raymlp" / "datasets" / "events"

    def staging_started() -> bool:
        return datasets.exists() and any(entry.name.startswith(".staging-") for entry in datasets.iterdir())

    process = start(["data", "convert", "big.yaml"], folder, env)
    kill_when(process, staging_started)
    listed = subprocess.run(
        [sys.executable, "-m", "raymlp", "data", "list", "--json"],
        cwd=folder,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0 and listed.stdout.strip() == "[]"
    assert not any(entry.name.startswith("v") for entry in datasets.iterdir())

    again = subprocess.run(
        [sys.executable, "-m", "raymlp", "data", "convert", "big.yaml", "--json"],
        cwd=folder,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    assert '"rows": 600000' in again.stdout
    assert not any(entry.name.startswith(".staging-") for entry in datasets.iterdir()), (
        "the killed writer's staging folder is cleaned up by the next one"
    )
    verified = subprocess.run(
        [sys.executable, "-m", "raymlp", "data", "verify", "events"],
        cwd=folder,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stderr
