"""How a sweep reads Tune's results: each trial's row and the epochs a stopped trial got through."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd

from raymlp.config.schema import SearchDimension
from raymlp.tune.stage import best_row, epoch_histories, trial_rows

SPACE = {"train.model.params.max_depth": SearchDimension(randint=(2, 16))}


def _result(trial: str, metrics: dict, frame: pd.DataFrame | None = None, error: Exception | None = None):
    return SimpleNamespace(
        metrics={"trial_id": trial, **metrics},
        config={"train.model.params.max_depth": 4},
        error=error,
        metrics_dataframe=frame,
        path=f"/tmp/{trial}",
    )


def test_light_full_stopped_and_failed_trials_each_get_their_state():
    grid = [
        _result(
            "a",
            {
                "val_accuracy": 0.9,
                "done": True,
                "light": True,
                "epochs": 1,
                "mlflow_run_id": "r1",
                "metrics_json": '{"val_accuracy": 0.9}',
            },
        ),
        _result(
            "b",
            {
                "val_accuracy": 0.95,
                "done": True,
                "raymlp_run_id": "c2",
                "epochs": 3,
                "mlflow_run_id": "r2",
                "metrics_json": '{"val_accuracy": 0.95, "test_accuracy": 0.93}',
            },
        ),
        _result("c", {"val_accuracy": 0.5, "epoch": 2}),
        _result("d", {}, error=RuntimeError("boom\nWorkFailed: the fit ran out of memory")),
    ]
    rows = trial_rows(grid, "val_accuracy", "max", SPACE)
    assert [(row["trial"], row["state"], row["epochs"]) for row in rows] == [
        ("a", "finished", 1),
        ("b", "finished", 3),
        ("c", "stopped early", 2),
        ("d", "error", 0),
    ]
    assert rows[3]["error"] == "WorkFailed: the fit ran out of memory"
    assert rows[1]["metrics"]["test_accuracy"] == 0.93
    assert best_row(rows, "max")["trial"] == "b"
    assert best_row(rows, "min")["trial"] == "a"  # only finished trials can be the best


def test_a_trials_epochs_are_read_from_its_tune_results():
    frame = pd.DataFrame(
        {
            "epoch": [1.0, 2.0, math.nan],
            "train_loss": [0.9, 0.7, math.nan],
            "val_accuracy": [0.6, 0.8, 0.8],
            "time_total_s": [1.0, 2.0, 3.0],
            "done": [False, False, True],
        }
    )
    histories = epoch_histories([_result("c", {}, frame), _result("e", {}, None)])
    assert histories == {
        "c": [
            {"epoch": 1.0, "train_loss": 0.9, "val_accuracy": 0.6},
            {"epoch": 2.0, "train_loss": 0.7, "val_accuracy": 0.8},
        ]
    }
