"""The Python API on the session's Ray: a regression job straight from scikit-learn's data."""

from __future__ import annotations

import pytest

from raymlp import load_job, run_job
from raymlp.context import Reporter

from .conftest import REPO

pytestmark = [pytest.mark.integration]


def test_regression_job_trains_evaluates_and_gates_the_alias(ray_4_cpus, raymlp_home):
    job = load_job(REPO / "jobs" / "diabetes-regression.yaml", ["train.epochs=8", "register.require.test_r2=>= 0.99"])
    summary = run_job(job, reporter=Reporter(quiet=True))
    assert summary.dataset == "diabetes@1" and summary.dataset_rows == 442
    assert {"val_rmse", "val_mae", "val_r2", "test_rmse", "test_mae", "test_r2", "train_loss"} <= set(summary.metrics)
    assert summary.metrics["test_r2"] > 0.0
    # Version 1 is registered, but the gate is out of reach: the alias must not move.
    assert (summary.model_version, summary.alias_moved) == (1, False)

    from raymlp.storage import resolve_storage
    from raymlp.tracking import ModelRef, Tracker

    storage = resolve_storage()
    tracker = Tracker(storage.tracking_uri, raymlp_home)
    with pytest.raises(
        Exception, match=r"model diabetes-regressor has no alias 'champion' \(aliases: none; versions: 1\)"
    ):
        tracker.resolve(ModelRef("diabetes-regressor", alias="champion"))
    assert tracker.resolve(ModelRef("diabetes-regressor"))[0] == 1
