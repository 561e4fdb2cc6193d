"""PyTorch on Ray Train (V2): DDP over shares of Ray Data blocks, a checkpoint every epoch, resumable."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from raymlp.package.formats.torch_format import WEIGHTS_FILE

from .backend import FitOutcome, TrainRequest
from .driver import best_checkpoint, epoch_loop_config, quiet_per_report_logs, run_trainer, start_checkpoint
from .features import FEATURES_COLUMN, LABEL_COLUMN

STATE_FILE = "state.pt"
#: History keys that describe the run, not the model: `attempt` counts restarts from a checkpoint
#: (0: the first worker group; epochs after a lost node or a resumed run have 1, 2, ...).
BOOKKEEPING = ("epoch", "train_seconds", "attempt", "workers")


def _sum_over_workers(tensor: Any) -> Any:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def _validation_metrics(
    model: Any, validation: list[dict[str, Any]], config: dict[str, Any], device: Any
) -> dict[str, float]:
    """Metrics of the whole validation split: every worker holds all of it (it is not split), so
    every worker computes the same numbers and stops on the same epoch."""
    import torch

    from .metrics import parts_metrics

    model.eval()
    scores, labels = [], []
    step = max(config["batch_size"], 1024)
    with torch.no_grad():
        for block in validation:
            for start in range(0, len(block[LABEL_COLUMN]), step):
                output = model(block[FEATURES_COLUMN][start : start + step].to(device))
                scores.append(output.float().cpu().numpy())
                labels.append(block[LABEL_COLUMN][start : start + step].numpy())
    return parts_metrics(config["task"], scores, labels, "val", unit=config["target_std"])


def _with_last(items: Any) -> Any:
    """(item, is_last) for each item of an iterable."""
    iterator = iter(items)
    current = next(iterator, _END)
    while current is not _END:
        following = next(iterator, _END)
        yield current, following is _END
        current = following


_END = object()


def _optimizer(parameters: Any, settings: dict[str, Any]) -> Any:
    import torch

    if settings["name"] == "sgd":
        return torch.optim.SGD(
            parameters, lr=settings["lr"], momentum=settings["momentum"], weight_decay=settings["weight_decay"]
        )
    kind = torch.optim.AdamW if settings["name"] == "adamw" else torch.optim.Adam
    return kind(parameters, lr=settings["lr"], weight_decay=settings["weight_decay"])


def train_loop_per_worker(config: dict[str, Any]) -> list[dict[str, float]]:
    """Runs on every Ray Train worker; returns the per-epoch metric history (rank 0's is kept)."""
    import contextlib
    import time

    import ray.train
    import ray.train.torch
    import torch

    from raymlp.package.networks import build_torch_model

    from .metrics import EarlyStopping
    from .progress import report_epoch
    from .shared_blocks import torch_columns
    from .torch_batches import shuffled_batches

    quiet_per_report_logs()

    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.manual_seed(config["seed"])
    device = ray.train.torch.get_device()
    network = build_torch_model(config["model_spec"], config["input_dim"], config["output_dim"])
    start_epoch, history, attempt = 0, [], 0
    checkpoint = ray.train.get_checkpoint() or start_checkpoint(config)
    state = None
    if checkpoint:  # a restarted worker group, or a resumed run: go on after the checkpoint's epoch
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
        network.load_state_dict(state["model"])
        start_epoch, history, attempt = state["epoch"] + 1, state["history"], state.get("attempt", 0) + 1
    stopping = EarlyStopping(config["early_stopping"])
    if stopping.replay(history):  # a resumed run that had already stopped
        return history
    model = ray.train.torch.prepare_model(network)
    optimizer = _optimizer(model.parameters(), config["optimizer"])
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # the saved state holds its settings too; the job's current ones win
            group.update({key: config["optimizer"][key] for key in ("lr", "momentum", "weight_decay") if key in group})
    mixed = config["mixed_precision"] and device.type == "cuda"  # float16 autocast needs a GPU
    scaler = torch.amp.GradScaler("cuda", enabled=mixed)
    accumulate = config["gradient_accumulation_steps"]

    classification = config["task"] == "classification"
    loss_fn = torch.nn.CrossEntropyLoss() if classification else torch.nn.MSELoss()
    # This worker's share of the train split and all of the validation split, read from Ray's
    # object store once for every epoch (shared_blocks.py).
    dtypes = {FEATURES_COLUMN: torch.float32, LABEL_COLUMN: config["label_dtype"]}
    train_blocks = [
        torch_columns(table, dtypes) for table in config["train_blocks"].shard(rank, context.get_world_size())
    ]
    validation = [torch_columns(table, dtypes) for table in config["validation_blocks"].whole()]
    for epoch in range(start_epoch, config["epochs"]):
        model.train()
        started = time.perf_counter()
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        optimizer.zero_grad()
        pending = 0  # batches whose gradients wait for the next optimizer step
        # Whole blocks, shuffled on this thread: the batches Ray's local shuffle buffer would draw
        # from them, without its per-batch work on a prefetch thread (see torch_batches.py).
        batches = shuffled_batches(
            train_blocks, config["batch_size"], max(config["batch_size"] * 8, 1024), config["seed"] + epoch, device
        )
        for batch, last in _with_last(batches):
            features, labels = batch[FEATURES_COLUMN], batch[LABEL_COLUMN]
            pending += 1
            # The epoch's last batch always steps: a gradient left unsynchronised would let the
            # replicas drift apart (and disagree on early stopping).
            step_now = pending == accumulate or last
            # DDP all-reduces gradients on every backward; between optimizer steps that is wasted.
            sync = contextlib.nullcontext() if step_now or not hasattr(model, "no_sync") else model.no_sync()  # type: ignore[operator]
            with sync, torch.autocast(device.type, dtype=torch.float16, enabled=mixed):
                output = model(features)
                loss = loss_fn(output, labels) if classification else loss_fn(output.squeeze(1), labels)
                scaler.scale(loss / accumulate).backward()
            if step_now:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
                pending = 0
            sums[0] += float(loss.detach()) * len(labels)
            sums[1] += len(labels)
        seconds = time.perf_counter() - started
        _sum_over_workers(sums)
        metrics = {
            "epoch": epoch + 1,
            "train_loss": float(sums[0]) / max(float(sums[1]), 1.0),
            "train_seconds": seconds,
            "attempt": attempt,
            "workers": context.get_world_size(),
        }
        metrics.update(_validation_metrics(model, validation, config, device))
        history.append(metrics)
        # Every worker computes the same metrics; agreeing on the decision still guards the
        # collectives of the next epoch against any worker stopping alone.
        stop = bool(_sum_over_workers(torch.tensor([float(stopping.should_stop(metrics))], device=device)).item() > 0)
        with tempfile.TemporaryDirectory() as folder:
            saved = None
            if rank == 0:
                unwrapped = getattr(model, "module", model)
                torch.save(
                    {
                        "model": unwrapped.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "epoch": epoch,
                        "history": history,
                        "attempt": attempt,
                        "workers": context.get_world_size(),
                    },
                    Path(folder) / STATE_FILE,
                )
                saved = ray.train.Checkpoint.from_directory(folder)
                report_epoch(
                    config["progress"],
                    epoch + 1,
                    config["epochs"],
                    {k: v for k, v in metrics.items() if k not in BOOKKEEPING},
                    int(sums[1]),
                    seconds,
                    job=config.get("job"),
                )
            ray.train.report(metrics, checkpoint=saved)
        if stop:
            break
    return history


def fit(request: TrainRequest) -> FitOutcome:
    """Train with TorchTrainer and return the best checkpoint's weights and the metric history."""
    import torch
    from ray.train.torch import TorchTrainer

    from .shared_blocks import SharedBlocks

    train = request.train
    classification = request.task == "classification"
    loop_config = {
        **epoch_loop_config(request),
        "label_dtype": torch.long if classification else torch.float32,
        "model_spec": request.model_spec,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "mixed_precision": train.mixed_precision,
        "train_blocks": SharedBlocks.of(request.datasets["train"]),
        "validation_blocks": SharedBlocks.of(request.datasets["validation"]),
    }
    result = run_trainer(TorchTrainer, train_loop_per_worker, loop_config, request, with_datasets=False)
    history = result.return_value or []
    best = best_checkpoint(result, request)
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
