"""Stages run one at a time from the CLI, joined to the session's Ray."""

from __future__ import annotations

import pytest

from raymlp.catalog import Catalog

from .conftest import REPO, json_output, run_cli

pytestmark = [pytest.mark.integration]


def test_convert_then_train_then_promote(tmp_path, ray_4_cpus):
    env = {"RAYMLP_HOME": str(tmp_path / ".raymlp"), "RAY_ADDRESS": ray_4_cpus}
    job = str(REPO / "jobs" / "diabetes-regression.yaml")

    no_collect = run_cli("data", "collect", job, cwd=tmp_path, env=env)
    assert no_collect.returncode == 2 and "data.collect is not set" in no_collect.stderr

    converted = run_cli("data", "convert", job, "--json", cwd=tmp_path, env=env)
    assert converted.returncode == 0, converted.stderr[-3000:]
    assert json_output(converted)["dataset"] == "diabetes@1"

    wrong_label = run_cli("train", job, "--set", "data.label=outcome", cwd=tmp_path, env=env)
    assert wrong_label.returncode == 2
    assert "data.label: 'outcome' is not a column of diabetes@1" in wrong_label.stderr

    trained = run_cli(
        "train",
        job,
        "--set",
        "train.epochs=3",
        "--set",
        "register.require.test_r2=>= 0.99",
        "--json",
        cwd=tmp_path,
        env=env,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json_output(trained)
    assert summary["dataset"] == "diabetes@1" and list(summary["stages"]) == ["train", "register"]
    assert (summary["model_version"], summary["alias_moved"]) == (1, False)
    assert "using diabetes@1 from the catalog" in trained.stderr

    promoted = run_cli("models", "promote", "diabetes-regressor:1", "--alias", "champion", cwd=tmp_path, env=env)
    assert promoted.returncode == 0, promoted.stderr
    models = json_output(run_cli("models", "list", "--json", cwd=tmp_path, env=env))
    assert [(m["name"], m["version"], m["aliases"]) for m in models] == [("diabetes-regressor", 1, ["champion"])]
    shown = json_output(run_cli("models", "show", "diabetes-regressor@champion", "--json", cwd=tmp_path, env=env))
    assert shown["task"] == "regression" and shown["lineage"]["dataset"]["name"] == "diabetes"
    kept = run_cli("data", "rm", "diabetes@1", cwd=tmp_path, env=env)  # the model's lineage keeps its data
    assert kept.returncode == 2 and "diabetes@1 is the training data of model diabetes-regressor:1" in kept.stderr

    with Catalog(f"sqlite:///{tmp_path / '.raymlp' / 'catalog.db'}") as catalog:
        runs = catalog.list_runs("diabetes-regression")
    assert [(run.stages, run.status) for run in runs] == [
        (["train", "register"], "succeeded"),
        (["train", "register"], "failed"),
        (["convert"], "succeeded"),
    ]
    assert "outcome" in runs[1].error
