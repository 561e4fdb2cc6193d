"""The job file itself: JobConfig, made of the sections."""

from __future__ import annotations

import warnings
from typing import Literal

from pydantic import Field

from .base import Name, Section
from .data import DataConfig
from .environments import EnvRef
from .monitor import MonitorConfig
from .preprocess import PreprocessStep
from .schedule import ScheduleConfig
from .serve import PredictConfig, RegisterConfig, ServeConfig
from .storage import StorageConfig
from .train import TrainConfig
from .tune import TuneConfig

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
    monitor: MonitorConfig | None = Field(
        default=None, description="Defaults of `raymlp monitor` for the job's model (drift tests, window, reference)."
    )
    schedule: ScheduleConfig | None = Field(
        default=None,
        description="When raymlp's scheduler runs the job by itself: cron, intervals, new data, drift "
        "(`raymlp schedule add JOB.yaml`).",
    )

    def stages(self) -> list[str]:
        """The stages this job runs, in order."""
        names = ["collect"] if self.data.collect else []
        names.append("convert")
        names += [name for name in ("train", "tune", "register", "predict", "serve") if getattr(self, name)]
        return names
