"""Traces of failed runs (issue 18, section 6): the same rows are not published twice, a run that fails
publishes nothing new, and `data rm` / `models rm` clean up. Convert does not start Ray."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from raymlp.catalog import Catalog
from raymlp.cli import main

JOB = """\
version: 1
name: wine
data:
  source: {format: csv, path: data/wine.csv}
  dataset: {name: wine}
  label: target
register: {model: wine-clf}
train: {framework: sklearn, model: {type: sklearn.linear_model.LogisticRegression}}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    write_rows(tmp_path, 10)
    (tmp_path / "job.yaml").write_text(textwrap.dedent(JOB))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYMLP_HOME", str(tmp_path / "home"))
    return tmp_path


def write_rows(folder: Path, rows: int) -> None:
    (folder / "data" / "wine.csv").write_text(
        "alcohol,target\n" + "".join(f"{12 + i / 10},class_{i % 2}\n" for i in range(rows))
    )


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def versions(project: Path) -> list[tuple[str, int]]:
    with Catalog(f"sqlite:///{project / 'home' / 'catalog.db'}") as catalog:
        return [(record.name, record.version) for record in catalog.list_dataset_versions()]


def test_converting_the_same_rows_again_reuses_the_version(project, capsys):
    assert cli(capsys, "data", "convert", "job.yaml")[0] == 0
    manifest = project / "home" / "datasets" / "wine" / "v1" / "manifest.json"
    before = manifest.read_bytes()
    code, out, err = cli(capsys, "data", "convert", "job.yaml", "--json")
    assert code == 0
    assert json.loads(out)["dataset"] == "wine@1" and json.loads(out)["reused"] is True
    assert "(reused: the same rows as the latest version, so nothing new was published)" in err
    code, out, _ = cli(capsys, "data", "convert", "job.yaml")
    assert out.strip().endswith("(reused: the latest version has these rows; nothing new published)")
    assert versions(project) == [("wine", 1)]
    assert manifest.read_bytes() == before
    assert sorted(path.name for path in manifest.parent.parent.iterdir()) == ["v1"]  # no staging left behind
    write_rows(project, 11)
    code, out, _ = cli(capsys, "data", "convert", "job.yaml")
    assert out.startswith("wine@2: 11 rows") and "reused" not in out


def test_a_run_that_fails_publishes_nothing_new(project, capsys):
    # register without train fails after convert published; no Ray is needed to get there
    code, _, err = cli(capsys, "run", "job.yaml", "--only", "convert,register")
    assert code == 2
    assert "withdrew wine@1: the run failed before anything used it" in err
    assert versions(project) == []
    assert not (project / "home" / "datasets" / "wine" / "v1").exists()
    code, out, _ = cli(capsys, "data", "convert", "job.yaml")
    assert code == 0 and out.startswith("wine@1: 10 rows")


def test_data_rm_refuses_a_version_models_use_unless_forced(project, capsys):
    cli(capsys, "data", "convert", "job.yaml")
    write_rows(project, 12)
    cli(capsys, "data", "convert", "job.yaml")
    with Catalog(f"sqlite:///{project / 'home' / 'catalog.db'}") as catalog:
        catalog.record_model_version("wine-clf", 3, None, None, "wine", 2, None, None, "sklearn", {})
    code, _, err = cli(capsys, "data", "rm", "wine@2")
    assert code == 2
    assert err.strip() == (
        "error: wine@2 is the training data of model wine-clf:3; remove those first "
        "(raymlp models rm), or remove it anyway with --force"
    )
    assert versions(project) == [("wine", 1), ("wine", 2)]
    code, out, _ = cli(capsys, "data", "rm", "wine@1")
    folder = project / "home" / "datasets" / "wine" / "v1"
    assert code == 0
    assert out.startswith("removed wine@1: 10 rows, 2 files (") and out.rstrip().endswith(
        f"from {folder}, and its catalog entry"
    )
    assert [path.name for path in folder.iterdir()] == ["REMOVED.json"]
    code, out, _ = cli(capsys, "data", "rm", "wine@2", "--force", "--json")
    assert code == 0 and json.loads(out)["models"] == ["wine-clf:3"]
    assert versions(project) == []
    write_rows(project, 13)
    code, out, _ = cli(capsys, "data", "convert", "job.yaml")
    assert out.startswith("wine@3: 13 rows"), "a removed version's number is not given to other rows"
    code, _, err = cli(capsys, "data", "rm", "wine@1")
    assert code != 0 and "has no version 1" in err  # gone already: said, not a crash


def test_models_rm_deletes_a_registry_version_but_not_one_an_alias_holds(project, capsys):
    from raymlp.storage import resolve_storage
    from raymlp.tracking import Tracker

    storage = resolve_storage(None)
    tracker = Tracker(storage.tracking_uri, Path(storage.root))
    tracker.client.create_registered_model("wine-clf")
    for _ in range(2):
        tracker.client.create_model_version("wine-clf", f"file://{project}/nowhere")
    tracker.set_alias("wine-clf", "champion", 1)
    code, _, err = cli(capsys, "models", "rm", "wine-clf:1")
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "error: wine-clf:1 is what wine-clf@champion points at; move the alias first "
        "(raymlp models promote wine-clf:VERSION --alias champion), or remove it anyway with --force"
    )
    code, out, _ = cli(capsys, "models", "rm", "wine-clf:2")
    assert code == 0 and out.startswith("removed wine-clf:2 from the registry;")
    assert cli(capsys, "models", "rm", "wine-clf:1", "--force")[0] == 0
    assert [int(v.version) for v in tracker.client.search_model_versions("name = 'wine-clf'")] == []


def test_a_csv_with_only_its_header_is_said_so_and_makes_no_version(project, capsys):
    (project / "data" / "wine.csv").write_text("alcohol,target\n")
    code, _, err = cli(capsys, "data", "convert", "job.yaml")
    assert code == 1
    assert err.strip() == (
        "error: dataset 'wine': the source has no rows (a CSV file with only its header, an empty "
        "table); no version was made"
    )
    assert versions(project) == []
