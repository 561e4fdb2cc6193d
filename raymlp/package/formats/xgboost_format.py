"""An XGBoost booster in a package: `model/model.ubj`, with its objective and number of classes as
booster attributes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..layout import MODEL_DIR

MODEL_FILE = "model.ubj"
#: Booster attributes the package's model carries: its objective and number of classes (1 for binary and regression).
OBJECTIVE_ATTR, CLASSES_ATTR = "raymlp_objective", "raymlp_classes"


def as_scores(raw: np.ndarray, objective: str, classes: int) -> np.ndarray:
    """Raw booster margins as the contract's scores: [n, classes] for classifiers (binary as
    [0, logit], whose softmax is [1-p, p]); [n] values for regression."""
    raw = np.asarray(raw, dtype=np.float64)
    if objective == "binary:logistic":
        logit = raw.reshape(-1)
        return np.column_stack([np.zeros_like(logit), logit])
    if objective.startswith("multi:"):
        return raw.reshape(-1, classes)
    return raw.reshape(-1)


def load_for_inference(package_dir: Path, model_spec: dict[str, Any]) -> Any:
    """The package's booster (`model/model.ubj`), predicting on CPU."""
    import xgboost

    booster = xgboost.Booster(model_file=str(Path(package_dir) / MODEL_DIR / MODEL_FILE))
    booster.set_param({"device": "cpu", "nthread": max(1, min(4, os.cpu_count() or 1))})
    if booster.attr(OBJECTIVE_ATTR) is None:  # a booster saved elsewhere: what its config says
        learner = json.loads(booster.save_config())["learner"]
        booster.set_attr(
            **{
                OBJECTIVE_ATTR: learner["objective"]["name"],
                CLASSES_ATTR: str(max(1, int(learner["learner_model_param"]["num_class"]))),
            }
        )
    return booster


def predict_scores(booster: Any, matrix: np.ndarray) -> np.ndarray:
    """[n, classes] margins for classifiers (binary as [0, logit], whose softmax is [1-p, p]);
    [n] standardised values for regression."""
    objective, classes = booster.attr(OBJECTIVE_ATTR) or "", int(booster.attr(CLASSES_ATTR) or 1)
    matrix = np.asarray(matrix, dtype=np.float32)
    raw = booster.inplace_predict(matrix, predict_type="margin") if len(matrix) else np.zeros(0)
    return as_scores(raw, objective, classes)


def pip_requirements() -> list[str]:
    """xgboost, pinned to the version that trained the model."""
    from importlib.metadata import version

    return [f"xgboost=={version('xgboost')}"]
