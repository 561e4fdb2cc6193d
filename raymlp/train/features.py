"""Turning preprocessed rows into the numeric matrix a model sees (same code offline and online)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from raymlp.errors import UsageError

FEATURES_COLUMN = "__features__"
LABEL_COLUMN = "__label__"
_FEW_LABEL_VALUES = 50


def feature_matrix(frame: pd.DataFrame | pa.Table, columns: list[str]) -> np.ndarray:
    """float32 matrix of `columns`; vector cells (one-hot encodings) are spread over several columns."""
    parts = []
    for column in columns:
        if isinstance(frame, pa.Table):
            cells = frame.column(column)
            if pa.types.is_floating(cells.type):  # nulls become NaN, as below
                parts.append(cells.to_numpy().astype(np.float32, copy=False).reshape(-1, 1))
                continue
            values = cells.to_pandas()
        else:
            values = frame[column]
        if values.dtype == object and len(values) and isinstance(values.iloc[0], (np.ndarray, list)):
            parts.append(np.stack([np.asarray(cell, dtype=np.float32) for cell in values]))
            continue
        try:
            parts.append(values.to_numpy(dtype=np.float32, na_value=np.nan).reshape(-1, 1))
        except (TypeError, ValueError):
            raise UsageError(
                f"feature '{column}' is not numeric after preprocessing (e.g. {values.iloc[0]!r}); "
                "add a one_hot_encoder or ordinal_encoder step for it"
            ) from None
    if not parts:
        return np.zeros((frame.num_rows if isinstance(frame, pa.Table) else len(frame), 0), dtype=np.float32)
    return np.hstack(parts).astype(np.float32, copy=False)


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
