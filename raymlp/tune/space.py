"""The job's search space as Ray Tune's, and a trial's values as `--set` overrides of the job."""

from __future__ import annotations

import json
from typing import Any

from raymlp.config.schema import SchedulerConfig, SearchDimension, TuneConfig
from raymlp.config.search import pbt_mutable


def param_space(space: dict[str, SearchDimension]) -> dict[str, Any]:
    """Ray Tune's param_space: one entry per dotted job path (the key as written in the job)."""
    from ray import tune

    domains: dict[str, Any] = {}
    for path, dimension in space.items():
        kind = next(name for name in type(dimension).model_fields if getattr(dimension, name) is not None)
        values = getattr(dimension, kind)
        if kind == "uniform":
            domains[path] = tune.uniform(values[0], values[1])
        elif kind == "loguniform":
            domains[path] = tune.loguniform(values[0], values[1])
        elif kind == "quniform":
            domains[path] = tune.quniform(values[0], values[1], values[2])
        elif kind == "randint":
            domains[path] = tune.randint(values[0], values[1])
        elif kind == "choice":
            domains[path] = tune.choice(_indices_if_nested(values))
        else:
            domains[path] = tune.grid_search(_indices_if_nested(values))
    return domains


def _nested(values: list[Any]) -> bool:
    return any(isinstance(value, list | dict) for value in values)


def _indices_if_nested(values: list[Any]) -> list[Any]:
    """Options that are lists or mappings (layer sizes, say) go to Tune as their positions: Tune
    reads a list inside the space as more space, and Optuna's categories must be scalars."""
    return list(range(len(values))) if _nested(values) else list(values)


def decoded(space: dict[str, SearchDimension], config: dict[str, Any]) -> dict[str, Any]:
    """A trial's values as job values (positions of list options back to the options)."""
    values = {}
    for path, value in config.items():
        dimension = space.get(path)
        options = None if dimension is None else (dimension.choice if dimension.choice is not None else dimension.grid)
        values[path] = options[int(value)] if options is not None and _nested(options) and value is not None else value
    return values


def most_epochs(epochs: int, space: dict[str, SearchDimension]) -> int:
    """The most epochs a trial can run: the job's, or the top of `train.epochs` when it is searched."""
    dimension = space.get("train.epochs")
    if dimension is None:
        return epochs
    options = (
        dimension.choice
        or dimension.grid
        or [dimension.uniform, dimension.loguniform, dimension.quniform, dimension.randint]
    )
    numbers = [
        value
        for option in options
        if option
        for value in (option if isinstance(option, list) else [option])
        if isinstance(value, int | float)
    ]
    return int(max(numbers, default=epochs))


def trial_overrides(config: dict[str, Any]) -> list[str]:
    """A trial's sampled values as `--set` overrides (`path=<JSON>`, which the loader reads as YAML)."""
    return [f"{path}={json.dumps(_plain(value))}" for path, value in sorted(config.items())]


def _plain(value: Any) -> Any:
    """Numpy scalars and tuples (what searchers hand out) as JSON values."""
    if hasattr(value, "item") and not isinstance(value, list | dict):
        return value.item()
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def searcher(tune_config: TuneConfig, first: dict[str, Any] | None) -> Any:
    """The search algorithm, seeded by `tune.seed`; `first` (the job's own values, in Tune's
    terms: `job_values`) is the first trial it evaluates, when given. Random and grid search limit
    the trials running at once themselves (Tune applies `max_concurrent_trials` to the others)."""
    points = [first] if first else None
    if tune_config.search in ("random", "grid"):
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(
            points_to_evaluate=points, random_state=tune_config.seed, max_concurrent=tune_config.max_concurrent or 0
        )
    if tune_config.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(points_to_evaluate=points, seed=tune_config.seed)
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(points_to_evaluate=points, random_state_seed=tune_config.seed)


_MISSING = object()


def job_values(job: dict[str, Any], space: dict[str, SearchDimension]) -> dict[str, Any] | None:
    """The job file's own value of every searched path, when each is set there and lies in its
    range (a searcher can only start from a point of its space); else None."""
    values = {}
    for path, dimension in space.items():
        value: Any = job
        for part in path.split("."):
            if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            elif isinstance(value, dict) and part in value:
                value = value[part]
            else:
                return None
        if dimension.grid is not None or not _within(dimension, value):
            return None
        values[path] = (
            dimension.choice.index(value) if dimension.choice is not None and _nested(dimension.choice) else value
        )
    return values


def _within(dimension: SearchDimension, value: Any) -> bool:
    if dimension.choice is not None:
        return value in dimension.choice
    bounds = dimension.uniform or dimension.loguniform or dimension.quniform or dimension.randint
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    assert bounds is not None  # a dimension has exactly one kind (schema)
    if dimension.randint is not None:
        return isinstance(value, int) and bounds[0] <= value < bounds[1]
    return bounds[0] <= value <= bounds[1]


def scheduler(settings: SchedulerConfig, epochs: int, space: dict[str, SearchDimension] | None = None) -> Any:
    """The trial scheduler; its time unit is the epoch (one Tune result per epoch, then one more
    when the trial's run has finished: ASHA's `max_t` is past it, or ASHA would end every trial at
    its last epoch, before its model is evaluated and packaged). `epochs`: the most any trial runs.
    PBT explores the space's mutable settings (`pbt_mutable`) with the space's own ranges."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    if settings.type == "fifo":
        return FIFOScheduler()
    if settings.type == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=max(epochs, settings.grace_period) + 1,
            grace_period=settings.grace_period,
            reduction_factor=settings.reduction_factor,
        )
    if settings.type == "median":
        return MedianStoppingRule(
            time_attr="training_iteration",
            grace_period=settings.grace_period,
            min_samples_required=settings.min_samples_required,
        )
    from .pbt import EpochBoundedPBT

    space = space or {}
    domains = param_space(space)
    # A list makes PBT move a choice to a neighbouring option; a choice domain it would multiply.
    mutations = {
        path: (list(_indices_if_nested(choice)) if (choice := space[path].choice) is not None else domain)
        for path, domain in domains.items()
        if pbt_mutable(path)
    }
    return EpochBoundedPBT(
        epochs,
        time_attr="epoch",
        perturbation_interval=settings.perturbation_interval,
        synch=settings.synch,
        hyperparam_mutations=mutations,
        quantile_fraction=settings.quantile_fraction,
        resample_probability=settings.resample_probability,
    )
