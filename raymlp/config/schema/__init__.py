"""The job file, version 1: pydantic models for every section (unknown keys rejected).

One module per section (base, storage, environments, data, preprocess, train, tune, serve for register/serve/predict,
job for JobConfig); every name is re-exported here, so `from raymlp.config.schema import X` is the import to use.
"""

from .base import CURRENT_VERSION, IDENTIFIER_PATTERN, NAME_PATTERN, Name, Section
from .data import (
    CollectConfig,
    ColumnSpec,
    DataConfig,
    DatasetConfig,
    SchemaConfig,
    SklearnSource,
    SourceConfig,
    SplitConfig,
    SqlSource,
)
from .environments import (
    ENV_VAR_PATTERN,
    EnvFileConfig,
    EnvName,
    EnvRef,
    EnvVars,
    InlineEnv,
    Requirement,
)
from .job import JobConfig
from .preprocess import (
    FUNCTION_REF_PATTERN,
    MODULE_NAME_PATTERN,
    MODULE_STEP_TYPES,
    ColumnList,
    DaskStep,
    FunctionRef,
    FunctionStep,
    MaxAbsScalerStep,
    MinMaxScalerStep,
    OneHotEncoderStep,
    OrdinalEncoderStep,
    PreprocessStep,
    RobustScalerStep,
    SimpleImputerStep,
    StandardScalerStep,
)
from .serve import REQUIREMENT_PATTERN, AutoscalingConfig, BatchingConfig, PredictConfig, RegisterConfig, ServeConfig
from .storage import StorageConfig
from .train import (
    BUILDER_REF_PATTERN,
    CheckpointConfig,
    CNNModel,
    CustomModel,
    EarlyStoppingConfig,
    EstimatorModel,
    MLPModel,
    ModelConfig,
    OptimizerConfig,
    ScalingConfig,
    TrainConfig,
    XGBoostModel,
)
from .tune import SchedulerConfig, SearchDimension, TuneConfig

__all__ = [
    "AutoscalingConfig", "BatchingConfig", "BUILDER_REF_PATTERN", "CheckpointConfig", "CNNModel", "CollectConfig",
    "ColumnList", "ColumnSpec", "CURRENT_VERSION", "CustomModel", "DaskStep", "DataConfig", "DatasetConfig",
    "EarlyStoppingConfig", "ENV_VAR_PATTERN", "EnvFileConfig", "EnvName", "EnvRef", "EnvVars", "EstimatorModel",
    "FUNCTION_REF_PATTERN", "FunctionRef", "FunctionStep", "IDENTIFIER_PATTERN", "InlineEnv", "JobConfig",
    "MaxAbsScalerStep", "MinMaxScalerStep", "MLPModel", "ModelConfig", "MODULE_NAME_PATTERN", "MODULE_STEP_TYPES",
    "Name", "NAME_PATTERN", "OneHotEncoderStep", "OptimizerConfig", "OrdinalEncoderStep", "PredictConfig",
    "PreprocessStep", "RegisterConfig", "Requirement", "REQUIREMENT_PATTERN", "RobustScalerStep", "ScalingConfig",
    "SchedulerConfig", "SchemaConfig", "SearchDimension", "Section", "ServeConfig", "SimpleImputerStep",
    "SklearnSource", "SourceConfig", "SplitConfig", "SqlSource", "StandardScalerStep", "StorageConfig", "TrainConfig",
    "TuneConfig", "XGBoostModel",
]
