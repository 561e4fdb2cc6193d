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
        [sys.executable, "-m", "raymlp", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        cwd=cwd,
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


def test_a_name_that_is_not_there_is_bad_usage(raymlp_home):
    result = raymlp("data", "show", "nothing")
    assert result.returncode == 2  # as `models show nothing`: the user named something that is not there
    assert result.stderr.startswith("error: no dataset named 'nothing'")


# --- the surface: help, names, versions, forms, tables -------------------------------------------


def test_every_command_takes_h_and_names_what_it_takes_readably(capsys):
    import typer

    from raymlp.cli import app

    def walk(command, path):
        yield path
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    root = typer.main.get_command(app)
    paths = list(walk(root, []))
    assert ["tune", "results"] in paths and ["serve", "build"] in paths, "subcommands with their own help"
    for path in paths:
        where = "raymlp " + " ".join([*path, "-h"])
        assert root.main([*path, "-h"], prog_name="raymlp", standalone_mode=False) == 0, where
        shown = capsys.readouterr().out
        assert shown.startswith("Usage: raymlp " + " ".join(path)), f"{where}: {shown}"
        text = shown.replace("${", "")  # `${ENV}` in a help text is the job file's syntax, not a metavar
        for typer_default in ("{", "<list", "<int", "<float", "<str", "<path", "<bool"):
            assert typer_default not in text, f"{where} shows {typer_default!r}:\n{shown}"


def test_tune_and_serve_take_a_job_file_as_before_and_have_subcommands(capsys, tmp_path):
    from typer.testing import CliRunner

    from raymlp.cli import app, main

    tune = CliRunner().invoke(app, ["tune", "-h"], prog_name="raymlp").output
    assert tune.startswith("Usage: raymlp tune [OPTIONS] JOB.yaml") and "--resume" in tune
    assert "Commands:\n  results " in tune
    build = CliRunner().invoke(app, ["serve", "build", "-h"], prog_name="raymlp").output
    assert build.startswith("Usage: raymlp serve build [OPTIONS] JOB.yaml") and "-o, --output FILE.yaml" in build
    missing = tmp_path / "nosuch.yaml"
    for command in (
        ["tune", str(missing)],
        ["tune", "--resume", str(missing)],
        ["tune", "results", str(missing)],
        ["serve", str(missing)],
        ["serve", "build", str(missing), "-o", "x.yaml"],
    ):
        assert main(command) == 2, command
        assert f"{missing}: no such job file" in capsys.readouterr().err, command
    assert main(["serve"]) == 2
    assert "name the model: raymlp serve --model NAME@ALIAS" in capsys.readouterr().err


def test_version_names_raymlp_and_ray():
    from importlib.metadata import version

    from typer.testing import CliRunner

    from raymlp import __version__
    from raymlp.cli import app

    shown = CliRunner().invoke(app, ["--version"], prog_name="raymlp")
    assert shown.exit_code == 0
    assert shown.output.startswith(f"raymlp {__version__} (Ray {version('ray')}, Python ")


def test_the_other_form_of_a_reference_is_refused_with_the_right_one(capsys):
    from raymlp.cli import main

    expected = {
        ("data", "show", "wine:1"): "did you mean wine@1? (NAME:VERSION is a model's version)",
        ("data", "verify", "wine:2"): "did you mean wine@2?",
        ("data", "modules", "show", "transforms:2"): "did you mean transforms@2?",
        ("data", "modules", "show", "transforms:clip"): "'transforms:clip' is a function ref (MODULE:FUNCTION)",
        ("models", "show", "wine-sklearn@3"): "did you mean wine-sklearn:3? (a model version is NAME:VERSION",
        ("models", "show", "wine-sklearn:champion"): "did you mean wine-sklearn@champion?",
        (
            "predict",
            "--model",
            "wine-sklearn@1",
            "--input",
            "x.csv",
            "--output",
            "y.csv",
        ): "did you mean wine-sklearn:1?",
    }
    for command, message in expected.items():
        assert main(list(command)) == 2, command  # refused before any catalog, registry or Ray is opened
        assert message in capsys.readouterr().err, command


def test_validate_json_lists_every_problem_with_its_place(tmp_path, capsys):
    from raymlp.cli import main

    job = tmp_path / "broken.yaml"
    job.write_text(THREE_MISTAKES)
    assert main(["validate", str(job), "--json"]) == 2
    captured = capsys.readouterr()
    shown = json.loads(captured.out)
    assert shown["ok"] is False and len(shown["problems"]) == 3
    assert shown["problems"][0] == {
        "where": f"{job}:7",
        "key": "data.split.validation",
        "message": "Input should be less than 1 (got 1.2)",
    }
    assert "3 problems in the job file" in captured.err


def test_tables_honour_columns_and_are_wide_in_a_pipe_without_it(monkeypatch, capsys):
    from raymlp.cli.output import print_table

    row = [["digest", "sha256:" + "0123456789abcdef" * 4]]
    monkeypatch.setenv("COLUMNS", "50")
    print_table("dataset", ["field", "value"], row)
    narrow = capsys.readouterr().out.splitlines()
    assert max(map(len, narrow)) <= 50 and len(narrow) > 5  # the digest wraps
    monkeypatch.delenv("COLUMNS")
    print_table("dataset", ["field", "value"], row)
    wide = capsys.readouterr().out
    assert "sha256:" + "0123456789abcdef" * 4 in wide  # one line a script can grep


def test_models_show_prints_tables_and_lines_not_python_values(capsys):
    from raymlp.cli.model_commands import _print_model

    _print_model(
        {
            "name": "wine-sklearn",
            "version": 3,
            "framework": "sklearn",
            "task": "classification",
            "label": "target",
            "classes": ["class_0", "class_1", "class_2"],
            "features": [{"name": f"f{i}", "type": "float"} for i in range(3)],
            "metrics": {"val_accuracy": 0.9722222222222222, "test_f1": 1.0},
            "lineage": {
                "dataset": {"name": "wine", "version": 1, "digest": "sha256:" + "ab" * 32},
                "job": {"name": "wine-sklearn", "path": "jobs/wine-sklearn.yaml", "sha256": "cd" * 32},
                "run_id": "r1",
                "mlflow_run_id": "m1",
                "best_epoch": 1,
                "trained_at": "2026-12-07T02:11:05.123456+00:00",
            },
            "preprocess": [{"type": "standard_scaler", "columns": ["f0", "f1"]}],
            "modules": [],
        },
        ["champion"],
    )
    shown = capsys.readouterr().out
    for python_value in ("[{", "{'", "['", "0.9722222222", ".123456", "'name'"):
        assert python_value not in shown, python_value
    for line in (
        "model wine-sklearn:3 (@champion)",
        "class_0, class_1, class_2",
        "3: f0 (float), f1 (float), f2 (float)",
        "2026-12-07 02:11:05 UTC",
        "0.972222",
        "  1. standard_scaler: columns=f0, f1",
        "  dataset wine@1 (sha256:abababababab)",
        "  -> run r1 (MLflow run m1, best epoch 1)",
        "  -> model wine-sklearn:3",
    ):
        assert line in shown, line


def test_only_data_means_the_data_stages_the_job_has():
    from raymlp.cli.app import _expand_only

    assert _expand_only("data,train", ["convert", "train", "register"]) == ["convert", "train"]
    assert _expand_only("data", ["collect", "convert", "train"]) == ["collect", "convert"]
