"""Deterministic train / validation / test splits."""

from __future__ import annotations

import numpy as np
import pandas as pd

from raymlp.config.schema import SplitConfig
from raymlp.errors import UsageError


def split_frame(
    frame: pd.DataFrame, split: SplitConfig, stratify_by: pd.Series | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, validation, test) by the split fractions and seed; stratified when asked."""
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(frame))
    strata = stratify_by.to_numpy() if (split.stratify and stratify_by is not None) else None
    held_out = split.validation + split.test
    empty = frame.iloc[0:0]
    if held_out == 0:
        return frame, empty, empty

    def cut(indices: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        try:
            return train_test_split(
                indices,
                test_size=fraction,
                random_state=split.seed,
                stratify=None if strata is None else strata[indices],
            )
        except ValueError as error:
            raise UsageError(f"data.split: cannot split {len(indices)} rows that way: {error}") from None

    train, rest = cut(positions, held_out)
    if split.test == 0:
        validation, test = rest, np.array([], dtype=int)
    elif split.validation == 0:
        validation, test = np.array([], dtype=int), rest
    else:
        validation, test = cut(rest, split.test / held_out)
    return frame.iloc[np.sort(train)], frame.iloc[np.sort(validation)], frame.iloc[np.sort(test)]
