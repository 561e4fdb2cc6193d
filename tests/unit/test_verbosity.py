"""Only raymlp's own lines by default; the libraries' with -v. (Example jobs are checked the same way
where they run: tests/integration, on and off a pseudo-terminal.)"""

from __future__ import annotations

import os
import subprocess
import sys

from raymlp.cli import _take_verbose
from tests.conftest import foreign_lines, library_lines

#: What a plain `raymlp run jobs/wine-sklearn.yaml` printed before raymlp silenced its libraries.
LIBRARY_LINES = [
    "2026-12-07 02:58:37,285\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled for this Ray cluster.",
    "2026/12/07 02:58:54 INFO mlflow.store.db.utils: Creating initial MLflow database tables...",
    "2026-12-07 02:58:56,854\tWARNING __init__.py:28 -- Progress bars disabled. To enable, set `ray.data.DataContext...`.",
    "2026-12-07 02:58:56,941\tINFO streaming_executor.py:371 -- ✔️  Dataset dataset_035_0 execution finished in 0.00 seconds",
    "2026/12/07 02:59:09 WARNING mlflow.pyfunc: Passing a Python object as `python_model` causes it to be serialized",
    "Downloading artifacts:   0%|          | 0/3 [00:00<?, ?it/s]Downloading artifacts: 100%|██████████| 3/3 [00:00<00:00]",
    'INFO 2026-12-07 03:04:28,907 serve 18128 -- Started Serve in namespace "serve".',
    "(raylet) Task ServeController.graceful_shutdown failed. There are infinite retries remaining, so the task will be retried.",
    "(RayTrainWorker pid=4242) Setting up process group for: env:// [rank=0, world_size=2]",
    "/site-packages/sklearn/base.py:1: UserWarning: X does not have valid feature names",
    "[I 2026-12-07 03:32:48,663] A new study created in memory with name: optuna",
    "I0000 00:00:1796614299.795776   27028 cudart_stub.cc:31] Could not find cuda drivers on your machine.",
    "| Configuration for experiment     wine-torch-sweep-806cf548   |",
]

RAYMLP_LINES = """\
  convert  wine@1: 178 rows, sha256:6c27fb207b4e (4,352 rows/s in 0.0 s)
      ray  started an embedded local Ray in 10.4s; dashboard http://127.0.0.1:8265
    train  epoch 1/1  train_loss 0.0543  val_loss 0.1596  val_accuracy 1.0000
 register  wine-sklearn version 1; alias 'champion' -> version 1
warning: the catalog at sqlite:///x.db cannot be opened
raymlp run wine-sklearn
┏━━━━━━━━━┳━━━━━━━━━━━━━━━┓
│ run     │ 0e70a61ee4f4  │
└─────────┴───────────────┘
"""


def test_every_kind_of_library_line_is_told_from_raymlps_own():
    assert foreign_lines(RAYMLP_LINES) == []
    assert library_lines(RAYMLP_LINES) == []
    for line in LIBRARY_LINES:
        assert foreign_lines(RAYMLP_LINES + line + "\n") == [line], line
        if not line.startswith("|"):  # Tune's table: not a shape only libraries print
            assert library_lines(RAYMLP_LINES + line + "\n") == [line], line


def test_a_terminal_transcript_is_read_as_the_screen_shows_it():
    bar = "\x1b[1m  collect\x1b[0m \x1b[90m━━━━\x1b[0m 0/? bytes\r\x1b[2K\x1b[1m  collect\x1b[0m \x1b[90m━━\x1b[0m 13.2 kB 178 rows\r\n"
    assert foreign_lines(bar + "\x1b[1m  convert\x1b[0m  wine@1: 178 rows\r\n") == []
    assert foreign_lines(bar + "\x1b[33m(raylet)\x1b[0m Task failed\r\n") == ["(raylet) Task failed"]


def test_verbose_is_taken_anywhere_before_a_double_dash(monkeypatch):
    monkeypatch.delenv("RAYMLP_VERBOSE", raising=False)
    assert _take_verbose(["run", "job.yaml"]) == ["run", "job.yaml"] and "RAYMLP_VERBOSE" not in os.environ
    assert _take_verbose(["run", "job.yaml", "-v", "--", "-v"]) == ["run", "job.yaml", "--", "-v"]
    assert os.environ["RAYMLP_VERBOSE"] == "1"


def test_mlflow_creating_its_store_is_silent_unless_verbose(tmp_path):
    """A real command on a fresh MLflow store (MLflow logs its table creation); no Ray needed."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAYMLP_", "MLFLOW_"))}

    def models_list(home: str, *flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "raymlp", "models", "list", *flags],
            cwd=tmp_path,
            env={**env, "RAYMLP_HOME": str(tmp_path / home)},
            capture_output=True,
            text=True,
            timeout=120,
        )

    quiet = models_list("quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert foreign_lines(quiet.stdout + quiet.stderr) == []
    loud = models_list("loud", "-v")
    assert loud.returncode == 0, loud.stderr
    assert any("Creating initial MLflow database tables" in line for line in foreign_lines(loud.stderr))
