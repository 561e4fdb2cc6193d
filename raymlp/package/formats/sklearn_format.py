"""A scikit-learn estimator in a package: `model/estimator.pkl` (joblib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..layout import MODEL_DIR

ESTIMATOR_FILE = "estimator.pkl"

#: Probability given to a class the estimator never saw, and the floor of every probability, so
#: log-probabilities stay finite (the same floor as `raymlp.train.metrics.classification_metrics`).
PROBABILITY_FLOOR = 1e-15

#: Attribute `load_for_inference` sets on a loaded estimator: the number of classes of the label,
#: which `predict_scores` needs when the estimator saw fewer (not saved in `estimator.pkl`).
OUTPUT_DIM_ATTRIBUTE = "raymlp_output_dim"


def predict_scores(estimator: Any, matrix: np.ndarray, output_dim: int | None = None) -> np.ndarray:
    """Classification: [n, output_dim] log-probabilities in class-code order (a class the estimator
    never saw gets PROBABILITY_FLOOR); regression: [n] standardised predictions."""
    if not hasattr(estimator, "classes_"):  # a regressor
        return np.asarray(estimator.predict(matrix), dtype=np.float64).reshape(-1)
    probabilities = np.asarray(estimator.predict_proba(matrix), dtype=np.float64)
    codes = np.asarray(estimator.classes_).astype(np.int64)
    width = output_dim or getattr(estimator, OUTPUT_DIM_ATTRIBUTE, None) or int(codes.max()) + 1
    scores = np.full((len(probabilities), width), np.log(PROBABILITY_FLOOR))
    scores[:, codes] = np.log(np.clip(probabilities, PROBABILITY_FLOOR, 1.0))
    return scores


def load_for_inference(package_dir: Path, model_spec: dict[str, Any]) -> Any:
    """The fitted estimator of a package (`model/estimator.pkl`), told the label's number of classes."""
    import joblib

    estimator = joblib.load(Path(package_dir) / MODEL_DIR / ESTIMATOR_FILE)
    if hasattr(estimator, "classes_") and model_spec.get("output_dim"):
        setattr(estimator, OUTPUT_DIM_ATTRIBUTE, int(model_spec["output_dim"]))
    return estimator


def pip_requirements() -> list[str]:
    """scikit-learn and what its pickled estimators need, pinned to this environment's versions."""
    from importlib.metadata import version

    return [
        f"scikit-learn=={version('scikit-learn')}",
        f"joblib=={version('joblib')}",
        f"numpy=={version('numpy')}",
        f"scipy=={version('scipy')}",
    ]
