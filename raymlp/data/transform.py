"""Running a registered module's function as a preprocessing step (imports Ray; see modules.py).

`FunctionTransform` is the Ray Data preprocessor a function or dask step becomes; it pickles into
model packages by this module's path, so the class stays here. The module is built from the stored
source once per process (`module_function`) and each batch goes through `apply_step`.
"""

from __future__ import annotations

import threading
import traceback
import types
from collections.abc import Callable
from typing import Any

import pandas as pd
from ray.data.preprocessor import Preprocessor

from raymlp.config.schema import MODULE_STEP_TYPES
from raymlp.errors import WorkFailed

from .modules import module_from_source, parse_ref, source_sha256


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


_LOADED: dict[tuple[str, str], types.ModuleType] = {}
_LOADED_LOCK = threading.Lock()


def _loaded_module(name: str, version: int, sha256: str, source: str) -> types.ModuleType:
    """The module built from a stored source, once per process and sha256; refuses a source whose hash differs."""
    key = (name, sha256)
    with _LOADED_LOCK:
        module = _LOADED.get(key)
        if module is None:
            actual = source_sha256(source)
            if actual != sha256:
                raise WorkFailed(
                    f"module {name}@{version}: its source has sha256 {actual}, not the recorded {sha256}; "
                    "the copy was changed after it was registered"
                )
            module = module_from_source(name, source, f"<raymlp module {name}@{version}>")
            _LOADED[key] = module
    return module


def function_transform(kind: str, ref: str, record: Any) -> Any:
    """A fitted-state-free Ray Data step for a job step of type `kind` ('function' or 'dask') and its module record."""
    return FunctionTransform(
        kind=kind,
        module=record.name,
        version=record.version,
        sha256=record.sha256,
        source=record.source,
        function=parse_ref(ref).function,
    )


def module_function(module: str, version: int, sha256: str, source: str, function: str) -> Callable[..., Any]:
    """The function `function` of a stored module source (built once per process)."""
    loaded = _loaded_module(module, version, sha256, source)
    found = getattr(loaded, function, None)
    if not callable(found):
        raise WorkFailed(f"module {module}@{version} defines no function '{function}'")
    return found


def apply_step(kind: str, ref: str, function: Callable[..., Any], df: pd.DataFrame) -> pd.DataFrame:
    """Run one module step on a pandas batch and check the result keeps the batch's rows."""
    if kind == "dask":
        result = _apply_dask(ref, function, df)
    else:
        try:
            result = function(df.copy())
        except Exception as error:
            raise WorkFailed(
                f"preprocess step {ref} failed on a batch of {len(df)} rows: "
                f"{type(error).__name__}: {error}{_where(error, ref)}"
            ) from error
    return _aligned(ref, df, result)


def _where(error: BaseException, ref: str) -> str:
    """' (MODULE@VERSION.py:LINE)': the last line of the step's module in the error's traceback (the
    package's copy is modules/MODULE@VERSION.py); '' when the error did not pass through it."""
    pinned = ref.rpartition(":")[0]
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename == f"<raymlp module {pinned}>" and frame.lineno
    ]
    return f" ({pinned}.py:{lines[-1]})" if lines else ""


def _apply_dask(ref: str, function: Callable[..., Any], df: pd.DataFrame) -> pd.DataFrame:
    import dask.dataframe as dd

    frame = dd.from_pandas(df.copy(), npartitions=1, sort=False)
    try:
        result = function(frame)
    except Exception as error:
        raise WorkFailed(
            f"dask step {ref} failed building its graph for a batch of {len(df)} rows: "
            f"{type(error).__name__}: {error}{_where(error, ref)}"
        ) from error
    if not isinstance(result, dd.DataFrame):
        raise WorkFailed(f"dask step {ref} returned {type(result).__name__}; it must return a dask DataFrame")
    try:
        return result.compute(**dask_compute_options())
    except Exception as error:
        raise WorkFailed(
            f"dask step {ref} failed on a batch of {len(df)} rows: {type(error).__name__}: {error}{_where(error, ref)}"
        ) from error


def dask_compute_options() -> dict[str, Any]:
    """How a dask step's graph is computed: as Ray tasks when this process is connected to Ray.

    The tasks take no CPU of their own: the batch's caller (a Ray Data worker, a Serve replica)
    waits for them with its CPU held, so asking for more could deadlock a full cluster. Outside
    Ray (a plain Python process loading a package) dask's synchronous scheduler runs the same graph.
    """
    import ray

    if not ray.is_initialized():
        return {"scheduler": "sync"}
    from ray.util.dask import ray_dask_get

    return {"scheduler": ray_dask_get, "ray_remote_args": {"num_cpus": 0}}


def _aligned(ref: str, df: pd.DataFrame, result: Any) -> pd.DataFrame:
    """`result` with the batch's index; WorkFailed when it is not one row per input row."""
    if not isinstance(result, pd.DataFrame):
        raise WorkFailed(
            f"preprocess step {ref} returned {type(result).__name__}; it must return a pandas "
            "DataFrame (one row per input row)"
        )
    if len(result) != len(df):
        raise WorkFailed(
            f"preprocess step {ref} returned {len(result)} rows for a batch of {len(df)}; a step "
            "must return one row per input row, in the same order (it cannot filter rows)"
        )
    if result.index.equals(df.index):
        return result
    if result.index.is_unique and df.index.is_unique and set(result.index) == set(df.index):
        return result.loc[df.index]  # reordered by the step: put rows back where they came from
    return result.set_axis(df.index, axis=0)  # a new index (reset_index): rows are taken in order
