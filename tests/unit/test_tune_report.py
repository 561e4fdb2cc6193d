"""The sweep's HTML report, from a results file as the tune stage writes it."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from raymlp.tune.report import ordered_trials, write_report


def _results() -> dict:
    def row(trial, lr, layers, metric, state, epochs):
        return {
            "trial": trial,
            "params": {"train.optimizer.lr": lr, "train.model.hidden_layers": layers},
            "metric": metric,
            "state": state,
            "epochs": epochs,
            "error": None,
            "mlflow_run_id": f"run-{trial}",
        }

    trials = [
        row("a1", 0.001, [8], 0.71, "stopped early", 1),
        row("b2", 0.01, [16, 8], 0.93, "finished", 4),
        row("c3", 0.1, [8], 0.88, "finished", 4),
        row("d4", 0.05, [16, 8], None, "error", 0),
    ]
    trials[3]["error"] = "WorkFailed: <the fit> ran out of memory"
    return {
        "job": "wine-<torch>",
        "run_id": "r1",
        "mlflow_run_id": "p1",
        "metric": "val_accuracy",
        "mode": "max",
        "seconds": 12.5,
        "best": trials[1],
        "trials": trials,
    }


def test_the_report_plots_the_metric_against_each_setting_and_the_best_curves(tmp_path):
    results = _results()
    space = {
        "train.optimizer.lr": SimpleNamespace(loguniform=(0.0001, 0.1)),
        "train.model.hidden_layers": SimpleNamespace(loguniform=None),
    }
    curves = {"a1": [(1, 0.71)], "b2": [(1, 0.6), (2, 0.8), (3, 0.9), (4, 0.93)], "c3": [(1, 0.5), (4, 0.88)]}

    path = write_report(results, curves, space, tmp_path / "tune_report.html")

    page = Path(path).read_text()
    assert page.count("<svg") == 3  # one plot per setting, one of the learning curves
    assert "train.optimizer.lr" in page and "train.model.hidden_layers" in page
    assert "best trial b2: val_accuracy 0.9300" in page
    assert "wine-&lt;torch&gt;" in page and "&lt;the fit&gt;" in page  # names are escaped, never markup
    rows = re.findall(r"<tr><td>(\w+)</td>", page)
    assert rows == ["b2", "c3", "a1", "d4"]  # best first, a trial without a metric last
    assert not list(tmp_path.glob(".*.tmp"))


def test_trials_are_ordered_by_the_sweeps_mode():
    results = _results()
    assert [row["trial"] for row in ordered_trials(results)] == ["b2", "c3", "a1", "d4"]
    results["mode"] = "min"
    assert [row["trial"] for row in ordered_trials(results)] == ["a1", "c3", "b2", "d4"]
