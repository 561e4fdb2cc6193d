"""How a package's model is loaded and scored, one module per framework (`<framework>_format`).

Every format module implements `ModelFormat`; `raymlp.frameworks` names each framework's module,
which is imported on first use (torch, TensorFlow and XGBoost stay out of a process that does not
load their models). Training writes the files these modules read (`raymlp.train.*_backend` import
the file names from here).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from raymlp.errors import UsageError
from raymlp.frameworks import FRAMEWORKS


class ModelFormat(Protocol):
    """What a package needs of a framework to predict."""

    def load_for_inference(self, package_dir: Path, model_spec: dict[str, Any]) -> Any:
        """The trained model of a package (its `model/` folder holds the weights) ready to score."""

    def predict_scores(self, model: Any, matrix: np.ndarray) -> np.ndarray:
        """Scores for a float32 [n, input_dim] matrix: classification [n, classes] logits or
        log-probabilities per class code; regression [n] or [n, 1] standardised values."""

    def pip_requirements(self) -> list[str]:
        """The framework's packages the MLflow pyfunc model needs, pinned to this environment's versions."""


def model_format(framework: str) -> ModelFormat:
    """The format module of a framework, imported on first use."""
    row = FRAMEWORKS.get(framework)
    if row is None:
        raise UsageError(f"train.framework: no backend for '{framework}'; available: {', '.join(FRAMEWORKS)}")
    return cast(ModelFormat, importlib.import_module(row.format_module))
