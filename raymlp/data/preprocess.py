"""Build and fit the job's preprocessing chain: Ray Data's preprocessors and registered module functions."""

from __future__ import annotations

from typing import Any

import pandas as pd

from raymlp.config.schema import MODULE_STEP_TYPES, DaskStep, FunctionStep, PreprocessStep
from raymlp.errors import WorkFailed

_NUMERIC_KINDS = ("int", "float", "bool")


def build_step(step: PreprocessStep, columns: list[str], modules: dict[str, Any] | None = None) -> Any:
    """The (unfitted) Ray Data preprocessor of one job step; `columns` are used where the step names none."""
    from ray.data import preprocessors as rdp

    if step.type in MODULE_STEP_TYPES:
        from raymlp.data.transform import function_transform

        assert isinstance(step, (FunctionStep, DaskStep))  # the step types MODULE_STEP_TYPES names
        if not modules or step.ref not in modules:
            raise WorkFailed(f"preprocess step {step.ref}: its module was not resolved from the catalog")
        return function_transform(step.type, step.ref, modules[step.ref])
    columns = getattr(step, "columns", None) or columns
    if step.type == "standard_scaler":
        return rdp.StandardScaler(columns)
    if step.type == "min_max_scaler":
        return rdp.MinMaxScaler(columns)
    if step.type == "max_abs_scaler":
        return rdp.MaxAbsScaler(columns)
    if step.type == "robust_scaler":
        return rdp.RobustScaler(columns)
    if step.type == "one_hot_encoder":
        limits = {column: step.max_categories for column in columns} if step.max_categories else None
        return rdp.OneHotEncoder(columns, max_categories=limits)
    if step.type == "ordinal_encoder":
        return rdp.OrdinalEncoder(columns)
    if step.type == "simple_imputer":
        # Ray's stub says numbers.Number, which a float is at run time (mypy misses the ABC registration).
        return rdp.SimpleImputer(columns, strategy=step.strategy, fill_value=step.fill_value)  # type: ignore[arg-type]
    raise AssertionError(step.type)  # pragma: no cover - the schema admits no other type


def fit_preprocessor(
    steps: list[PreprocessStep],
    train: pd.DataFrame,
    feature_types: dict[str, str],
    modules: dict[str, Any] | None = None,
) -> Any | None:
    """The job's chain fitted on `train` (the feature columns of the train split), or None without steps.

    Fitted as Ray Data's `Chain.fit` does (each step on what the steps before it produced), one step
    at a time, so a step without `columns` that follows a function step takes the numeric columns
    present at that point (the function may have added or dropped some). Each step is Ray Data's own
    preprocessor; those whose statistics are aggregations over the rows (the scalers, the mean
    imputer) compute them here with Ray's own aggregators, the others on a Ray Dataset.
    """
    if not steps:
        return None
    from ray.data import preprocessors as rdp

    numeric = [name for name, kind in feature_types.items() if kind in _NUMERIC_KINDS]
    after_function = False
    fitted = []
    frame = train
    for index, step in enumerate(steps):
        if after_function and step.type not in MODULE_STEP_TYPES and not getattr(step, "columns", None):
            numeric = _numeric_columns(frame)
        built = build_step(step, numeric, modules)
        if after_function:
            _require_columns(index, step, frame)
        built.fit(InMemoryRows(frame) if _fits_in_memory(step) else _ray_dataset(frame))
        if index < len(steps) - 1:
            frame = built.transform_batch(frame)
        fitted.append(built)
        after_function = after_function or step.type in MODULE_STEP_TYPES
    return rdp.Chain(*fitted)


def _fits_in_memory(step: PreprocessStep) -> bool:
    """Whether Ray's preprocessor for `step` only aggregates over the rows (what `InMemoryRows` answers)."""
    if step.type == "simple_imputer":
        return step.strategy == "mean"
    return step.type in ("standard_scaler", "min_max_scaler", "max_abs_scaler", "robust_scaler")


def _ray_dataset(frame: pd.DataFrame) -> Any:
    import ray.data

    return ray.data.from_pandas(frame)


class InMemoryRows:
    """The part of a Ray Dataset that Ray's aggregating preprocessors use to fit, over a frame in this
    process: `aggregate(*aggs)` and `groupby(None).aggregate(*aggs)`, computed with the same
    aggregators (`aggregate_block` on the frame as one pandas block, as `from_pandas` makes it, then
    `finalize`), without a Ray Data execution. The driver holds the train split already; an
    execution costs several seconds of task start-up for what takes milliseconds here."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def aggregate(self, *aggregators: Any) -> dict[str, Any]:
        return self._table(aggregators).to_pylist()[0]

    def groupby(self, key: Any) -> _AllRows:
        if key is not None:
            raise NotImplementedError("InMemoryRows only aggregates over all rows")
        return _AllRows(self)

    def _table(self, aggregators: tuple[Any, ...]) -> Any:
        import pyarrow as pa

        return pa.table(
            {
                aggregator.name: [aggregator.finalize(aggregator.aggregate_block(self._frame))]
                for aggregator in aggregators
            }
        )


class _AllRows:
    def __init__(self, rows: InMemoryRows) -> None:
        self._rows = rows

    def aggregate(self, *aggregators: Any) -> _Aggregated:
        return _Aggregated(self._rows._table(aggregators))


class _Aggregated:
    def __init__(self, table: Any) -> None:
        self._table = table

    def to_arrow_refs(self) -> list[Any]:
        import ray

        return [ray.put(self._table)]

    def take(self, limit: int) -> list[dict[str, Any]]:
        return self._table.slice(0, limit).to_pylist()


def _numeric_columns(frame: pd.DataFrame) -> list[str]:
    import pyarrow as pa

    schema = pa.Schema.from_pandas(frame.head(0), preserve_index=False)
    return [name for name, kind in zip(schema.names, schema.types) if _kind_or_none(kind) in _NUMERIC_KINDS]


def _kind_or_none(arrow_type: Any) -> str | None:
    try:
        return column_kind(arrow_type)
    except (TypeError, AttributeError):
        return None


def _require_columns(index: int, step: PreprocessStep, frame: pd.DataFrame) -> None:
    """After a function step, say which named columns are missing before Ray Data fails on them."""
    named = list(getattr(step, "columns", None) or [])
    if not named:
        return
    present = list(frame.columns)
    missing = [column for column in named if column not in present]
    if missing:
        raise WorkFailed(
            f"preprocess.{index} ({step.type}): no column {', '.join(map(repr, missing))} after the "
            f"steps before it (columns there: {', '.join(present)})"
        )


def column_kind(arrow_type: Any) -> str:
    """The job-file type name (int, float, string, bool, date, datetime) of an Arrow type."""
    import pyarrow as pa

    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_timestamp(arrow_type):
        return "datetime"
    return "string"
