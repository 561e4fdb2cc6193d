"""Turning preprocessed rows into the numeric matrix a model sees (the same code in training, batch
predict and Serve, so offline and online features are the same)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from raymlp.errors import UsageError


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
