"""The job file, version 1: pydantic models for every section (unknown keys rejected)."""

from __future__ import annotations

import re
import warnings
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

CURRENT_VERSION = 1

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
REQUIREMENT_PATTERN = re.compile(r"^\s*(>=|<=|>|<|==)\s*(-?\d+(\.\d+)?([eE][-+]?\d+)?)\s*$")


def _check_name(value: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise ValueError(
            f"'{value}' is not a usable name: use 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (no '/' or spaces)"
        )
    return value


#: Names that become folders, experiment names and registry names: never a path.
Name = Annotated[str, AfterValidator(_check_name), Field(json_schema_extra={"pattern": NAME_PATTERN})]


class Section(BaseModel):
    """A job-file section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --- storage and environment -------------------------------------------------------------


class StorageConfig(Section):
    root: str | None = Field(
        default=None,
        description="Artifact root: a local folder, or s3:// / gs:// on clusters. Default: RAYMLP_HOME.",
        min_length=1,
    )
    shared: bool = Field(
        default=False,
        description="The local root is the same storage on every node (an NFS or similar mount at the same path): "
        "required to train on a cluster of several nodes with a local root.",
    )
    catalog: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalog. Default: sqlite:///<RAYMLP_HOME>/catalog.db.",
        min_length=1,
    )
    tracking: str | None = Field(
        default=None,
        description="MLflow tracking URI. Default: sqlite:///<RAYMLP_HOME>/mlflow.db.",
        min_length=1,
    )


#: An environment variable's name, as a shell would take it.
ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"


def _number_as_text(value: Any) -> Any:
    """`OMP_NUM_THREADS: 4` means the text "4"; true/false are refused (quote them: "1", "true")."""
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is a YAML boolean; an environment variable holds text: quote it: \"{str(value).lower()}\"")
    if isinstance(value, int | float):
        return str(value)
    return value


def _check_env_var_name(value: str) -> str:
    if not re.match(ENV_VAR_PATTERN, value):
        raise ValueError(f"'{value}' is not an environment variable name (letters, digits and '_', not starting with a digit)")
    return value


EnvVars = dict[
    Annotated[str, AfterValidator(_check_env_var_name), Field(json_schema_extra={"pattern": ENV_VAR_PATTERN})],
    Annotated[str, BeforeValidator(_number_as_text)],
]
Requirement = Annotated[str, Field(min_length=1)]

_PIP_HELP = ("pip requirements (requirements.txt lines: `tabulate==0.9.0`, `torch>=2.3`, a URL) installed into a "
             "virtualenv that Ray builds on every node from the nodes' own Python (which keeps its packages).")
_UV_HELP = "Like pip, installed with uv (faster resolution); give pip or uv, not both."
_ENV_VARS_HELP = "Environment variables of the workers, NAME: text (numbers are taken as text; quote booleans)."


def _pip_or_uv(value: Any, info: ValidationInfo) -> Any:
    if value is not None and info.data.get("pip") is not None:
        raise ValueError("give pip or uv, not both (Ray installs a worker environment with one installer)")
    return value


class _PipOrUv(Section):
    @field_validator("uv", check_fields=False)
    @classmethod
    def _uv_alone(cls, value: Any, info: ValidationInfo) -> Any:
        return _pip_or_uv(value, info)


class InlineEnv(_PipOrUv):
    """A runtime environment written in the job file itself."""

    pip: list[Requirement] | None = Field(default=None, description=_PIP_HELP)
    uv: list[Requirement] | None = Field(default=None, description=_UV_HELP)
    env_vars: EnvVars = Field(default_factory=dict, description=_ENV_VARS_HELP)


class EnvFileConfig(_PipOrUv):
    """One file of envs/: a named runtime environment (its name is the file's stem)."""

    description: str | None = Field(default=None, description="What the environment is for; shown by `raymlp env list`.")
    pip: list[Requirement] | None = Field(default=None, description=_PIP_HELP)
    uv: list[Requirement] | None = Field(default=None, description=_UV_HELP)
    install_options: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        description="Options of the installer, e.g. [--extra-index-url, https://download.pytorch.org/whl/cu128] "
        "(Ray's pip_install_options / uv_pip_install_options; they replace Ray's defaults).",
    )
    dependency_check: bool = Field(
        default=False, description="Run `pip check` after installing (Ray's pip_check / uv_check): a conflict fails the build."
    )
    env_vars: EnvVars = Field(default_factory=dict, description=_ENV_VARS_HELP)
    container: str | None = Field(
        default=None,
        min_length=1,
        description="A container image the workers run in (Ray's image_uri runtime_env, started with podman on each node; "
        "the image needs the cluster's Ray and Python versions, and raymlp). Goes with env_vars only.",
    )
    imports: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]] | None = Field(
        default=None,
        description="Modules `raymlp env check` imports. Default: one per requirement, from its name "
        "(scikit-learn -> sklearn, pillow -> PIL, other names with '-' and '.' as '_').",
    )
    setup_timeout_s: int | None = Field(
        default=None, ge=1, le=86_400, description="Longest a node may take to build the environment (Ray's default: 600)."
    )

    @field_validator("install_options", "dependency_check")
    @classmethod
    def _needs_an_installer(cls, value: Any, info: ValidationInfo) -> Any:
        if value and info.data.get("pip") is None and info.data.get("uv") is None:
            raise ValueError("installer settings need pip or uv packages")
        return value

    @field_validator("container")
    @classmethod
    def _container_alone(cls, value: Any, info: ValidationInfo) -> Any:
        given = [key for key in ("pip", "uv", "install_options") if info.data.get(key)]
        if value is not None and (given or info.data.get("dependency_check")):
            raise ValueError(
                f"a container cannot be combined with {' or '.join(given) or 'dependency_check'}: Ray 2.60's image_uri "
                "runtime_env allows only env_vars beside it; install those packages into the image instead"
            )
        return value


def _check_env_name(value: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise ValueError(
            f"'{value}' is not an environment name: `default`, or the stem of a file envs/NAME.yaml "
            "(1-100 letters, digits, '_', '.' or '-'), or an inline mapping {pip: [...], env_vars: {...}}"
        )
    return value


#: `default` (the cluster's own environment) or NAME of envs/NAME.yaml.
EnvName = Annotated[str, AfterValidator(_check_env_name), Field(json_schema_extra={"pattern": NAME_PATTERN})]


def _env_kind(value: Any) -> str:
    return "env-inline" if isinstance(value, dict | InlineEnv) else "env-name"


#: A runtime environment: `default`, a NAME of envs/NAME.yaml, or inline {pip | uv, env_vars}.
EnvRef = Annotated[
    Union[Annotated[EnvName, Tag("env-name")], Annotated[InlineEnv, Tag("env-inline")]],
    Discriminator(_env_kind),
]

_STAGE_ENV_HELP = (
    "Runtime environment of this stage's Ray workers: NAME of envs/NAME.yaml or inline {pip | uv, env_vars}. "
    "Ray lays it over the job's `env`: its pip/uv/container replace the job's for these workers, its env_vars "
    "are added. Default: the job's environment."
)


# --- data ---------------------------------------------------------------------------------


_SHARD_KEY_HELP = (
    "Column whose MIN..MAX range is cut into `shards` equal-width key ranges read in parallel "
    "(integer, float, decimal, date or timestamp; rows with a NULL key are one more shard)."
)
_SHARDS_HELP = "Key ranges read in parallel, each on its own connection (needs shard_key when above 1)."


class _ShardedRead(Section):
    shard_key: str | None = Field(default=None, min_length=1, description=_SHARD_KEY_HELP)
    shards: int = Field(default=1, ge=1, le=64, description=_SHARDS_HELP)

    @model_validator(mode="after")
    def _shards_need_a_key(self) -> "_ShardedRead":
        if self.shards > 1 and self.shard_key is None:
            raise ValueError(f"shards: {self.shards} needs shard_key: the numeric or date column whose range is split")
        return self


class SqlSource(_ShardedRead):
    url: str = Field(description="SQLAlchemy URL; put secrets in ${ENV} variables.", min_length=1)
    query: str | None = Field(default=None, description="A SELECT whose rows are the source.", min_length=1)
    table: str | None = Field(default=None, description="A table whose rows are the source.", min_length=1)

    @model_validator(mode="after")
    def _one_of_query_or_table(self) -> "SqlSource":
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
        description="Files, globs or folders (csv, parquet, json, images). Relative to the working directory.",
    )
    sql: SqlSource | None = Field(default=None, description="Database source (format: sql).")
    sklearn: SklearnSource | None = Field(default=None, description="Shipped dataset (format: sklearn).")
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="CSV field delimiter.")

    @model_validator(mode="after")
    def _format_needs_its_fields(self) -> "SourceConfig":
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
    def _bounds_ordered(self) -> "ColumnSpec":
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
    def _leave_rows_for_training(self) -> "SplitConfig":
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


# --- preprocess ---------------------------------------------------------------------------

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
    def _constant_needs_value(self) -> "SimpleImputerStep":
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
            "names, VERSION a number), e.g. \"transforms:add_ratios\" or \"transforms@2:add_ratios\""
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
    Union[
        StandardScalerStep,
        MinMaxScalerStep,
        MaxAbsScalerStep,
        RobustScalerStep,
        OneHotEncoderStep,
        OrdinalEncoderStep,
        SimpleImputerStep,
        FunctionStep,
        DaskStep,
    ],
    Field(discriminator="type"),
]

#: Step types whose code comes from a registered module.
MODULE_STEP_TYPES = ("function", "dask")


# --- train ----------------------------------------------------------------------------------


class MLPModel(Section):
    type: Literal["mlp"] = Field(description="Fully connected network for tabular data.")
    hidden_layers: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(
        default_factory=lambda: [64, 64], max_length=64, description="Width of each hidden layer."
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer.")
    activation: Literal["relu", "gelu", "tanh", "silu"] = Field(default="relu", description="Hidden activation.")


class CNNModel(Section):
    type: Literal["cnn"] = Field(description="Convolutional network for images given as pixel columns (e.g. digits' 8x8).")
    image_shape: list[Annotated[int, Field(ge=1, le=65_536)]] | None = Field(
        default=None, min_length=2, max_length=3,
        description="[height, width] or [height, width, channels] of one row's pixels, in row-major order; "
        "default: a square one-channel image as wide as the input.",
    )
    filters: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [32, 64], min_length=1, max_length=16,
        description="Filters of each convolution (kernel_size, 'same' padding, then a 2x2 max-pool while the image is at least 2x2).",
    )
    kernel_size: int = Field(default=3, ge=1, le=15, description="Side of each convolution's kernel.")
    dense_layers: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(
        default_factory=lambda: [64], max_length=16, description="Width of each dense layer after the convolutions."
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout before each dense layer.")
    activation: Literal["relu", "gelu", "tanh", "silu"] = Field(default="relu", description="Hidden activation.")


BUILDER_REF_PATTERN = r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$"


class CustomModel(Section):
    type: Literal["custom"] = Field(description="A network built by your own function.")
    builder: str = Field(
        pattern=BUILDER_REF_PATTERN,
        description="MODULE:FUNCTION; MODULE is a .py file beside the job file (dots for folders). Called as "
        "FUNCTION(input_shape, output_dim, params) and returns a torch.nn.Module or a Keras model; "
        "its source is carried in the model package.",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Passed to the builder as its third argument.")


class XGBoostModel(Section):
    type: Literal["xgboost"] = Field(description="Gradient-boosted trees; one boosting round per epoch.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="XGBoost booster parameters, e.g. {max_depth: 4, eta: 0.1}; objective and eval_metric follow the task.",
    )


class EstimatorModel(Section):
    type: str = Field(
        description="Import path of a scikit-learn style estimator, e.g. sklearn.ensemble.RandomForestClassifier.",
        pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the estimator.")


def _model_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("mlp", "cnn", "custom", "xgboost") else "estimator"


ModelConfig = Annotated[
    Union[Annotated[MLPModel, Tag("mlp")], Annotated[CNNModel, Tag("cnn")], Annotated[CustomModel, Tag("custom")],
          Annotated[XGBoostModel, Tag("xgboost")], Annotated[EstimatorModel, Tag("estimator")]],
    Discriminator(_model_kind),
]


class OptimizerConfig(Section):
    name: Literal["adam", "adamw", "sgd"] = Field(default="adam", description="Optimizer.")
    lr: float = Field(default=1e-3, gt=0.0, le=10.0, description="Learning rate.")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="L2 penalty.")
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0, description="Momentum (sgd).")


class ScalingConfig(Section):
    num_workers: Annotated[int, Field(ge=1, le=4096)] | tuple[Annotated[int, Field(ge=1, le=4096)], Annotated[int, Field(ge=1, le=4096)]] = Field(
        default=1, description="Ray Train workers, or [min, max] for elastic training (as many as the cluster fits, "
        "never fewer than min; more join when nodes do)."
    )
    use_gpu: bool = Field(default=False, description="One GPU per worker.")
    resources_per_worker: dict[str, Annotated[float, Field(gt=0)]] | None = Field(
        default=None, description="Ray resources of each worker, e.g. {CPU: 2, GPU: 1}."
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        default="PACK", description="How workers are placed on nodes."
    )


class EarlyStoppingConfig(Section):
    metric: str = Field(default="val_loss", min_length=1, description="Validation metric watched after each epoch.")
    mode: Literal["min", "max"] = Field(default="min", description="Whether lower or higher is better.")
    patience: int = Field(default=5, ge=1, le=100_000, description="Epochs without improvement before training stops.")
    min_delta: float = Field(default=0.0, ge=0.0, description="Smallest change that counts as an improvement.")


class CheckpointConfig(Section):
    num_to_keep: int = Field(default=2, ge=1, le=1000, description="Best checkpoints kept.")
    metric: str = Field(default="val_loss", min_length=1, description="Metric that ranks checkpoints.")
    mode: Literal["min", "max"] = Field(default="min", description="Whether lower or higher is better.")


class TrainConfig(Section):
    framework: Literal["torch", "tensorflow", "sklearn", "xgboost"] = Field(description="Training backend.")
    task: Literal["auto", "classification", "regression"] = Field(
        default="auto", description="auto: classification for text, bool or few-valued integer labels."
    )
    model: ModelConfig = Field(description="The model: {type: mlp, ...} or an estimator class path.")
    epochs: int = Field(default=10, ge=1, le=100_000, description="Passes over the training split.")
    batch_size: int = Field(default=64, ge=1, le=2**24, description="Rows per batch per worker.")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="Optimizer settings.")
    scaling: ScalingConfig = Field(default_factory=ScalingConfig, description="Workers and resources.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpoint retention.")
    max_failures: int = Field(default=0, ge=-1, le=1000, description="Worker-group restarts allowed (-1: no limit).")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Seed of weights and data order.")
    early_stopping: EarlyStoppingConfig | None = Field(default=None, description="Stop when a metric stops improving.")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, le=65_536, description="torch: batches whose gradients add up before each optimizer step."
    )
    mixed_precision: bool = Field(default=False, description="torch on GPU: automatic mixed precision (float16 autocast + grad scaling).")
    cv_folds: int | None = Field(
        default=None, ge=2, le=100,
        description="sklearn: also cross-validate on train+validation with this many folds, each fitted as a parallel Ray task.",
    )
    env: EnvRef | None = Field(
        default=None,
        description=_STAGE_ENV_HELP + " Used by the Ray Train workers and sklearn's fit tasks, in full tune trials too (light ones run in the job's).",
    )


# --- tune -----------------------------------------------------------------------------------


class SearchDimension(Section):
    uniform: list[float] | None = Field(default=None, description="[low, high]")
    loguniform: list[float] | None = Field(default=None, description="[low, high], both > 0")
    quniform: list[float] | None = Field(default=None, description="[low, high, q]")
    randint: list[int] | None = Field(default=None, description="[low, high) integers")
    choice: list[Any] | None = Field(default=None, description="Values sampled at random.")
    grid: list[Any] | None = Field(default=None, description="Values tried exhaustively.")

    @model_validator(mode="after")
    def _exactly_one_well_formed(self) -> "SearchDimension":
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of uniform, loguniform, quniform, randint, choice, grid"
                + (f" (got {', '.join(given)})" if given else "")
            )
        kind, values = given[0], getattr(self, given[0])
        arity = {"uniform": 2, "loguniform": 2, "quniform": 3, "randint": 2}.get(kind)
        if arity is not None:
            if len(values) != arity:
                raise ValueError(f"{kind} takes {arity} numbers, got {len(values)}")
            if not values[0] < values[1]:
                raise ValueError(f"{kind} needs low < high, got [{values[0]}, {values[1]}]")
            if kind == "loguniform" and values[0] <= 0:
                raise ValueError(f"loguniform bounds must be > 0, got {values[0]}")
            if kind == "quniform" and values[2] <= 0:
                raise ValueError(f"quniform step q must be > 0, got {values[2]}")
        elif not values:
            raise ValueError(f"{kind} needs at least one value")
        return self


class SchedulerConfig(Section):
    type: Literal["fifo", "asha", "median", "pbt"] = Field(default="fifo", description="Trial scheduler.")
    grace_period: int = Field(default=1, ge=1, le=100_000, description="Epochs before a trial may be stopped.")
    reduction_factor: float = Field(default=2.0, gt=1, le=100, description="asha: 1/this of the trials go on at each rung.")
    min_samples_required: int = Field(default=3, ge=1, le=100_000,
                                      description="median: trials that must have reached an epoch before one is stopped there.")
    perturbation_interval: int = Field(
        default=2, ge=1, le=100_000, description="pbt: epochs between two looks at a trial (exploit a better one, explore).")
    quantile_fraction: float = Field(
        default=0.25, gt=0, le=0.5, description="pbt: the bottom fraction of trials takes over the top fraction's checkpoints.")
    resample_probability: float = Field(
        default=0.25, ge=0, le=1, description="pbt: chance that an explored setting is drawn anew instead of perturbed.")
    synch: bool = Field(
        default=False, description="pbt: look at all trials at once at each interval (the first there wait, paused, for the rest) "
        "instead of at each trial as it gets there.")


class TuneConfig(Section):
    metric: str = Field(min_length=1, description="Metric the sweep optimises; one the trainer reports.")
    mode: Literal["min", "max"] = Field(description="Whether lower or higher is better.")
    num_samples: int = Field(default=8, ge=1, le=1_000_000, description="Trials (per grid point).")
    max_concurrent: int | None = Field(default=None, ge=1, le=100_000, description="Trials running at once.")
    search: Literal["random", "grid", "optuna", "hyperopt"] = Field(default="random", description="Searcher.")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig, description="Early stopping of trials.")
    space: dict[str, SearchDimension] = Field(min_length=1, description="Dotted job paths and their ranges.")
    seed: int | None = Field(default=None, description="Seed of the optuna/hyperopt searcher (random and grid: Ray Tune's own).")
    time_budget_s: float | None = Field(default=None, gt=0, description="Stop starting and running trials after this many seconds.")
    start_from_job: bool = Field(
        default=True, description="The first trial takes the job file's own values of the searched settings (when each lies in its range).")
    trials: Literal["auto", "light", "full"] = Field(
        default="auto", description="light: a trial fits in its own Tune process from data prepared once per process and records "
        "an MLflow run of params and metrics; the best is then trained again as a full run with a package (sklearn only). "
        "full: every trial is a whole train run. auto: light for sklearn, full otherwise.")


# --- register, serve, predict -----------------------------------------------------------------


class RegisterConfig(Section):
    model: Name = Field(description="Registered model name in MLflow.")
    alias: str | None = Field(
        default=None, description="Alias moved to the new version when `require` holds.", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,254}$"
    )
    require: dict[str, str] = Field(
        default_factory=dict, description='Gate: metric -> comparison, e.g. {test_accuracy: ">= 0.9"}.'
    )

    @field_validator("require")
    @classmethod
    def _comparisons_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for metric, rule in value.items():
            if not REQUIREMENT_PATTERN.match(str(rule)):
                raise ValueError(f"require.{metric}: '{rule}' is not a comparison like '>= 0.9' (>=, <=, >, <, ==)")
        return value


class AutoscalingConfig(Section):
    min_replicas: int = Field(default=1, ge=0, le=10_000, description="Fewest replicas.")
    max_replicas: int = Field(default=1, ge=1, le=10_000, description="Most replicas.")
    target_ongoing_requests: float = Field(default=2.0, gt=0, le=10_000, description="Requests per replica to aim for.")

    @model_validator(mode="after")
    def _min_not_above_max(self) -> "AutoscalingConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class BatchingConfig(Section):
    max_batch_size: int = Field(default=256, ge=1, le=1_000_000, description="Most records scored in one model call.")
    wait_timeout_ms: float = Field(
        default=0.0, ge=0, le=60_000,
        description="Longest wait for more requests before scoring (0: score at once; requests that arrive meanwhile form the next batch).",
    )


class ServeConfig(Section):
    route: str = Field(default="/", description="Route prefix of the endpoint; starts with '/'.", pattern=r"^/[\w\-./]*$")
    host: str = Field(default="127.0.0.1", min_length=1, description="Address the HTTP proxy listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    ingress: Literal["haproxy", "proxy"] = Field(
        default="haproxy",
        description="haproxy: Serve's HAProxy ingress, straight to the replicas' own ports (fast); "
        "proxy: Serve's Python HTTP proxy. Fixed when Serve first starts on a cluster.",
    )
    access_log: bool = Field(default=False, description="Log every request in the replicas' logs (costs throughput).")
    num_replicas: int | None = Field(default=None, ge=1, le=10_000, description="Fixed replica count.")
    autoscaling: AutoscalingConfig | None = Field(default=None, description="Replica autoscaling.")
    batching: BatchingConfig | None = Field(
        default_factory=BatchingConfig, description="Request batching (null: every request is scored on its own)."
    )
    traffic: dict[str, float] | None = Field(
        default=None,
        description="Share of requests per alias or version of the registered model, e.g. {champion: 90, challenger: 10} "
        "(default: the register alias takes all). Replicas follow alias moves.",
    )
    follow_aliases_s: float = Field(default=5.0, gt=0, le=3600, description="How often replicas look up where the aliases point.")
    cpus_per_replica: float = Field(default=0.5, gt=0, le=1024, description="CPUs each replica holds.")
    gpus_per_replica: float = Field(default=0, ge=0, le=64, description="GPUs each replica holds (torch, tensorflow).")
    max_ongoing_requests: int = Field(default=32, ge=1, le=100_000, description="Requests a replica works on at once.")
    max_queued_requests: int = Field(
        default=256, ge=-1, le=1_000_000, description="Requests waiting for a replica before HTTP 503 (-1: unbounded)."
    )
    request_timeout_s: float | None = Field(default=30.0, gt=0, le=86_400, description="Longest a request may take (HTTP 408 after).")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30, description="Largest request body (HTTP 413 beyond).")
    max_records: int = Field(default=10_000, ge=1, le=10_000_000, description="Most records in one request.")
    api_keys_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the accepted API keys, comma-separated (HTTP 401 without one).",
    )
    env: EnvRef | None = Field(default=None, description=_STAGE_ENV_HELP + " Used by the endpoint's replicas.")

    @model_validator(mode="after")
    def _fixed_or_autoscaled(self) -> "ServeConfig":
        if self.num_replicas is not None and self.autoscaling is not None:
            raise ValueError("give num_replicas or autoscaling, not both")
        if self.traffic is not None:
            if not self.traffic:
                raise ValueError("traffic: name at least one alias or version")
            if any(share < 0 for share in self.traffic.values()) or sum(self.traffic.values()) <= 0:
                raise ValueError("traffic: shares are numbers >= 0 that add up to more than 0")
        return self


class PredictConfig(Section):
    input: str = Field(min_length=1, description="csv/parquet/json file, folder or glob to score.")
    output: str = Field(min_length=1, description="Output file (.csv, .parquet) or folder.")
    batch_size: int | None = Field(default=None, ge=1, le=2**24, description="Rows per model call (default 65536).")
    env: EnvRef | None = Field(default=None, description=_STAGE_ENV_HELP + " Used by the reading and scoring tasks.")


# --- the job ----------------------------------------------------------------------------------


# `register` is also ABCMeta.register on the class; the field wins on instances, which is all we use.
warnings.filterwarnings("ignore", message='Field name "register" in "JobConfig" shadows', category=UserWarning)


class JobConfig(Section):
    version: Literal[1] = Field(description="Job file format version.")
    name: Name = Field(description="Job name; also the MLflow experiment name.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Where state and artifacts go.")
    env: EnvRef = Field(
        default="default",
        description="Runtime environment of the job's Ray workers: `default` (the cluster's own Python and packages), "
        "NAME of a file envs/NAME.yaml in the project root (`raymlp env list`), or inline {pip | uv, env_vars}. "
        "`train`, `predict` and `serve` may each name their own.",
    )
    data: DataConfig = Field(description="Collect, convert, validate and split.")
    preprocess: list[PreprocessStep] = Field(
        default_factory=list,
        description="Steps applied in order to the feature columns; fitted on the train split only, "
        "and saved with the model so predictions get the same features.",
    )
    train: TrainConfig | None = Field(default=None, description="Training stage.")
    tune: TuneConfig | None = Field(default=None, description="Hyperparameter sweep over the train stage.")
    register: RegisterConfig | None = Field(default=None, description="Model registry entry and alias gate.")
    predict: PredictConfig | None = Field(default=None, description="Batch predictions with the trained model.")
    serve: ServeConfig | None = Field(default=None, description="Online endpoint on Ray Serve.")

    def stages(self) -> list[str]:
        """The stages this job runs, in order."""
        names = ["collect"] if self.data.collect else []
        names.append("convert")
        names += [name for name in ("train", "tune", "register", "predict", "serve") if getattr(self, name)]
        return names
