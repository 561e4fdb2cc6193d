"""ModelPackage scoring in Arrow (`predict_table`, `records_table`) against Ray Data's own pandas path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from ray.data.preprocessors import Chain, StandardScaler
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from raymlp.errors import UsageError
from raymlp.package import ModelPackage
from raymlp.package.features import feature_matrix
from raymlp.package.formats import model_format

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def package() -> ModelPackage:
    data = load_iris()
    frame = pd.DataFrame(data.data, columns=NAMES)
    scaler = StandardScaler(columns=NAMES)
    scaler.stats_ = {
        **{f"mean({name})": float(frame[name].mean()) for name in NAMES},
        **{f"std({name})": float(frame[name].std(ddof=0)) for name in NAMES},
    }
    scaler._fitted = True
    classes = ["setosa", "versicolor", "virginica"]
    estimator = LogisticRegression(max_iter=500).fit(scaler.transform_batch(frame.copy()).to_numpy(), data.target)
    description = {
        "framework": "sklearn",
        "task": "classification",
        "classes": classes,
        "features": [{"name": name, "type": "float"} for name in NAMES],
        "model": {"feature_columns": NAMES},
    }
    return ModelPackage(path=None, description=description, preprocessor=Chain(scaler), network=estimator)


def _reference(package: ModelPackage, frame: pd.DataFrame) -> np.ndarray:
    """Ray Data's pandas path, as training applies the chain."""
    transformed = package.preprocessor.transform_batch(frame[NAMES].astype("float64"))
    scores = model_format("sklearn").predict_scores(package.network, feature_matrix(transformed, NAMES))
    shifted = scores - scores.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def test_arrow_scoring_gives_ray_datas_pandas_answers_bit_for_bit(package):
    frame = pd.DataFrame(load_iris().data[::7], columns=NAMES)
    result = package.predict_table(pa.Table.from_pandas(frame, preserve_index=False))
    probabilities = np.column_stack([result.column(f"probability_{name}").to_numpy() for name in package.classes])
    expected = _reference(package, frame)
    assert np.array_equal(probabilities, expected)
    assert result.column("prediction").to_pylist() == [package.classes[i] for i in expected.argmax(axis=1)]


def test_records_dataframes_and_ints_score_alike(package):
    frame = pd.DataFrame(load_iris().data[:5], columns=NAMES)
    records = frame.to_dict("records")
    from_records = package.predict_table(package.records_table(records)).to_pandas()
    as_ints = frame.round().astype("int64")
    as_ints.index = [10, 11, 12, 13, 14]
    from_frame = package.predict(frame)
    pd.testing.assert_frame_equal(from_records, from_frame)
    from_int_frame = package.predict(as_ints)
    assert list(from_int_frame.index) == [10, 11, 12, 13, 14]  # rows keep their keys
    expected = package.predict_table(package.records_table(as_ints.astype("float64").to_dict("records"))).to_pandas()
    assert np.array_equal(from_int_frame.to_numpy(), expected.to_numpy())


def test_numbers_given_as_text_are_read_and_missing_features_are_named(package):
    frame = pd.DataFrame(load_iris().data[:3], columns=NAMES)
    as_text = frame.astype(str)
    assert np.allclose(
        package.predict(as_text).iloc[:, 1:].to_numpy(float), package.predict(frame).iloc[:, 1:].to_numpy(float)
    )
    with pytest.raises(UsageError, match="input lacks feature columns: petal_width"):
        package.predict_table(pa.Table.from_pandas(frame.drop(columns=["petal_width"])))
