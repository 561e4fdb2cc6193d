"""scikit-learn estimators on Ray: the fit is one Ray task, the estimator's joblib parallelism (n_jobs)
runs on Ray's joblib backend, and optional K-fold cross-validation fits each fold as its own task.

The splits are materialised as numpy arrays (scikit-learn fits in one process's memory, so they must
fit there), put in the object store once, and shared by the fit and fold tasks. The fitted
estimator is saved with joblib as one file, `estimator.pkl`, the package's `model/` content.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from raymlp.errors import RaymlpError, UsageError, WorkFailed
from raymlp.metrics import job_and_run, ray_name, training_job
from raymlp.package.formats.sklearn_format import ESTIMATOR_FILE, predict_scores

from .backend import FitOutcome, TrainRequest
from .features import FEATURES_COLUMN, LABEL_COLUMN

# --- the estimator ----------------------------------------------------------------------------------


def estimator_class(path: str) -> type:
    """The class a dotted import path names; UsageError naming `train.model.type` otherwise."""
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise UsageError(
            f"train.model.type: cannot import module '{module_name}' for '{path}' ({type(error).__name__}: {error})"
        ) from None
    if not hasattr(module, name):
        public = [item for item in dir(module) if not item.startswith("_")]
        close = difflib.get_close_matches(name, public, n=3)
        hint = f"; did you mean {' or '.join(f'{module_name}.{item}' for item in close)}?" if close else ""
        raise UsageError(f"train.model.type: module '{module_name}' has no '{name}'{hint}")
    found = getattr(module, name)
    if (
        not isinstance(found, type)
        or not callable(getattr(found, "fit", None))
        or not callable(getattr(found, "get_params", None))
    ):
        raise UsageError(
            f"train.model.type: '{path}' is not a scikit-learn style estimator class (a class with fit and get_params), "
            "e.g. sklearn.ensemble.RandomForestClassifier"
        )
    return found


def _task_mismatch(path: str, estimator: Any, task: str, requested: str) -> str | None:
    from sklearn.base import is_classifier, is_regressor

    why = (
        "train.task is classification"
        if requested != "auto"
        else "train.task auto found a classification label (text, bool, or integers with few values)"
    )
    if task == "regression":
        why = "train.task is regression" if requested != "auto" else "train.task auto found a numeric regression label"
    if task == "classification" and not is_classifier(estimator):
        kind = "a regressor" if is_regressor(estimator) else "not a classifier"
        hint = "use a classifier such as sklearn.ensemble.RandomForestClassifier"
        return f"'{path}' is {kind}, but {why}; {hint}" + (
            "" if requested != "auto" else ", or set train.task: regression"
        )
    if task == "regression" and not is_regressor(estimator):
        kind = "a classifier" if is_classifier(estimator) else "not a regressor"
        return f"'{path}' is {kind}, but {why}; use a regressor such as sklearn.linear_model.Ridge"
    return None


def build_estimator(
    path: str, params: dict[str, Any], task: str, requested_task: str = "auto", seed: int | None = None
) -> Any:
    """An unfitted estimator from `train.model` (type, params), checked against the task; `seed`
    becomes `random_state` when the estimator takes one and params do not set it."""
    cls = estimator_class(path)
    params = dict(params or {})
    accepted = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    if not any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in accepted.values()):
        names = [name for name in accepted if name != "self"]
        unknown = [name for name in params if name not in names]
        if unknown:
            hints = [
                f"{name} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(name, names, n=1)) else name
                for name in unknown
            ]
            raise UsageError(
                f"train.model.params: {path} has no parameter {', '.join(hints)}; its parameters: {', '.join(names)}"
            )
    try:
        estimator = cls(**params)
    except Exception as error:
        raise UsageError(
            f"train.model.params: {path}({_shown(params)}) failed: {type(error).__name__}: {error}"
        ) from None
    mismatch = _task_mismatch(path, estimator, task, requested_task)
    if mismatch:
        raise UsageError(f"train.model.type: {mismatch}")
    if seed is not None and "random_state" not in params and "random_state" in estimator.get_params(deep=False):
        estimator.set_params(random_state=seed)
    validate = getattr(estimator, "_validate_params", None)  # scikit-learn's own parameter constraints
    if callable(validate) and hasattr(estimator, "_parameter_constraints"):
        try:
            validate()
        except (ValueError, TypeError) as error:
            raise UsageError(f"train.model.params: {error}") from None
    if task == "classification" and not hasattr(estimator, "predict_proba"):
        raise UsageError(
            f"train.model.type: {path} as configured gives no class probabilities (predict_proba), which the "
            "loss, ROC AUC and the probability_<class> columns of predictions need; use a probabilistic classifier "
            "such as sklearn.linear_model.LogisticRegression (sklearn.svm.SVC: set train.model.params.probability: true)"
        )
    return estimator


def _shown(params: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in params.items())


# --- scores (`predict_scores`: raymlp.package.formats.sklearn_format) -------------------------------


def _split_metrics(
    estimator: Any, features: np.ndarray, labels: np.ndarray, spec: dict[str, Any], prefix: str
) -> dict[str, float]:
    from .metrics import score_metrics

    if not len(labels):
        return {}
    scores = predict_scores(estimator, features, spec["output_dim"])
    return score_metrics(spec["task"], labels, scores, prefix, unit=spec["unit"])


# --- Ray tasks --------------------------------------------------------------------------------------


def _fit_on_ray_joblib(estimator: Any, features: np.ndarray, labels: np.ndarray, default_jobs: int) -> float:
    """Fit with the estimator's joblib work (n_jobs; None means the task's own CPUs) inside this task
    when it fits in the task's CPUs, else on Ray's joblib backend: n_jobs Ray actor processes placed
    over the cluster (-1: every CPU of it). Starting those actors costs seconds per `Parallel` call
    (a 200-tree forest on wine: 0.2 s in the task, 4-7 s on Ray's backend), so only work that
    needs more than the task has goes there. Arrays are pickled to the actors, never memory-mapped
    (a memory map is a file on this node). Returns the seconds the fit took."""
    import logging

    import joblib

    jobs = estimator.get_params().get("n_jobs")
    started = time.perf_counter()
    if jobs is None or (isinstance(jobs, int) and 0 < jobs <= default_jobs):
        with joblib.parallel_config(n_jobs=default_jobs):
            estimator.fit(features, labels)
        return time.perf_counter() - started
    from ray.util.joblib import register_ray

    register_ray()
    # joblib always passes a multiprocessing context, which Ray's Pool ignores with a warning.
    logging.getLogger("ray.util.multiprocessing.pool").setLevel(logging.ERROR)
    with joblib.parallel_config(backend="ray", n_jobs=default_jobs, max_nbytes=None):
        estimator.fit(features, labels)
    return time.perf_counter() - started


def _where() -> dict[str, Any]:
    import ray

    context = ray.get_runtime_context()
    return {"task_id": context.get_task_id(), "node_id": context.get_node_id(), "pid": os.getpid()}


def _fit_task(
    estimator: Any,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    spec: dict[str, Any],
) -> dict[str, Any]:
    """The final fit (a Ray task): the fitted estimator, its train loss and validation metrics."""
    seconds = _fit_on_ray_joblib(estimator, *train, spec["default_jobs"])
    metrics = {"train_loss": _split_metrics(estimator, *train, spec, "train")["train_loss"]}
    metrics.update(_split_metrics(estimator, *validation, spec, "val"))
    return {"estimator": estimator, "metrics": metrics, "seconds": seconds, **_where()}


def _fold_task(
    estimator: Any,
    features: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    fold: int,
    spec: dict[str, Any],
) -> dict[str, Any]:
    """One cross-validation fold (a Ray task): fit on the fold's training rows, metrics on its held-out rows."""
    seconds = _fit_on_ray_joblib(estimator, features[train_rows], labels[train_rows], spec["default_jobs"])
    metrics = _split_metrics(estimator, features[test_rows], labels[test_rows], spec, "cv")
    return {
        "fold": fold,
        "train_rows": len(train_rows),
        "test_rows": len(test_rows),
        "metrics": metrics,
        "seconds": seconds,
        **_where(),
    }


def _task_options(request: TrainRequest) -> dict[str, Any]:
    """Ray options of the fit and fold tasks: `train.scaling.resources_per_worker` (CPU 1 when not
    given; GPU 1 with use_gpu), retries from `train.max_failures`; never in the placement group of
    the process that submits them (a sweep's trial runs in one of a hundredth of a CPU, which would
    capture them and could never fit them)."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    scaling = request.train.scaling
    resources = dict(scaling.resources_per_worker or {})
    options: dict[str, Any] = {
        "num_cpus": resources.pop("CPU", 1),
        "num_gpus": resources.pop("GPU", 1 if scaling.use_gpu else 0),
        "max_retries": request.train.max_failures,
        "scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group=None),  # type: ignore[arg-type]  # None: outside any group
    }
    memory = resources.pop("memory", None)
    if memory:
        options["memory"] = memory
    if resources:
        options["resources"] = resources
    from .driver import worker_runtime_env

    runtime_env = worker_runtime_env(request)  # train.env, as Ray Train's workers get it
    if runtime_env:
        options["runtime_env"] = runtime_env
    return options


# --- data -------------------------------------------------------------------------------------------


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _too_big(what: str, size: int, available: int | None) -> WorkFailed:
    shown = f"; this machine has {available / 2**30:.1f} GiB available" if available else ""
    return WorkFailed(
        f"{what} hold {size / 2**30:.1f} GiB: too much for scikit-learn, which fits in one process's memory "
        f"(with room for copies){shown}; use framework xgboost or torch, which stream data, or sample the dataset"
    )


def _as_arrays(datasets: dict[str, Any], task: str, input_dim: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The train and validation splits as (features float32 [n, input_dim], labels) numpy arrays, made on
    the driver (which already holds the dataset's rows) and refused when they could not fit in its memory."""
    sizes = {name: int(datasets[name].size_bytes() or 0) for name in ("train", "validation")}
    available = _available_memory()
    if available and sum(sizes.values()) > available // 2:
        raise _too_big("the train and validation splits", sum(sizes.values()), available)
    label_type = np.int64 if task == "classification" else np.float64
    arrays = {}
    try:
        for name in ("train", "validation"):
            features, labels = [], []
            for batch in datasets[name].iter_batches(batch_size=None, batch_format="numpy"):
                features.append(np.asarray(batch[FEATURES_COLUMN], dtype=np.float32))
                labels.append(np.asarray(batch[LABEL_COLUMN]).astype(label_type, copy=False))
            arrays[name] = (
                np.concatenate(features) if features else np.zeros((0, input_dim), dtype=np.float32),
                np.concatenate(labels) if labels else np.zeros(0, dtype=label_type),
            )
    except MemoryError:
        raise _too_big("the train and validation splits", sum(sizes.values()), available) from None
    if not len(arrays["train"][1]):
        raise WorkFailed("the train split has no rows")
    return arrays


def _fold_rows(
    features: np.ndarray, labels: np.ndarray, folds: int, task: str, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out rows) of each fold: stratified by class for classification, shuffled with the seed."""
    import warnings

    from sklearn.model_selection import KFold, StratifiedKFold

    if folds > len(labels):
        raise UsageError(
            f"train.cv_folds: {folds} folds need at least {folds} rows; train + validation have {len(labels)}"
        )
    splitter = (StratifiedKFold if task == "classification" else KFold)(
        n_splits=folds, shuffle=True, random_state=seed % 2**32
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # a class with fewer rows than folds: some folds lack it, the metrics say so
            return list(splitter.split(features, labels))
    except ValueError as error:
        kind = "stratified folds" if task == "classification" else "folds"
        raise UsageError(
            f"train.cv_folds: {folds} {kind} over the {len(labels)} train + validation rows: {error}"
        ) from None


def _cv_summary(folds: list[dict[str, Any]]) -> dict[str, float]:
    """cv_<metric>_mean and cv_<metric>_std (population std, as scikit-learn's search results) over the folds."""
    names = [name for name in folds[0]["metrics"] if all(name in fold["metrics"] for fold in folds)]
    summary: dict[str, float] = {}
    for name in names:
        values = np.array([fold["metrics"][name] for fold in folds], dtype=np.float64)
        summary[f"{name}_mean"] = float(values.mean())
        summary[f"{name}_std"] = float(values.std())
    return summary


# --- the contract -----------------------------------------------------------------------------------


def _check_jobs(params: dict[str, Any]) -> None:
    import ray

    jobs = params.get("n_jobs")
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if isinstance(jobs, int) and not isinstance(jobs, bool) and jobs > max(cpus, 1):
        raise UsageError(
            f"train.model.params.n_jobs: {jobs} is more than the {cpus} CPUs of the Ray cluster (each job is a Ray "
            "worker process of Ray's joblib backend); use at most that, or -1 for all of them"
        )


def _task_failure(error: BaseException, path: str) -> BaseException:
    """The error a user should see for a failed fit or fold task."""
    import ray.exceptions

    if isinstance(error, ray.exceptions.OutOfMemoryError):
        return WorkFailed(
            f"the {path} fit ran out of memory on its node; give it more with "
            "train.scaling.resources_per_worker.memory (bytes), or use a smaller dataset"
        )
    cause = getattr(error, "cause", None) if isinstance(error, ray.exceptions.RayTaskError) else None
    if cause is None:
        last = (str(error).strip().splitlines() or [""])[-1][:500]
        return WorkFailed(f"the {path} fit failed: {type(error).__name__}: {last}")
    if isinstance(cause, RaymlpError):
        return type(cause)(str(cause))
    from sklearn.utils._param_validation import InvalidParameterError

    if isinstance(cause, InvalidParameterError):
        return UsageError(f"train.model.params: {cause}")
    if isinstance(cause, MemoryError):
        return WorkFailed(f"the {path} fit ran out of memory; use a smaller dataset or a node with more memory")
    return WorkFailed(f"the {path} fit failed: {type(cause).__name__}: {cause}")


def fit(request: TrainRequest) -> FitOutcome:
    """Fit the estimator of `train.model` in one Ray task (and the cross-validation folds in parallel tasks)."""
    import joblib
    import ray
    from sklearn.base import clone

    from .progress import report_epoch

    train = request.train
    model = request.model_spec or train.model.model_dump()
    params = dict(model.get("params") or {})
    estimator = build_estimator(model["type"], params, request.task, train.task, train.seed)
    _check_jobs(params)
    arrays = _as_arrays(request.datasets, request.task, request.input_dim)
    options = _task_options(request)
    spec = {
        "task": request.task,
        "output_dim": request.output_dim,
        "unit": (request.target_scale or {}).get("std", 1.0),
        "default_jobs": max(1, int(options["num_cpus"])),
    }

    folds: list[tuple[np.ndarray, np.ndarray]] = []
    if train.cv_folds:
        features = np.concatenate([arrays["train"][0], arrays["validation"][0]])
        labels = np.concatenate([arrays["train"][1], arrays["validation"][1]])
        folds = _fold_rows(features, labels, train.cv_folds, request.task, train.seed)

    job, run = training_job(request), job_and_run(request.run_name)[1]  # for the tasks' names and the epoch's metrics
    of_run = f" (run {run})" if run else ""
    pending: list[Any] = []
    try:
        train_ref, validation_ref = ray.put(arrays["train"]), ray.put(arrays["validation"])
        fit_ref = (
            ray.remote(_fit_task)
            .options(name=ray_name(job, "train", f"fit {model['type'].rsplit('.', 1)[-1]}{of_run}"), **options)
            .remote(estimator, train_ref, validation_ref, spec)
        )
        pending.append(fit_ref)
        fold_refs = []
        if folds:
            features_ref, labels_ref = ray.put(features), ray.put(labels)
            fold_task = ray.remote(_fold_task)
            for number, (train_rows, test_rows) in enumerate(folds, start=1):
                fold_refs.append(
                    fold_task.options(
                        name=ray_name(job, "train", f"cv fold {number}/{len(folds)}{of_run}"), **options
                    ).remote(clone(estimator), features_ref, labels_ref, train_rows, test_rows, number, spec)
                )
            pending.extend(fold_refs)
        waiting = list(pending)
        while waiting:  # the first task to fail ends the wait
            done, waiting = ray.wait(waiting, num_returns=1)
            ray.get(done)
        fitted, fold_results = ray.get(fit_ref), ray.get(fold_refs)
        pending = []
    except ray.exceptions.RayError as error:
        raise _task_failure(error, model["type"]) from None
    finally:
        for ref in pending:  # a failure leaves no task running on
            ray.cancel(ref, force=True)

    row: dict[str, float] = {"epoch": 1, **fitted["metrics"]}
    if fold_results:
        row.update(_cv_summary(fold_results))
    report_epoch(request.progress, 1, 1, row, samples=len(arrays["train"][1]), seconds=fitted["seconds"], job=job)

    output_dir = Path(request.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    weights = output_dir / ESTIMATOR_FILE
    partial = weights.with_name(f".{ESTIMATOR_FILE}.partial")
    joblib.dump(fitted["estimator"], partial)
    os.replace(partial, weights)
    where = {key: fitted[key] for key in ("task_id", "node_id", "pid", "seconds")}
    return FitOutcome(
        history=[row],
        best_metrics=row,
        best_epoch=1,
        weights=weights,
        checkpoint_path=str(weights),
        result_path="",
        extra={"fit": where, "cv_folds": fold_results},
    )


def fit_here(
    train: Any,
    task: str,
    output_dim: int,
    target_scale: dict[str, float] | None,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    cpus: int,
) -> dict[str, float]:
    """Fit and score `train.model` in this process (a light sweep trial, which holds the CPUs itself):
    the same estimator, fit and metrics as `fit`'s task, and its cross-validation folds one after
    another. Returns the metrics row `fit` reports for its one epoch."""
    from sklearn.base import clone

    model = train.model.model_dump()
    params = dict(model.get("params") or {})
    estimator = build_estimator(model["type"], params, task, train.task, train.seed)
    spec = {
        "task": task,
        "output_dim": output_dim,
        "unit": (target_scale or {}).get("std", 1.0),
        "default_jobs": max(1, cpus),
    }
    try:
        fitted = _fit_task(estimator, arrays["train"], arrays["validation"], spec)
        row: dict[str, float] = {"epoch": 1, **fitted["metrics"]}
        if train.cv_folds:
            features = np.concatenate([arrays["train"][0], arrays["validation"][0]])
            labels = np.concatenate([arrays["train"][1], arrays["validation"][1]])
            folds = [
                _fold_task(clone(estimator), features, labels, train_rows, test_rows, number, spec)
                for number, (train_rows, test_rows) in enumerate(
                    _fold_rows(features, labels, train.cv_folds, task, train.seed), start=1
                )
            ]
            row.update(_cv_summary(folds))
    except RaymlpError:
        raise
    except Exception as error:  # as the task's failure would read
        from sklearn.utils._param_validation import InvalidParameterError

        if isinstance(error, InvalidParameterError):
            raise UsageError(f"train.model.params: {error}") from None
        raise WorkFailed(f"the {model['type']} fit failed: {type(error).__name__}: {error}") from None
    return row
