"""Preprocessing steps fitted in the driver give the statistics Ray Data's own fit gives."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

STEPS = [
    {"type": "standard_scaler"},
    {"type": "min_max_scaler"},
    {"type": "max_abs_scaler"},
    {"type": "robust_scaler"},
    {"type": "simple_imputer", "strategy": "mean"},
]


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "a": rng.normal(5.0, 2.0, 5000),
            "b": rng.integers(-40, 40, 5000).astype(float),
            "c": rng.exponential(3.0, 5000),
        }
    )
    frame.loc[rng.choice(5000, 400, replace=False), "c"] = np.nan  # nulls are skipped by every aggregator
    frame.loc[:, "empty"] = np.nan  # a column with no value at all
    return frame


def _same(left, right, tolerance: float) -> bool:
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(_same(x, y, tolerance) for x, y in zip(left, right))
    if left is None or right is None:
        return left is None and right is None
    return math.isclose(left, right, rel_tol=tolerance, abs_tol=tolerance) or (math.isnan(left) and math.isnan(right))


@pytest.mark.parametrize("spec", STEPS, ids=[step["type"] for step in STEPS])
def test_a_step_fitted_in_memory_has_ray_datas_statistics_and_output(ray_4_cpus, spec):
    import ray.data
    from pydantic import TypeAdapter

    from raymlp.config.schema import PreprocessStep
    from raymlp.data.preprocess import build_step, fit_preprocessor

    frame = _frame()
    if spec["type"] == "simple_imputer":  # a column without a single value has nothing to fill with
        frame = frame.drop(columns="empty")
    step = TypeAdapter(PreprocessStep).validate_python(spec)
    columns = list(frame.columns)
    chain = fit_preprocessor([step], frame, {name: "float" for name in columns})
    in_memory = chain.preprocessors[0]
    on_ray = build_step(step, columns).fit(ray.data.from_pandas(frame))

    # The robust scaler's quantiles come from a randomised sketch (KLL, rank error about 0.3% at Ray's
    # default precision): two fits on Ray Data differ as much. The other statistics are exact.
    tolerance = 1e-2 if spec["type"] == "robust_scaler" else 1e-12
    assert in_memory.stats_.keys() == on_ray.stats_.keys() and in_memory.stats_
    for key, value in on_ray.stats_.items():
        assert _same(in_memory.stats_[key], value, tolerance), (key, in_memory.stats_[key], value)
    pd.testing.assert_frame_equal(
        in_memory.transform_batch(frame), on_ray.transform_batch(frame), rtol=tolerance, atol=tolerance
    )


def test_steps_fitted_on_ray_data_still_work_beside_in_memory_ones(ray_4_cpus):
    from pydantic import TypeAdapter

    from raymlp.config.schema import PreprocessStep
    from raymlp.data.preprocess import fit_preprocessor

    frame = pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0], "colour": ["red", "blue", "red", None]})
    steps = [
        TypeAdapter(PreprocessStep).validate_python(spec)
        for spec in (
            {"type": "simple_imputer", "strategy": "most_frequent", "columns": ["colour"]},
            {"type": "one_hot_encoder", "columns": ["colour"]},
            {"type": "standard_scaler", "columns": ["x"]},
        )
    ]
    chain = fit_preprocessor(steps, frame, {"x": "float", "colour": "string"})
    out = chain.transform_batch(frame)
    assert [list(cell) for cell in out["colour"]] == [
        [0, 1],
        [1, 0],
        [0, 1],
        [0, 1],
    ]  # blue, red; the missing colour became red
    assert out["x"].round(6).tolist()[:2] == [
        round((1 - 7 / 3) / np.std([1.0, 2.0, 4.0]), 6),
        round((2 - 7 / 3) / np.std([1.0, 2.0, 4.0]), 6),
    ]
