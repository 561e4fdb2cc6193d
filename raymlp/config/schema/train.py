"""The `train` section: framework, model, optimizer, scaling, checkpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from raymlp.frameworks import FrameworkName

from .base import Section
from .environments import _STAGE_ENV_HELP, EnvRef


class MLPModel(Section):
    type: Literal["mlp"] = Field(description="Fully connected network for tabular data.")
    hidden_layers: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(
        default_factory=lambda: [64, 64], max_length=64, description="Width of each hidden layer."
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer.")
    activation: Literal["relu", "gelu", "tanh", "silu"] = Field(default="relu", description="Hidden activation.")


class CNNModel(Section):
    type: Literal["cnn"] = Field(
        description="Convolutional network for images given as pixel columns (e.g. digits' 8x8)."
    )
    image_shape: list[Annotated[int, Field(ge=1, le=65_536)]] | None = Field(
        default=None,
        min_length=2,
        max_length=3,
        description="[height, width] or [height, width, channels] of one row's pixels, in row-major order; "
        "default: a square one-channel image as wide as the input.",
    )
    filters: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [32, 64],
        min_length=1,
        max_length=16,
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
    Annotated[MLPModel, Tag("mlp")]
    | Annotated[CNNModel, Tag("cnn")]
    | Annotated[CustomModel, Tag("custom")]
    | Annotated[XGBoostModel, Tag("xgboost")]
    | Annotated[EstimatorModel, Tag("estimator")],
    Discriminator(_model_kind),
]


class OptimizerConfig(Section):
    name: Literal["adam", "adamw", "sgd"] = Field(default="adam", description="Optimizer.")
    lr: float = Field(default=1e-3, gt=0.0, le=10.0, description="Learning rate.")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="L2 penalty.")
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0, description="Momentum (sgd).")


class ScalingConfig(Section):
    num_workers: (
        Annotated[int, Field(ge=1, le=4096)]
        | tuple[Annotated[int, Field(ge=1, le=4096)], Annotated[int, Field(ge=1, le=4096)]]
    ) = Field(
        default=1,
        description="Ray Train workers, or [min, max] for elastic training (as many as the cluster fits, "
        "never fewer than min; more join when nodes do).",
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
    framework: FrameworkName = Field(description="Training backend.")
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
    mixed_precision: bool = Field(
        default=False, description="torch on GPU: automatic mixed precision (float16 autocast + grad scaling)."
    )
    cv_folds: int | None = Field(
        default=None,
        ge=2,
        le=100,
        description="sklearn: also cross-validate on train+validation with this many folds, each fitted as a parallel Ray task.",
    )
    env: EnvRef | None = Field(
        default=None,
        description=_STAGE_ENV_HELP
        + " Used by the Ray Train workers and sklearn's fit tasks, in full tune trials too (light ones run in the job's).",
    )
