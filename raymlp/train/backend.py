"""The one interface every training backend implements (`TrainingBackend`), what it is given and
returns (`TrainRequest`, `FitOutcome`), and the backends by framework name (the table
`raymlp.frameworks.FRAMEWORKS` names each one's module; it is imported on first use)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

from raymlp.config.schema import TrainConfig
from raymlp.errors import UsageError
from raymlp.frameworks import FRAMEWORKS

#: framework -> the module implementing `TrainingBackend` (from the framework table).
BACKENDS: dict[str, str] = {name: row.backend_module for name, row in FRAMEWORKS.items()}


@dataclass
class TrainRequest:
    """What a backend needs to train one model.

    `datasets` are Ray Datasets "train" and "validation", each row a float feature vector
    (`features.FEATURES_COLUMN`, `input_dim` wide) and an encoded label (`LABEL_COLUMN`: class code
    int64, or the standardised float target). `model_spec` is `models.resolve_model_spec(...)`.
    Every backend reports per-epoch history rows {"epoch", "train_loss", val metrics of
    `metrics.score_metrics`}, honours `train.early_stopping` (`metrics.EarlyStopping`) and sends
    each epoch to `progress` with `progress.report_epoch` from one worker.
    """

    train: TrainConfig
    task: str
    input_dim: int
    output_dim: int
    datasets: dict[str, Any]
    storage_path: str
    run_name: str
    output_dir: Path
    target_scale: dict[str, float] | None = None
    model_spec: dict[str, Any] = field(default_factory=dict)
    progress: Any = None  # a Ray queue for `progress.report_epoch`, or None
    #: A checkpoint folder to start from when the run has none of its own (a PBT trial going on
    #: from a better trial's model, with its own optimizer settings): epoch-wise backends only.
    start_checkpoint: str | None = None
    #: The raymlp job it trains for: the `job` tag of its metrics.
    job: str = ""


@dataclass
class FitOutcome:
    """What a backend returns: the best weights (one file, copied into the package's `model/`) and
    the per-epoch history; `best_metrics` is the history row of `best_epoch`."""

    history: list[dict[str, float]]
    best_metrics: dict[str, float]
    best_epoch: int
    weights: Path
    checkpoint_path: str
    result_path: str
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class TrainingBackend(Protocol):
    """What every backend module (`torch_backend`, `tensorflow_backend`, `sklearn_backend`,
    `xgboost_backend`) provides; a module satisfies it by its functions (tests/unit/test_backends.py
    checks each, importing none of the frameworks). torch, TensorFlow and XGBoost train on Ray Train
    through `train.driver.run_trainer`; scikit-learn fits in Ray tasks."""

    def fit(self, request: TrainRequest) -> FitOutcome:
        """Train the request's model: every epoch (or the one fit) a history row
        {"epoch", "train_loss", val metrics of `metrics.score_metrics`}, `train.early_stopping`
        honoured, each epoch sent to `request.progress`; the best weights written under
        `request.output_dir`. Errors: UsageError for settings the framework refuses, WorkFailed
        for a failed training."""
        ...


def training_backend(framework: str) -> TrainingBackend:
    """The backend module that trains a framework, imported on first use."""
    if framework not in BACKENDS:
        raise UsageError(f"train.framework: no backend for '{framework}'; available: {', '.join(BACKENDS)}")
    return cast(TrainingBackend, importlib.import_module(BACKENDS[framework]))


def fit(request: TrainRequest) -> FitOutcome:
    """Train with the backend of the request's framework."""
    return training_backend(request.train.framework).fit(request)
