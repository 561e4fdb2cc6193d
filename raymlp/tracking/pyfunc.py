"""The model package as an MLflow pyfunc model, so `mlflow models predict` works on it."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc


class RaymlpPackageModel(mlflow.pyfunc.PythonModel):
    """Loads the raymlp package shipped as the artifact 'package' and predicts with it."""

    def load_context(self, context: Any) -> None:
        from raymlp.train.package import load_package

        self.package = load_package(context.artifacts["package"])

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.package.predict(frame)
