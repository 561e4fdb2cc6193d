"""XGBoost on Ray Train (V2): one boosting round per epoch, data-parallel over Ray Data shards,
a checkpoint every round, resumable.

Every worker builds a QuantileDMatrix from its shard of the train split; XGBoost's collective
(the Rabit tracker Ray Train's XGBoostConfig starts on the driver) all-reduces histograms, so all
workers grow the same trees. Every worker holds the whole validation split and computes the same
metrics, so all stop on the same round.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from raymlp.config.schema.train import XGBoostModel
from raymlp.errors import UsageError, WorkFailed
from raymlp.package.formats.xgboost_format import CLASSES_ATTR, MODEL_FILE, OBJECTIVE_ATTR, as_scores

from .backend import FitOutcome, TrainRequest
from .driver import best_checkpoint, quiet_per_report_logs, run_trainer
from .features import FEATURES_COLUMN, LABEL_COLUMN

STATE_FILE = "state.json"
#: Booster parameters fixed by the task; train.model.params cannot change them.
TASK_PARAMS = ("objective", "num_class", "eval_metric")
#: Rounds between checkpoints (the last round is always saved). Every round: a round's cost is
#: dominated by the report Ray Train waits on anyway, not by saving a small booster.
CHECKPOINT_EVERY = 1


def booster_params(task: str, output_dim: int, params: dict[str, Any], seed: int, use_gpu: bool) -> dict[str, Any]:
    """XGBoost parameters: defaults, then the job's `train.model.params`, then what the task fixes.

    The train eval metric is the loss `train_loss` reports: mlogloss, logloss, or rmse (squared).
    """
    if task == "classification" and output_dim > 2:
        fixed = {"objective": "multi:softprob", "num_class": output_dim, "eval_metric": "mlogloss"}
    elif task == "classification":
        fixed = {"objective": "binary:logistic", "eval_metric": "logloss"}
    else:
        fixed = {"objective": "reg:squarederror", "eval_metric": "rmse"}
    defaults: dict[str, Any] = {"tree_method": "hist", "seed": seed}
    if use_gpu:
        defaults["device"] = "cuda"
    chosen = {key: value for key, value in params.items() if key not in TASK_PARAMS}
    return {**defaults, **chosen, **fixed}


def _arrays(shard: Any, input_dim: int, label_dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """The features and labels of a dataset shard as numpy arrays."""
    features, labels = [], []
    for batch in shard.iter_batches(batch_size=8192, batch_format="numpy"):
        features.append(
            np.asarray(batch[FEATURES_COLUMN], dtype=np.float32).reshape(len(batch[LABEL_COLUMN]), input_dim)
        )
        labels.append(np.asarray(batch[LABEL_COLUMN], dtype=label_dtype))
    if not features:
        return np.zeros((0, input_dim), dtype=np.float32), np.zeros(0, dtype=label_dtype)
    return np.concatenate(features), np.concatenate(labels)


def _any_worker(flag: bool) -> bool:
    """True on every worker when it is True on one (XGBoost's collective; a single process as is)."""
    from xgboost import collective

    if not collective.is_distributed():
        return flag
    return bool(collective.allreduce(np.array([int(flag)], dtype=np.int32), collective.Op.MAX)[0])


def train_loop_per_worker(config: dict[str, Any]) -> list[dict[str, float]]:
    """Runs on every Ray Train worker inside XGBoost's collective; returns the per-round history (rank 0's is kept)."""
    import ray.train
    import xgboost

    from .metrics import EarlyStopping, score_metrics
    from .progress import report_epoch

    quiet_per_report_logs()
    rank = ray.train.get_context().get_world_rank()
    task, params, epochs = config["task"], config["params"], config["epochs"]
    label_dtype = np.int64 if task == "classification" else np.float32
    features, labels = _arrays(ray.train.get_dataset_shard("train"), config["input_dim"], label_dtype)
    val_features, val_labels = _arrays(ray.train.get_dataset_shard("validation"), config["input_dim"], label_dtype)
    # Built on every worker in the same order: constructing a DMatrix is a collective step.
    train_matrix = xgboost.QuantileDMatrix(features, label=labels)
    val_matrix = xgboost.DMatrix(val_features)  # kept, so each round predicts only its new trees

    booster, history = None, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            booster = xgboost.Booster(model_file=str(Path(folder) / MODEL_FILE))
            history = json.loads((Path(folder) / STATE_FILE).read_text())["history"]
        history = history[: booster.num_boosted_rounds()]
    stopping = EarlyStopping(config["early_stopping"])
    if stopping.replay(history) or len(history) >= epochs:
        return history

    loss_metric, classes = params["eval_metric"], params.get("num_class", 1)
    every = config["checkpoint_every"]

    class RoundReport(xgboost.callback.TrainingCallback):
        """After each round: metrics of the whole validation split, report, checkpoint, early stop."""

        def __init__(self) -> None:
            self.started = time.perf_counter()

        def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
            rounds = model.num_boosted_rounds()
            seconds = time.perf_counter() - self.started
            train_loss = float(evals_log["train"][loss_metric][-1])
            row = {"epoch": rounds, "train_loss": train_loss**2 if loss_metric == "rmse" else train_loss}
            scores = as_scores(model.predict(val_matrix, output_margin=True), params["objective"], classes)
            row.update(score_metrics(task, val_labels, scores, "val", unit=config["target_std"]))
            history.append(row)
            stop = _any_worker(stopping.should_stop(row))
            last = stop or rounds >= epochs
            with tempfile.TemporaryDirectory() as folder:
                saved = None
                if rank == 0:
                    report_epoch(
                        config["progress"],
                        rounds,
                        epochs,
                        {k: v for k, v in row.items() if k != "epoch"},
                        config["train_rows"],
                        seconds,
                    )
                    if last or rounds % every == 0:
                        model.save_model(str(Path(folder) / MODEL_FILE))
                        (Path(folder) / STATE_FILE).write_text(json.dumps({"history": history}))
                        saved = ray.train.Checkpoint.from_directory(folder)
                ray.train.report(row, checkpoint=saved)
            self.started = time.perf_counter()
            return stop

    xgboost.train(
        params,
        train_matrix,
        num_boost_round=epochs - len(history),
        evals=[(train_matrix, "train")],
        verbose_eval=False,
        xgb_model=booster,
        callbacks=[RoundReport()],
    )
    return history


def best_row(history: list[dict[str, float]], metric: str, mode: str) -> dict[str, float]:
    """The history row best by `metric` (the earliest of ties); the last row when no row has it."""
    ranked = [row for row in history if np.isfinite(row.get(metric, float("nan")))]
    if not ranked:
        return history[-1]
    sign = 1.0 if mode == "min" else -1.0
    return min(ranked, key=lambda row: (sign * row[metric], row["epoch"]))


def fit(request: TrainRequest) -> FitOutcome:
    """Train with XGBoostTrainer; the package gets the booster cut at the best round."""
    import xgboost
    from ray.train.xgboost import XGBoostTrainer

    train, scaling = request.train, request.train.scaling
    assert isinstance(train.model, XGBoostModel), "the framework table sends only xgboost models here"
    params = booster_params(request.task, request.output_dim, dict(train.model.params), train.seed, scaling.use_gpu)
    check_params(params, request.input_dim)
    loop_config = {
        "task": request.task,
        "input_dim": request.input_dim,
        "params": params,
        "epochs": train.epochs,
        "target_std": (request.target_scale or {}).get("std", 1.0),
        "early_stopping": train.early_stopping.model_dump() if train.early_stopping else None,
        "checkpoint_every": CHECKPOINT_EVERY,
        "train_rows": int(request.datasets["train"].count()),
        "progress": request.progress,
    }
    result = run_trainer(XGBoostTrainer, train_loop_per_worker, loop_config, request)
    history = result.return_value or []
    if not history or result.checkpoint is None:
        raise WorkFailed("training finished without a checkpoint")
    best = best_row(history, train.checkpoint.metric, train.checkpoint.mode)
    # The latest checkpoint holds every round so far; the best model is its first best-epoch rounds.
    with result.checkpoint.as_directory() as folder:
        booster = xgboost.Booster(model_file=str(Path(folder) / MODEL_FILE))
    if booster.num_boosted_rounds() > best["epoch"]:
        booster = booster[: best["epoch"]]
    booster.set_attr(**{OBJECTIVE_ATTR: params["objective"], CLASSES_ATTR: str(params.get("num_class", 1))})
    weights = Path(request.output_dir) / MODEL_FILE
    weights.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(weights))
    kept = best_checkpoint(result, request)
    return FitOutcome(
        history=history,
        best_metrics=best,
        best_epoch=int(best["epoch"]),
        weights=weights,
        checkpoint_path=kept.path,
        result_path=result.path,
    )


def check_params(params: dict[str, Any], input_dim: int) -> None:
    """Fail fast, on the driver, on booster parameters XGBoost rejects (one round on two dummy rows)."""
    import xgboost

    rows = xgboost.DMatrix(np.zeros((2, max(input_dim, 1)), dtype=np.float32), label=np.zeros(2, dtype=np.float32))
    try:
        xgboost.train({**params, "device": "cpu", "nthread": 1}, rows, num_boost_round=1)
    except xgboost.core.XGBoostError as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"train.model.params: XGBoost rejects them: {message}") from None
