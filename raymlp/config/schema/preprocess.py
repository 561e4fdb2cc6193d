"""The `preprocess` section: built-in steps and steps from registered modules."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from .base import Section

ColumnList = list[Annotated[str, Field(min_length=1)]]


class _ColumnsStep(Section):
    columns: ColumnList | None = Field(
        default=None,
        min_length=1,
        description="Columns to transform. Default: every numeric column at this point of the chain "
        "(the numeric features, plus columns earlier function steps made, minus those they dropped).",
    )


class StandardScalerStep(_ColumnsStep):
    type: Literal["standard_scaler"] = Field(description="Scale to zero mean and unit variance.")


class MinMaxScalerStep(_ColumnsStep):
    type: Literal["min_max_scaler"] = Field(description="Scale into [0, 1].")


class MaxAbsScalerStep(_ColumnsStep):
    type: Literal["max_abs_scaler"] = Field(description="Scale by the largest absolute value.")


class RobustScalerStep(_ColumnsStep):
    type: Literal["robust_scaler"] = Field(description="Scale by median and interquartile range.")


class OneHotEncoderStep(Section):
    type: Literal["one_hot_encoder"] = Field(description="One column per category.")
    columns: ColumnList = Field(min_length=1, description="Categorical columns to encode.")
    max_categories: int | None = Field(default=None, ge=1, le=100_000, description="Keep only the most frequent.")


class OrdinalEncoderStep(Section):
    type: Literal["ordinal_encoder"] = Field(description="Categories to integers.")
    columns: ColumnList = Field(min_length=1, description="Categorical columns to encode.")


class SimpleImputerStep(_ColumnsStep):
    type: Literal["simple_imputer"] = Field(description="Fill missing values.")
    strategy: Literal["mean", "most_frequent", "constant"] = Field(default="mean", description="How to fill.")
    fill_value: float | str | None = Field(default=None, description="The value for strategy 'constant'.")

    @model_validator(mode="after")
    def _constant_needs_value(self) -> SimpleImputerStep:
        if self.strategy == "constant" and self.fill_value is None:
            raise ValueError("strategy 'constant' needs fill_value")
        return self


#: A registered module's name: a Python identifier, so `MODULE:FUNCTION` reads as it does in Python.
MODULE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
#: `MODULE:FUNCTION` (the module's latest version when training starts) or `MODULE@VERSION:FUNCTION`.
FUNCTION_REF_PATTERN = (
    r"^(?P<module>[A-Za-z_][A-Za-z0-9_]{0,99})(?:@(?P<version>[1-9][0-9]{0,8}))?:(?P<function>[A-Za-z_][A-Za-z0-9_]*)$"
)


def _check_function_ref(value: str) -> str:
    if not re.match(FUNCTION_REF_PATTERN, value):
        raise ValueError(
            f"'{value}' is not MODULE:FUNCTION or MODULE@VERSION:FUNCTION (MODULE and FUNCTION are Python "
            'names, VERSION a number), e.g. "transforms:add_ratios" or "transforms@2:add_ratios"'
        )
    return value


FunctionRef = Annotated[
    str, AfterValidator(_check_function_ref), Field(json_schema_extra={"pattern": FUNCTION_REF_PATTERN})
]


class FunctionStep(Section):
    type: Literal["function"] = Field(
        description="A function of a registered preprocessing module (`raymlp data modules add`): it takes a "
        "pandas DataFrame batch of feature columns and returns a DataFrame with one row per input row, in order."
    )
    ref: FunctionRef = Field(
        description="MODULE:FUNCTION (the module's latest version when training starts) or "
        "MODULE@VERSION:FUNCTION (pinned). The model package keeps the exact source either way."
    )


class DaskStep(Section):
    type: Literal["dask"] = Field(
        description="A function of a registered module that takes and returns a dask DataFrame; each batch is "
        "handed to it as a one-partition dask frame and computed on Ray (ray.util.dask), in training and serving."
    )
    ref: FunctionRef = Field(
        description="MODULE:FUNCTION (the module's latest version when training starts) or "
        "MODULE@VERSION:FUNCTION (pinned)."
    )


PreprocessStep = Annotated[
    StandardScalerStep
    | MinMaxScalerStep
    | MaxAbsScalerStep
    | RobustScalerStep
    | OneHotEncoderStep
    | OrdinalEncoderStep
    | SimpleImputerStep
    | FunctionStep
    | DaskStep,
    Field(discriminator="type"),
]

#: Step types whose code comes from a registered module.
MODULE_STEP_TYPES = ("function", "dask")
