"""PyTorch on Ray Train (V2): DDP over Ray Data shards, a checkpoint every epoch, resumable."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from raymlp.errors import WorkFailed

from .backend import FitOutcome, TrainRequest
from .features import FEATURES_COLUMN, LABEL_COLUMN

STATE_FILE = "state.pt"
WEIGHTS_FILE = "weights.pt"


def _sum_over_workers(tensor: Any) -> Any:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def _validation_metrics(model: Any, shard: Any, config: dict[str, Any], device: Any) -> dict[str, float]:
    """Validation metrics over every worker's shard, summed across workers before dividing."""
    import torch

    classification = config["task"] == "classification"
    classes = config["output_dim"]
    confusion = torch.zeros((classes, classes), dtype=torch.float64, device=device)
    # sums: count, loss, sum_y, sum_y2, squared error, absolute error
    sums = torch.zeros(6, dtype=torch.float64, device=device)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum") if classification else torch.nn.MSELoss(reduction="sum")
    model.eval()
    with torch.no_grad():
        for batch in shard.iter_torch_batches(
            batch_size=config["batch_size"], dtypes={FEATURES_COLUMN: torch.float32, LABEL_COLUMN: config["label_dtype"]},
            device=device,
        ):
            features, labels = batch[FEATURES_COLUMN], batch[LABEL_COLUMN]
            output = model(features)
            if classification:
                loss = loss_fn(output, labels)
                predicted = output.argmax(dim=1)
                index = labels * classes + predicted
                confusion += torch.bincount(index, minlength=classes * classes).reshape(classes, classes).to(confusion.dtype)
                sums[0] += len(labels)
                sums[1] += float(loss)
            else:
                output = output.squeeze(1)
                error = output.double() - labels.double()
                sums += torch.stack([
                    torch.tensor(float(len(labels)), dtype=torch.float64, device=device),
                    (error**2).sum(), labels.double().sum(), (labels.double() ** 2).sum(), (error**2).sum(), error.abs().sum(),
                ])
    _sum_over_workers(confusion)
    _sum_over_workers(sums)
    count = max(float(sums[0]), 1.0)
    if classification:
        true_positive = confusion.diag()
        precision = true_positive / confusion.sum(dim=0).clamp(min=1)
        recall = true_positive / confusion.sum(dim=1).clamp(min=1)
        f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(precision))
        present = confusion.sum(dim=1) > 0
        return {
            "val_loss": float(sums[1]) / count,
            "val_accuracy": float(true_positive.sum()) / count,
            "val_f1": float(f1[present].mean()) if bool(present.any()) else 0.0,
        }
    mean_y = float(sums[2]) / count
    total = float(sums[3]) - count * mean_y**2
    unit = config["target_std"]  # errors back in the label's own units
    return {
        "val_loss": float(sums[1]) / count,
        "val_rmse": unit * (float(sums[4]) / count) ** 0.5,
        "val_mae": unit * float(sums[5]) / count,
        "val_r2": 1.0 - float(sums[4]) / total if total > 0 else 0.0,
    }


def _quiet_per_report_logs() -> None:
    """Ray Train logs two INFO lines per report through a logger named by its file path, which
    its own LoggingConfig level does not reach; raise that logger to WARNING."""
    import logging

    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # a Ray without that module has no such logger
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, Any]) -> list[dict[str, float]]:
    """Runs on every Ray Train worker; returns the per-epoch metric history (rank 0's is kept)."""
    import ray.train
    import ray.train.torch
    import torch

    from .models import build_torch_mlp

    _quiet_per_report_logs()

    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.manual_seed(config["seed"])
    device = ray.train.torch.get_device()
    model_config = config["model"]
    network = build_torch_mlp(
        config["input_dim"], config["output_dim"], model_config["hidden_layers"], model_config["dropout"], model_config["activation"]
    )
    optimizer_config = config["optimizer"]
    optimizers = {
        "adam": lambda params: torch.optim.Adam(params, lr=optimizer_config["lr"], weight_decay=optimizer_config["weight_decay"]),
        "adamw": lambda params: torch.optim.AdamW(params, lr=optimizer_config["lr"], weight_decay=optimizer_config["weight_decay"]),
        "sgd": lambda params: torch.optim.SGD(
            params, lr=optimizer_config["lr"], momentum=optimizer_config["momentum"], weight_decay=optimizer_config["weight_decay"]
        ),
    }
    start_epoch, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    state = None
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
        network.load_state_dict(state["model"])
        start_epoch, history = state["epoch"] + 1, state["history"]
    model = ray.train.torch.prepare_model(network)
    optimizer = optimizers[optimizer_config["name"]](model.parameters())
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])

    classification = config["task"] == "classification"
    loss_fn = torch.nn.CrossEntropyLoss() if classification else torch.nn.MSELoss()
    train_shard = ray.train.get_dataset_shard("train")
    validation_shard = ray.train.get_dataset_shard("validation")
    for epoch in range(start_epoch, config["epochs"]):
        model.train()
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        for batch in train_shard.iter_torch_batches(
            batch_size=config["batch_size"],
            dtypes={FEATURES_COLUMN: torch.float32, LABEL_COLUMN: config["label_dtype"]},
            device=device,
            local_shuffle_buffer_size=max(config["batch_size"] * 8, 1024),
            local_shuffle_seed=config["seed"] + epoch,
        ):
            features, labels = batch[FEATURES_COLUMN], batch[LABEL_COLUMN]
            output = model(features)
            loss = loss_fn(output, labels) if classification else loss_fn(output.squeeze(1), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sums[0] += float(loss.detach()) * len(labels)
            sums[1] += len(labels)
        _sum_over_workers(sums)
        metrics = {"epoch": epoch + 1, "train_loss": float(sums[0]) / max(float(sums[1]), 1.0)}
        metrics.update(_validation_metrics(model, validation_shard, config, device))
        history.append(metrics)
        with tempfile.TemporaryDirectory() as folder:
            saved = None
            if rank == 0:
                unwrapped = getattr(model, "module", model)
                torch.save(
                    {"model": unwrapped.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "history": history},
                    Path(folder) / STATE_FILE,
                )
                saved = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=saved)
    return history


def fit(request: TrainRequest) -> FitOutcome:
    """Train with TorchTrainer and return the best checkpoint's weights and the metric history."""
    import ray.train
    import torch
    from ray.train.torch import TorchTrainer

    from raymlp import settings

    # Read by the Train controller, which Ray starts with the driver's copy of this variable.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(settings.train_poll_interval_s()))
    train = request.train
    classification = request.task == "classification"
    loop_config = {
        "task": request.task,
        "input_dim": request.input_dim,
        "output_dim": request.output_dim,
        "label_dtype": torch.long if classification else torch.float32,
        "model": train.model.model_dump(),
        "optimizer": train.optimizer.model_dump(),
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "seed": train.seed,
        "target_std": (request.target_scale or {}).get("std", 1.0),
    }
    scaling = train.scaling
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker=scaling.resources_per_worker,
            placement_strategy=scaling.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=request.run_name,
            storage_path=request.storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=train.checkpoint.num_to_keep,
                checkpoint_score_attribute=train.checkpoint.metric,
                checkpoint_score_order=train.checkpoint.mode,
            ),
            failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
        datasets=request.datasets,
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as error:
        raise WorkFailed(f"training failed: {_root_cause(error)}") from None
    history = result.return_value or []
    best = result.get_best_checkpoint(train.checkpoint.metric, train.checkpoint.mode) or result.checkpoint
    if best is None:
        raise WorkFailed("training finished without a checkpoint")
    weights = Path(request.output_dir) / WEIGHTS_FILE
    with best.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
    torch.save(state["model"], weights)
    best_metrics = next((row for row in history if row["epoch"] == state["epoch"] + 1), history[-1] if history else {})
    return FitOutcome(
        history=history,
        best_metrics=best_metrics,
        best_epoch=state["epoch"] + 1,
        weights=weights,
        checkpoint_path=best.path,
        result_path=result.path,
    )


def _root_cause(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    tail = [line for line in text if line.strip()][-1:] or [type(error).__name__]
    return tail[0][:500]


def load_for_inference(package_dir: Path, model: dict[str, Any]) -> Any:
    """The trained network in eval mode, on CPU, with its weights."""
    import torch

    from .models import build_torch_mlp

    network = build_torch_mlp(model["input_dim"], model["output_dim"], model["hidden_layers"], model["dropout"], model["activation"])
    network.load_state_dict(torch.load(package_dir / "model" / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    network.eval()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    return network


def predict_scores(network: Any, matrix: Any) -> Any:
    """Raw outputs (logits or values) for a float32 matrix."""
    import torch

    with torch.no_grad():
        return network(torch.from_numpy(matrix)).numpy()
