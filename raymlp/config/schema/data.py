"""The `data` section: source, collect, dataset, schema rules and split."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from raymlp.uris import checked_location

from .base import IDENTIFIER_PATTERN, Name, Section

_SHARD_KEY_HELP = (
    "Column whose MIN..MAX range is cut into `shards` equal-width key ranges read in parallel "
    "(integer, float, decimal, date or timestamp; rows with a NULL key are one more shard)."
)
_SHARDS_HELP = "Key ranges read in parallel, each on its own connection (needs shard_key when above 1)."


class _ShardedRead(Section):
    shard_key: str | None = Field(default=None, min_length=1, description=_SHARD_KEY_HELP)
    shards: int = Field(default=1, ge=1, le=64, description=_SHARDS_HELP)

    @model_validator(mode="after")
    def _shards_need_a_key(self) -> _ShardedRead:
        if self.shards > 1 and self.shard_key is None:
            raise ValueError(f"shards: {self.shards} needs shard_key: the numeric or date column whose range is split")
        return self


class SqlSource(_ShardedRead):
    url: str = Field(description="SQLAlchemy URL; put secrets in ${ENV} variables.", min_length=1)
    query: str | None = Field(default=None, description="A SELECT whose rows are the source.", min_length=1)
    table: str | None = Field(default=None, description="A table whose rows are the source.", min_length=1)

    @model_validator(mode="after")
    def _one_of_query_or_table(self) -> SqlSource:
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of 'query' or 'table'")
        return self


class SklearnSource(Section):
    name: Literal["iris", "wine", "breast_cancer", "digits", "diabetes"] = Field(
        description="A dataset shipped with scikit-learn."
    )


class SourceConfig(Section):
    format: Literal["csv", "parquet", "json", "images", "sql", "sklearn"] = Field(
        description="Kind of source. json means JSON lines; images means a folder with one subfolder of images per class."
    )
    path: str | list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        description="Files, globs or folders (csv, parquet, json, images), relative to the working directory, or "
        "objects in a bucket (s3://BUCKET/PREFIX/*.csv, a prefix, gs://...).",
    )
    sql: SqlSource | None = Field(default=None, description="Database source (format: sql).")
    sklearn: SklearnSource | None = Field(default=None, description="Shipped dataset (format: sklearn).")
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="CSV field delimiter.")

    @field_validator("path")
    @classmethod
    def _paths_or_uris(cls, value: str | list[str] | None) -> str | list[str] | None:
        for item in [value] if isinstance(value, str) else value or []:
            checked_location(item)
        return value

    @model_validator(mode="after")
    def _format_needs_its_fields(self) -> SourceConfig:
        needs = {"sql": "sql", "sklearn": "sklearn"}.get(self.format, "path")
        if getattr(self, needs) in (None, [], ""):
            raise ValueError(f"format '{self.format}' needs '{needs}'")
        for other in {"path", "sql", "sklearn"} - {needs}:
            if getattr(self, other) is not None:
                raise ValueError(f"format '{self.format}' does not use '{other}' (it reads '{needs}')")
        return self


class CollectConfig(_ShardedRead):
    """The table a source is collected into; `shard_key`/`shards` say how convert reads it back."""

    url: str = Field(description="SQLAlchemy URL of the database that receives the table.", min_length=1)
    table: str = Field(description="Target table name.", pattern=IDENTIFIER_PATTERN)
    mode: Literal["append", "replace", "fail"] = Field(
        default="fail", description="What to do when the table exists: append rows, replace it, or fail."
    )


class DatasetConfig(Section):
    name: Name = Field(description="Registered dataset name; each convert makes a new version.")
    description: str | None = Field(default=None, description="Free text shown by `raymlp data show`.")


class ColumnSpec(Section):
    type: Literal["int", "float", "string", "bool", "date", "datetime"] = Field(description="Column type.")
    nullable: bool = Field(default=True, description="Whether nulls are allowed.")
    min: float | None = Field(default=None, description="Smallest allowed value (numbers).")
    max: float | None = Field(default=None, description="Largest allowed value (numbers).")
    allowed: list[Any] | None = Field(default=None, min_length=1, description="The only values allowed.")
    unique: bool = Field(default=False, description="Whether every value must be distinct.")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> ColumnSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if (self.min is not None or self.max is not None) and self.type not in {"int", "float"}:
            raise ValueError(f"min/max apply to int and float columns, not {self.type}")
        return self


class SchemaConfig(Section):
    columns: dict[Annotated[str, Field(min_length=1)], ColumnSpec] = Field(
        min_length=1, description="Expected columns and their rules."
    )
    on_error: Literal["fail", "quarantine"] = Field(
        default="fail", description="fail: stop with the reasons; quarantine: set bad rows aside and go on."
    )


class SplitConfig(Section):
    validation: float = Field(default=0.2, ge=0.0, lt=1.0, description="Fraction of rows for validation.")
    test: float = Field(default=0.1, ge=0.0, lt=1.0, description="Fraction of rows held out for the test.")
    seed: int = Field(default=42, ge=0, le=2**32 - 1, description="Seed of the shuffle.")
    stratify: bool = Field(default=False, description="Keep label proportions in every split.")

    @model_validator(mode="after")
    def _leave_rows_for_training(self) -> SplitConfig:
        if self.validation + self.test >= 1.0:
            raise ValueError(
                f"validation + test is {self.validation + self.test:g}; it must be below 1 to leave rows for training"
            )
        return self


class DataConfig(Section):
    source: SourceConfig = Field(description="Where the raw data comes from.")
    collect: CollectConfig | None = Field(default=None, description="Load the source into a database table first.")
    dataset: DatasetConfig = Field(description="The registered dataset this job converts into and trains on.")
    schema_: SchemaConfig | None = Field(
        default=None, alias="schema", description="Validation rules applied when the dataset version is made."
    )
    label: str | None = Field(default=None, min_length=1, description="The column to predict.")
    features: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, min_length=1, description="Feature columns. Default: every column but the label."
    )
    split: SplitConfig = Field(default_factory=SplitConfig, description="How rows are split for training.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)
