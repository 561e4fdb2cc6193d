"""The model package as an MLflow pyfunc model, so `mlflow models predict` works on it.

raymlp is not published on a package index, so the model carries raymlp's own code with it
(`mlflow.pyfunc.log_model(code_paths=[carried_code(...)])`: MLflow puts the copy on `sys.path`
before it unpickles this module's class) and its requirements name only published packages
(`raymlp.package.pip_requirements`). `mlflow models predict --env-manager virtualenv` can then
build the model's environment from the index alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd  # module level: MLflow resolves the type hints of `predict` in this module
from mlflow.pyfunc import PythonModel


class RaymlpPackageModel(PythonModel):
    """Loads the raymlp package shipped as the artifact 'package' and predicts with it."""

    def load_context(self, context: Any) -> None:
        from raymlp.package import load_package

        self.package = load_package(context.artifacts["package"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """`ModelPackage.predict` of the rows.

        The hint is `pd.DataFrame`, one MLflow accepts without inferring a schema (`Any` gave a
        warning at every log and load, none gave another at every predict). MLflow hands CSV and
        JSON input over as a DataFrame; anything else `pd.DataFrame` takes works too.
        """
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.package.predict(frame)


def carried_code(scratch: Path) -> Path:
    """A copy of the running raymlp's source folder under `scratch` (without byte-code caches), for
    `code_paths`: MLflow copies it into the model's `code/` folder."""
    target = Path(scratch) / "raymlp"
    shutil.copytree(
        Path(__file__).resolve().parents[1], target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    )
    return target
