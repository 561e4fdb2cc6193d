"""Build and fit the job's preprocessing chain: Ray Data's preprocessors and registered module functions."""

from __future__ import annotations

from typing import Any

from raymlp.config.schema import MODULE_STEP_TYPES, PreprocessStep
from raymlp.errors import WorkFailed

_NUMERIC_KINDS = ("int", "float", "bool")


def build_step(step: PreprocessStep, columns: list[str], modules: dict[str, Any] | None = None) -> Any:
    """The (unfitted) Ray Data preprocessor of one job step; `columns` are used where the step names none."""
    from ray.data import preprocessors as rdp

    if step.type in MODULE_STEP_TYPES:
        from raymlp.data.modules import function_transform

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
        return rdp.SimpleImputer(columns, strategy=step.strategy, fill_value=step.fill_value)
    raise AssertionError(step.type)  # pragma: no cover - the schema admits no other type


def fit_preprocessor(
    steps: list[PreprocessStep], train: Any, feature_types: dict[str, str], modules: dict[str, Any] | None = None
) -> Any | None:
    """The job's chain fitted on `train` (a Ray Dataset of the feature columns), or None without steps.

    Fitted as Ray Data's `Chain.fit` does (each step on what the steps before it produced), one step
    at a time, so a step without `columns` that follows a function step takes the numeric columns
    present at that point (the function may have added or dropped some).
    """
    if not steps:
        return None
    from ray.data import preprocessors as rdp

    numeric = [name for name, kind in feature_types.items() if kind in _NUMERIC_KINDS]
    after_function = False
    fitted = []
    dataset = train
    for index, step in enumerate(steps):
        if after_function and step.type not in MODULE_STEP_TYPES and not getattr(step, "columns", None):
            numeric = _numeric_columns(dataset)
        built = build_step(step, numeric, modules)
        if after_function:
            _require_columns(index, step, dataset)
        if index < len(steps) - 1:
            dataset = built.fit_transform(dataset)
        else:
            built.fit(dataset)
        fitted.append(built)
        after_function = after_function or step.type in MODULE_STEP_TYPES
    return rdp.Chain(*fitted)


def _numeric_columns(dataset: Any) -> list[str]:
    schema = dataset.schema()
    return [name for name, kind in zip(schema.names, schema.types) if _kind_or_none(kind) in _NUMERIC_KINDS]


def _kind_or_none(arrow_type: Any) -> str | None:
    try:
        return column_kind(arrow_type)
    except (TypeError, AttributeError):
        return None


def _require_columns(index: int, step: PreprocessStep, dataset: Any) -> None:
    """After a function step, say which named columns are missing before Ray Data fails on them."""
    named = list(getattr(step, "columns", None) or [])
    if not named:
        return
    present = dataset.schema().names
    missing = [column for column in named if column not in present]
    if missing:
        raise WorkFailed(f"preprocess.{index} ({step.type}): no column {', '.join(map(repr, missing))} after the "
                         f"steps before it (columns there: {', '.join(present)})")


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
