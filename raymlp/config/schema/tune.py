"""The `tune` section: search space, searcher and scheduler."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Section


class SearchDimension(Section):
    uniform: list[float] | None = Field(default=None, description="[low, high]")
    loguniform: list[float] | None = Field(default=None, description="[low, high], both > 0")
    quniform: list[float] | None = Field(default=None, description="[low, high, q]")
    randint: list[int] | None = Field(default=None, description="[low, high) integers")
    choice: list[Any] | None = Field(default=None, description="Values sampled at random.")
    grid: list[Any] | None = Field(default=None, description="Values tried exhaustively.")

    @model_validator(mode="after")
    def _exactly_one_well_formed(self) -> SearchDimension:
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
    reduction_factor: float = Field(
        default=2.0, gt=1, le=100, description="asha: 1/this of the trials go on at each rung."
    )
    min_samples_required: int = Field(
        default=3,
        ge=1,
        le=100_000,
        description="median: trials that must have reached an epoch before one is stopped there.",
    )
    perturbation_interval: int = Field(
        default=2,
        ge=1,
        le=100_000,
        description="pbt: epochs between two looks at a trial (exploit a better one, explore).",
    )
    quantile_fraction: float = Field(
        default=0.25,
        gt=0,
        le=0.5,
        description="pbt: the bottom fraction of trials takes over the top fraction's checkpoints.",
    )
    resample_probability: float = Field(
        default=0.25, ge=0, le=1, description="pbt: chance that an explored setting is drawn anew instead of perturbed."
    )
    synch: bool = Field(
        default=False,
        description="pbt: look at all trials at once at each interval (the first there wait, paused, for the rest) "
        "instead of at each trial as it gets there.",
    )


class TuneConfig(Section):
    metric: str = Field(min_length=1, description="Metric the sweep optimises; one the trainer reports.")
    mode: Literal["min", "max"] = Field(description="Whether lower or higher is better.")
    num_samples: int = Field(default=8, ge=1, le=1_000_000, description="Trials (per grid point).")
    max_concurrent: int | None = Field(default=None, ge=1, le=100_000, description="Trials running at once.")
    search: Literal["random", "grid", "optuna", "hyperopt"] = Field(default="random", description="Searcher.")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig, description="Early stopping of trials.")
    space: dict[str, SearchDimension] = Field(min_length=1, description="Dotted job paths and their ranges.")
    seed: int | None = Field(
        default=None, description="Seed of the optuna/hyperopt searcher (random and grid: Ray Tune's own)."
    )
    time_budget_s: float | None = Field(
        default=None, gt=0, description="Stop starting and running trials after this many seconds."
    )
    start_from_job: bool = Field(
        default=True,
        description="The first trial takes the job file's own values of the searched settings (when each lies in its range).",
    )
    trials: Literal["auto", "light", "full"] = Field(
        default="auto",
        description="light: a trial fits in its own Tune process from data prepared once per process and records "
        "an MLflow run of params and metrics; the best is then trained again as a full run with a package (sklearn only). "
        "full: every trial is a whole train run. auto: light for sklearn, full otherwise.",
    )
