"""The command line as a user meets it: exit codes, messages, and what it imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

THREE_MISTAKES = """\
version: 1
name: wine
data:
  source: {format: csv, path: data/wine.csv}
  dataset: {name: wine}
  label: target
  split: {validation: 1.2}
train:
  framework: torch
  model: {type: mlp}
  epochs: -1
  batchsize: 32
"""


def raymlp(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raymlp", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )


def test_validate_prints_all_three_mistakes_and_exits_2(tmp_path):
    job = tmp_path / "broken.yaml"
    job.write_text(THREE_MISTAKES)
    result = raymlp("validate", str(job))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{job}:7: data.split.validation: Input should be less than 1 (got 1.2)",
        f"{job}:11: train.epochs: Input should be greater than or equal to 1 (got -1)",
        f"{job}:12: train.batchsize: unknown key; did you mean 'batch_size'? allowed keys: framework, task, model, "
        "epochs, batch_size, optimizer, scaling, checkpoint, max_failures, seed, early_stopping, "
        "gradient_accumulation_steps, mixed_precision, cv_folds, env",
        "3 problems in the job file",
    ]
    assert "Traceback" not in result.stderr


def test_run_on_a_broken_job_exits_2_without_starting_ray(tmp_path):
    job = tmp_path / "broken.yaml"
    job.write_text(THREE_MISTAKES)
    # An address nobody listens on: touching Ray at all would fail differently (exit 1, "cannot reach").
    result = raymlp("run", str(job), env={"RAY_ADDRESS": "127.0.0.1:1", "RAYMLP_HOME": str(tmp_path / "home")})
    assert result.returncode == 2
    assert "3 problems in the job file" in result.stderr
    assert "ray" not in result.stderr.lower().replace("raymlp", "")
    assert not (tmp_path / "home").exists(), "a refused job must not create state"


def quickstart_project(folder: Path) -> Path:
    """A copy of jobs/quickstart.yaml in `folder` with the data/wine.csv it reads (as `make demo` writes it)."""
    from raymlp.data.sources import sklearn_frame

    (folder / "jobs").mkdir()
    (folder / "data").mkdir()
    (folder / "jobs" / "quickstart.yaml").write_text((REPO / "jobs" / "quickstart.yaml").read_text())
    sklearn_frame("wine").head(5).to_csv(folder / "data" / "wine.csv", index=False)
    return folder / "jobs" / "quickstart.yaml"


def test_valid_job_validates_with_its_stages(tmp_path):
    quickstart_project(tmp_path)
    result = raymlp("validate", "jobs/quickstart.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "jobs/quickstart.yaml: ok (collect, convert, train, register, predict, serve)"


def test_bad_usage_exits_2():
    assert raymlp("run").returncode == 2
    assert raymlp("no-such-command").returncode == 2
    bad_model = raymlp("predict", "--model", "not a model!", "--input", "x.csv", "--output", "y.csv")
    assert bad_model.returncode == 2
    assert "is not NAME, NAME@ALIAS or NAME:VERSION" in bad_model.stderr


def test_help_and_validate_import_no_framework(tmp_path):
    job = quickstart_project(tmp_path)  # validate reads the CSV's header: no framework for that either
    probe = textwrap.dedent(f"""
        import json, sys
        from raymlp.cli import main
        codes = [main(["--help"]), main(["validate", {str(job)!r}]), main(["schema"])]
        heavy = sorted(name for name in ("torch", "tensorflow", "xgboost", "ray", "mlflow") if name in sys.modules)
        print(json.dumps({{"codes": codes, "heavy": heavy}}))
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"codes": [0, 0, 0], "heavy": []}


def test_schema_prints_json_schema():
    result = raymlp("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert "train" in schema["properties"]


def test_data_sample_writes_csv(tmp_path):
    out = tmp_path / "wine.csv"
    result = raymlp("data", "sample", "wine", "-o", str(out))
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 179 and lines[0].endswith(",target")
    assert raymlp("data", "sample", "mnist", "-o", str(out)).returncode == 2


def test_unknown_dataset_is_a_clear_failure(raymlp_home):
    result = raymlp("data", "show", "nothing")
    assert result.returncode == 1
    assert result.stderr.startswith("error: no dataset named 'nothing'")
