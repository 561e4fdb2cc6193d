"""TensorFlow/Keras on Ray Train (V2): MultiWorkerMirroredStrategy over Ray Data shards, a
checkpoint every epoch, resumable. TensorFlow is imported only inside functions."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from raymlp.errors import UsageError
from raymlp.frameworks import FRAMEWORKS, said
from raymlp.package.formats.tensorflow_format import CUSTOM_WEIGHTS_FILE, MODEL_FILE, built
from raymlp.verbosity import import_quietly

from .backend import FitOutcome, TrainRequest
from .driver import best_checkpoint, epoch_loop_config, quiet_per_report_logs, run_trainer, start_checkpoint
from .features import FEATURES_COLUMN, LABEL_COLUMN

OPTIMIZER_FILE = "optimizer.npz"
STATE_FILE = "state.json"

#: Set in every training worker before TensorFlow loads: warnings and errors only.
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}


def _weights_file(spec: dict[str, Any]) -> str:
    return CUSTOM_WEIGHTS_FILE if spec["type"] == "custom" else MODEL_FILE


def _model_spec(request: TrainRequest) -> dict[str, Any]:
    """The resolved model spec; a cnn's image shape is resolved here when the request has none."""
    from raymlp.package.networks import image_shape

    spec = dict(request.model_spec or request.train.model.model_dump())
    if spec["type"] == "cnn":
        spec["image_shape"] = image_shape(spec.get("image_shape"), request.input_dim)
    return spec


def _optimizer(settings: dict[str, Any]) -> Any:
    """Keras optimizer of `train.optimizer`. adam and sgd take weight_decay as an L2 penalty added
    to the gradients (as torch does; see `_l2_gradients`), adamw as decoupled decay."""
    import keras

    if settings["name"] == "sgd":
        return keras.optimizers.SGD(learning_rate=settings["lr"], momentum=settings["momentum"])
    if settings["name"] == "adamw":
        return keras.optimizers.AdamW(learning_rate=settings["lr"], weight_decay=settings["weight_decay"])
    return keras.optimizers.Adam(learning_rate=settings["lr"])


def _quiet_worker() -> None:
    """Python-side TensorFlow and Ray Train per-report logs down to warnings."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    quiet_per_report_logs()


def _threads() -> None:
    """TensorFlow's thread pools sized to the worker's CPUs (Ray sets OMP_NUM_THREADS to them)."""
    import tensorflow as tf

    cpus = max(1, int(os.environ.get("OMP_NUM_THREADS") or 1))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, cpus))
    except RuntimeError:  # the runtime is already initialised in this process
        pass


def train_loop_per_worker(config: dict[str, Any]) -> list[dict[str, float]]:
    """Runs on every Ray Train worker; returns the per-epoch metric history (rank 0's is kept)."""
    import numpy as np
    import ray.train

    # Ray's TensorflowConfig sets TF_USE_LEGACY_KERAS=1 (Keras 2 as tf.keras); raymlp builds and
    # loads models with Keras 3, so a builder's `tf.keras` must mean the same in training and serving.
    os.environ["TF_USE_LEGACY_KERAS"] = "0"
    _threads()
    import keras
    import tensorflow as tf

    from raymlp.package.keras_networks import build_keras_model

    from .metrics import EarlyStopping
    from .progress import report_epoch

    _quiet_worker()
    # Created first, before any other TensorFlow op; its TF_CONFIG comes from Ray's Tensorflow backend.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rank = ray.train.get_context().get_world_rank()
    keras.utils.set_random_seed(config["seed"])
    spec, input_dim = config["model_spec"], config["input_dim"]
    classification = config["task"] == "classification"
    optimizer_settings = config["optimizer"]
    with strategy.scope():
        model = built(build_keras_model(spec, input_dim, config["output_dim"]), input_dim)
        optimizer = _optimizer(optimizer_settings)
        optimizer.build(model.trainable_variables)

    start_epoch, history = 0, []
    checkpoint = ray.train.get_checkpoint() or start_checkpoint(config)
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = json.loads((Path(folder) / STATE_FILE).read_text())
            model.load_weights(Path(folder) / _weights_file(spec))
            with np.load(Path(folder) / OPTIMIZER_FILE) as saved:
                optimizer.load_own_variables({key: saved[key] for key in saved.files})
        # The optimizer's state holds its learning rate too; the job's current one wins.
        optimizer.learning_rate = optimizer_settings["lr"]
        start_epoch, history = state["epoch"] + 1, state["history"]
    stopping = EarlyStopping(config["early_stopping"])
    if stopping.replay(history):  # a resumed run that had already stopped
        return history

    replicas = strategy.num_replicas_in_sync
    coupled_decay = optimizer_settings["weight_decay"] if optimizer_settings["name"] != "adamw" else 0.0
    label_dtype = tf.int64 if classification else tf.float32

    def per_example_loss(labels: Any, outputs: Any) -> Any:
        if classification:
            return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=outputs)
        return tf.square(tf.reshape(outputs, [-1]) - labels)

    def replica_step(features: Any, labels: Any) -> Any:
        with tf.GradientTape() as tape:
            losses = per_example_loss(labels, model(features, training=True))
            # Gradients are summed over replicas: the mean of the workers' batch means, as DDP does.
            loss = tf.reduce_mean(losses) / replicas
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)
        if coupled_decay:
            gradients = [
                gradient + coupled_decay * variable / replicas for gradient, variable in zip(gradients, variables)
            ]
        optimizer.apply_gradients(zip(gradients, variables))
        return tf.reduce_sum(losses)

    @tf.function(input_signature=[tf.TensorSpec([None, input_dim], tf.float32), tf.TensorSpec([None], label_dtype)])
    def train_step(features: Any, labels: Any) -> Any:
        return strategy.experimental_local_results(strategy.run(replica_step, args=(features, labels)))[0]

    @tf.function(input_signature=[tf.TensorSpec([None, input_dim], tf.float32)])
    def scores_of(features: Any) -> Any:
        return model(features, training=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float64)])
    def sum_over_workers(values: Any) -> Any:
        def replica_sum(local: Any) -> Any:
            # The value must be made inside the replica function: an input as such has no device
            # the collective could reduce to ("destinations can not be empty").
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(local))

        return strategy.experimental_local_results(strategy.run(replica_sum, args=(values,)))[0]

    train_shard = ray.train.get_dataset_shard("train")
    validation = ray.train.get_dataset_shard("validation")
    label_numpy = np.int64 if classification else np.float32
    for epoch in range(start_epoch, config["epochs"]):
        started = time.perf_counter()
        loss_sum, rows = 0.0, 0
        # Ray Data splits the train set into equal shards, so every worker runs the same number of
        # steps (each step is a collective all-reduce of the gradients).
        for batch in train_shard.iter_batches(
            batch_size=config["batch_size"],
            batch_format="numpy",
            local_shuffle_buffer_size=max(config["batch_size"] * 8, 1024),
            local_shuffle_seed=config["seed"] + epoch,
        ):
            labels = np.asarray(batch[LABEL_COLUMN], dtype=label_numpy)
            loss_sum += float(train_step(np.asarray(batch[FEATURES_COLUMN], dtype=np.float32), labels))
            rows += len(labels)
        seconds = time.perf_counter() - started
        total_loss, total_rows = sum_over_workers(np.array([loss_sum, rows], dtype=np.float64)).numpy()
        metrics = {"epoch": epoch + 1, "train_loss": float(total_loss) / max(float(total_rows), 1.0)}
        metrics.update(_validation_metrics(scores_of, validation, config))
        # Every worker computes the same validation metrics; stopping when any worker says so makes
        # sure no worker is left waiting in a collective for one that stopped.
        stop = stopping.should_stop(metrics)
        stop = float(sum_over_workers(np.array([float(stop)], dtype=np.float64)).numpy()[0]) > 0
        history.append(metrics)
        # Every worker saves (saving a distributed model may take part in collectives); rank 0's is reported.
        with tempfile.TemporaryDirectory() as folder:
            _save_state(Path(folder), model, optimizer, spec, epoch, history)
            saved = ray.train.Checkpoint.from_directory(folder) if rank == 0 else None
            if rank == 0:
                report_epoch(
                    config["progress"],
                    epoch + 1,
                    config["epochs"],
                    {key: value for key, value in metrics.items() if key != "epoch"},
                    int(total_rows),
                    seconds,
                    job=config.get("job"),
                )
            ray.train.report(metrics, checkpoint=saved)
        if stop:
            break
    return history


def _validation_metrics(scores_of: Any, validation: Any, config: dict[str, Any]) -> dict[str, float]:
    """Metrics of the whole validation split: every worker holds all of it (it is not split), so
    every worker computes the same numbers."""
    import numpy as np

    from .metrics import parts_metrics

    scores, labels = [], []
    for batch in validation.iter_batches(batch_size=max(config["batch_size"], 1024), batch_format="numpy"):
        scores.append(scores_of(np.asarray(batch[FEATURES_COLUMN], dtype=np.float32)).numpy())
        labels.append(np.asarray(batch[LABEL_COLUMN]))
    return parts_metrics(config["task"], scores, labels, "val", unit=config["target_std"])


def _save_state(
    folder: Path, model: Any, optimizer: Any, spec: dict[str, Any], epoch: int, history: list[dict[str, float]]
) -> None:
    """A checkpoint: the model, the optimizer's variables, the epoch (0-based) and the history so far."""
    import numpy as np

    if spec["type"] == "custom":
        model.save_weights(str(folder / CUSTOM_WEIGHTS_FILE))
    else:
        model.save(str(folder / MODEL_FILE))
    store: dict[str, Any] = {}
    optimizer.save_own_variables(store)
    np.savez(folder / OPTIMIZER_FILE, **{key: np.asarray(value) for key, value in store.items()})  # type: ignore[arg-type]
    (folder / STATE_FILE).write_text(json.dumps({"epoch": epoch, "history": history}))


def fit(request: TrainRequest) -> FitOutcome:
    """Train with TensorflowTrainer and return the best checkpoint's model file and the metric history."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # ray.train.tensorflow imports TensorFlow here too
    import_quietly("tensorflow")
    from ray.train.tensorflow import TensorflowTrainer

    spec = _model_spec(request)
    builds = FRAMEWORKS["tensorflow"].models
    if spec["type"] not in builds:
        raise UsageError(f"train.model.type: tensorflow builds {said(builds, 'or')}, not '{spec['type']}'")
    loop_config = {**epoch_loop_config(request), "model_spec": spec}
    result = run_trainer(TensorflowTrainer, train_loop_per_worker, loop_config, request, worker_env=WORKER_ENV)
    best = best_checkpoint(result, request)
    weights = Path(request.output_dir) / _weights_file(spec)
    weights.parent.mkdir(parents=True, exist_ok=True)
    with best.as_directory() as folder:
        state = json.loads((Path(folder) / STATE_FILE).read_text())
        shutil.copyfile(Path(folder) / _weights_file(spec), weights)
    history = result.return_value or state["history"]
    best_epoch = state["epoch"] + 1
    best_metrics = next((row for row in history if row["epoch"] == best_epoch), history[-1] if history else {})
    return FitOutcome(
        history=history,
        best_metrics=best_metrics,
        best_epoch=best_epoch,
        weights=weights,
        checkpoint_path=best.path,
        result_path=result.path,
    )
