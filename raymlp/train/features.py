"""The training rows' columns and label handling (the model's feature matrix: `raymlp.package.features`)."""

from __future__ import annotations

import pandas as pd

FEATURES_COLUMN = "__features__"
LABEL_COLUMN = "__label__"
_FEW_LABEL_VALUES = 50


def infer_task(labels: pd.Series, requested: str) -> str:
    """classification or regression, from the request or the label's values."""
    if requested != "auto":
        return requested
    if pd.api.types.is_bool_dtype(labels) or not pd.api.types.is_numeric_dtype(labels):
        return "classification"
    if pd.api.types.is_integer_dtype(labels) and labels.nunique() <= _FEW_LABEL_VALUES:
        return "classification"
    return "regression"


def label_classes(labels: pd.Series) -> list:
    """The sorted distinct labels, as JSON-friendly Python values."""
    return sorted(labels.dropna().unique().tolist(), key=lambda value: (str(type(value)), value))
