"""`FunctionTransform`: a registered module's function as a Ray Data preprocessor (imports Ray; see modules.py)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from ray.data.preprocessor import Preprocessor

from raymlp.config.schema import MODULE_STEP_TYPES

from .modules import apply_step, module_function


class FunctionTransform(Preprocessor):
    """A function or dask step: carries its module's exact source and sha256, so it pickles into a package.

    Nothing is fitted; Ray Data's `Chain` applies it with `map_batches` on datasets and directly on
    pandas batches in `transform_batch` (batch predict, Serve).
    """

    _is_fittable = False

    def __init__(self, *, kind: str, module: str, version: int, sha256: str, source: str, function: str):
        super().__init__()
        if kind not in MODULE_STEP_TYPES:
            raise ValueError(f"kind must be one of {', '.join(MODULE_STEP_TYPES)}, got {kind!r}")
        self.kind = kind
        self.module = module
        self.version = version
        self.sha256 = sha256
        self.source = source
        self.function = function

    @property
    def ref(self) -> str:
        """MODULE@VERSION:FUNCTION, pinned to the version it runs."""
        return f"{self.module}@{self.version}:{self.function}"

    def _transform_pandas(self, df: pd.DataFrame) -> pd.DataFrame:
        function = module_function(self.module, self.version, self.sha256, self.source, self.function)
        return apply_step(self.kind, self.ref, function, df)

    def describe(self) -> dict[str, Any]:
        """What the package description says about this step."""
        return {"type": self.kind, "ref": self.ref, "sha256": self.sha256}

    def __repr__(self) -> str:
        return f"FunctionTransform({self.kind} {self.ref}, sha256={self.sha256[:12]})"
