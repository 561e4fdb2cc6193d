"""Build the job's preprocessing steps from Ray Data's preprocessors."""

from __future__ import annotations

from typing import Any

from raymlp.config.schema import PreprocessStep


def build_preprocessor(steps: list[PreprocessStep], feature_types: dict[str, str]) -> Any | None:
    """A Ray Data `Chain` of the steps (unfitted), or None when there are none."""
    if not steps:
        return None
    from ray.data import preprocessors as rdp

    numeric = [name for name, kind in feature_types.items() if kind in ("int", "float", "bool")]
    built = []
    for step in steps:
        columns = getattr(step, "columns", None) or numeric
        if step.type == "standard_scaler":
            built.append(rdp.StandardScaler(columns))
        elif step.type == "min_max_scaler":
            built.append(rdp.MinMaxScaler(columns))
        elif step.type == "max_abs_scaler":
            built.append(rdp.MaxAbsScaler(columns))
        elif step.type == "robust_scaler":
            built.append(rdp.RobustScaler(columns))
        elif step.type == "one_hot_encoder":
            limits = {column: step.max_categories for column in columns} if step.max_categories else None
            built.append(rdp.OneHotEncoder(columns, max_categories=limits))
        elif step.type == "ordinal_encoder":
            built.append(rdp.OrdinalEncoder(columns))
        elif step.type == "simple_imputer":
            built.append(rdp.SimpleImputer(columns, strategy=step.strategy, fill_value=step.fill_value))
        else:  # pragma: no cover - the schema admits no other type
            raise AssertionError(step.type)
    return rdp.Chain(*built)


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
