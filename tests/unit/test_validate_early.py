"""What a job reads is checked by `raymlp validate`, and by `run` before anything starts (no Ray, no
dataset version): each late failure of issue 18 pinned as FILE:LINE: key: message, exit 2."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from raymlp.cli import main
from raymlp.config import load_job
from raymlp.services.inputs import check_inputs

HEADER = "alcohol,malic_acid,fixed_acidity,target\n"
ROWS = "".join(f"{12 + i / 10},{1 + i / 10},{7 + i / 10},class_{i % 2}\n" for i in range(20))


def job(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder as working directory, holding data/wine.csv; RAYMLP_HOME inside it."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "wine.csv").write_text(HEADER + ROWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYMLP_HOME", str(tmp_path / "home"))
    return tmp_path


def validate(path: Path, capsys) -> tuple[int, list[str]]:
    code = main(["validate", str(path)])
    return code, capsys.readouterr().err.splitlines()


def csv_job(
    source: str = "data/wine.csv",
    label: str = "target",
    preprocess: str = "[{type: standard_scaler}]",
    model: str = "{type: mlp}",
    extra: str = "",
) -> str:
    return f"""\
version: 1
name: wine
data:
  source: {{format: csv, path: {source}}}
  dataset: {{name: wine}}
  label: {label}
preprocess: {preprocess}
train:
  framework: torch
  model: {model}
{extra}"""


def test_a_source_path_that_matches_nothing(project, capsys):
    path = job(project, csv_job(source="data/wines.csv"))
    code, err = validate(path, capsys)
    assert code == 2
    assert err == [
        f"{path}:4: data.source.path: 'data/wines.csv' matches no csv files (working directory: {project})",
        "1 problem in the job file",
    ]


def test_a_label_not_in_the_csv_header(project, capsys):
    path = job(project, csv_job(label="quality"))
    code, err = validate(path, capsys)
    assert code == 2
    assert err[0] == (
        f"{path}:6: data.label: 'quality' is not a column of data/wine.csv "
        "(columns: alcohol, malic_acid, fixed_acidity, target)"
    )


def test_a_preprocess_column_not_in_the_file(project, capsys):
    path = job(project, csv_job(preprocess="\n  - {type: standard_scaler, columns: [alcohol, acidity]}"))
    code, err = validate(path, capsys)
    assert code == 2
    assert err[0] == (
        f"{path}:8: preprocess.0.columns.1: 'acidity' is not a column of data/wine.csv; did you mean "
        "'fixed_acidity'? (columns: alcohol, malic_acid, fixed_acidity, target)"
    )


def test_parquet_and_json_lines_headers_are_read_too(project, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1.0], "y": ["x"]}), project / "data" / "t.parquet")
    (project / "data" / "t.jsonl").write_text('{"a": 1, "y": "x"}\n')
    for kind, name in (("parquet", "t.parquet"), ("json", "t.jsonl")):
        path = job(project, csv_job(source=f"data/{name}", label="z").replace("format: csv", f"format: {kind}"))
        code, err = validate(path, capsys)
        assert code == 2
        assert err[0] == f"{path}:6: data.label: 'z' is not a column of data/{name} (columns: a, y)"


def test_a_model_class_path_with_a_typo(project, capsys):
    text = csv_job(model="{type: sklearn.ensemble.RandomForestClasifier}").replace(
        "framework: torch", "framework: sklearn"
    )
    path = job(project, text)
    code, err = validate(path, capsys)
    assert code == 2
    assert err[0].startswith(
        f"{path}:10: train.model.type: module 'sklearn.ensemble' has no 'RandomForestClasifier'; "
        "did you mean sklearn.ensemble.RandomForestClassifier"
    )


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "def build(shape, out, params):\n    return (\n",
            "nets.py:2: the module does not parse: '(' was never closed",
        ),
        (
            "import numpy\nimport no_such_package_here\n\ndef build(a, b, c):\n    pass\n",
            "nets.py:2: the module does not import: ModuleNotFoundError: No module named 'no_such_package_here'",
        ),
        (
            "def biuld(a, b, c):\n    pass\n",
            "nets.py has no function 'build'; did you mean 'nets:biuld'? (functions: biuld)",
        ),
    ],
)
def test_a_builder_module_that_does_not_import(project, capsys, source, expected):
    (project / "nets.py").write_text(source)
    path = job(project, csv_job(model='{type: custom, builder: "nets:build"}'))
    code, err = validate(path, capsys)
    assert code == 2
    assert err[0] == f"{path}:10: train.model.builder: {project / expected}"


def test_sqlite_urls_in_folders_that_do_not_exist(project, capsys):
    extra = """\
storage: {tracking: "sqlite:///state/mlflow.db", catalog: "sqlite:///state/catalog.db"}
"""
    text = csv_job(extra=extra).replace(
        "  dataset:", "  collect: {url: 'sqlite:///nowhere/w.db', table: wine_raw}\n  dataset:"
    )
    path = job(project, text)
    sql = job(
        project,
        csv_job().replace(
            "{format: csv, path: data/wine.csv}", "{format: sql, sql: {url: 'sqlite:///data/nosuch.db', table: wine}}"
        ),
        "sql.yaml",
    )
    code, err = validate(path, capsys)
    assert code == 2
    assert err == [
        f"{path}:5: data.collect.url: the folder '{project / 'nowhere'}' of SQLite database 'w.db' does not exist; "
        "create it, or correct the path (sqlite:///relative/path.db or sqlite:////absolute/path.db)",
        "1 problem in the job file",
    ]  # raymlp makes the folders of its own catalog and MLflow store
    code, err = validate(sql, capsys)
    assert code == 2
    assert err[0] == (
        f"{sql}:4: data.source.sql.url: SQLite database 'data/nosuch.db' does not exist "
        f"(working directory: {project}); a source is read, never created"
    )


def test_every_problem_at_once_and_run_refuses_before_anything_starts(project, capsys, monkeypatch):
    (project / "nets.py").write_text("def build(:\n")
    text = csv_job(
        label="quality",
        model='{type: custom, builder: "nets:build"}',
        preprocess="[{type: standard_scaler, columns: [acid]}]",
    )
    path = job(project, text + "predict: {input: data/new.csv, output: out.csv}\n")
    code, err = validate(path, capsys)
    assert code == 2
    assert [line.split(": ")[1] for line in err[:-1]] == [
        "data.label",
        "preprocess.0.columns.0",
        "train.model.builder",
        "predict.input",
    ]
    assert err[-1] == "4 problems in the job file"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # touching Ray would fail otherwise
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == err
    assert not (project / "home").exists(), "a refused run must not create state (no catalog, no version)"


def test_stages_check_only_what_they_read(project):
    path = job(
        project,
        csv_job(source="data/later.csv", model="{type: sklearn.nope.Nope}").replace(
            "framework: torch", "framework: sklearn"
        ),
    )
    loaded = load_job(path)
    assert [key for key, _ in check_inputs(loaded, ["convert"])] == [("data", "source", "path")]
    assert [key for key, _ in check_inputs(loaded, ["train"])] == [
        ("train", "model", "type")
    ]  # reads the catalog's version


def test_paths_from_env_and_urls_are_left_to_the_stage(project, monkeypatch):
    monkeypatch.setenv("DATA_DIR", "/nowhere/at/all")
    for source in ("${DATA_DIR}/wine.csv", "s3://bucket/wine.csv"):
        assert check_inputs(load_job(job(project, csv_job(source=f'"{source}"')))) == []


def test_predict_input_that_does_not_exist_is_refused_before_ray(project, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    code = main(["predict", "--model", "wine@champion", "--input", "data/new*.csv", "--output", "out.csv"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --input 'data/new*.csv': matches no files (working directory: {os.getcwd()})"
    )
    assert not (project / "home").exists()
