"""Epoch progress from training workers to the driver's terminal.

Rank 0 of a Ray Train worker group (or a sklearn fit task) puts one record per epoch on a Ray
queue; a thread on the driver shows it while `fit` blocks. The queue is an actor with no CPU, so
it never takes a slot from the workers; a record that cannot be delivered is dropped, never
waited for: progress must not slow training.

The same worker also publishes each epoch as Ray metrics (`raymlp_train_epochs_finished`,
`raymlp_train_samples_per_second`, tagged with the job and stage `train`; `raymlp.metrics`), with or
without a terminal to show it on.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from raymlp.context import Reporter


def report_epoch(
    queue: Any,
    epoch: int,
    epochs: int,
    metrics: dict[str, float],
    samples: int,
    seconds: float,
    *,
    job: str | None = None,
) -> None:
    """Worker side: one epoch's record (call it on one worker only). `samples` are all workers'.
    `job` tags the epoch's Ray metrics (default: from the Ray Train run's name, `<job>-<run id>`)."""
    publish_epoch(job, samples, seconds)
    if queue is None:
        return
    try:
        queue.put_nowait(
            {"epoch": epoch, "epochs": epochs, "metrics": dict(metrics), "samples": samples, "seconds": seconds}
        )
    except Exception:  # a full or vanished queue: progress is best effort
        pass


def publish_epoch(job: str | None, samples: int, seconds: float) -> None:
    """One finished epoch and its samples per second, as Ray metrics of this process (best effort)."""
    from raymlp import metrics as ray_metrics

    if not ray_metrics.connected():
        return
    try:
        if job is None:
            import ray.train

            job = ray_metrics.job_and_run(ray.train.get_context().get_experiment_name())[0]
        tags = ray_metrics.tags(job, "train")
    except Exception:  # outside a Ray Train worker and not told the job
        return
    ray_metrics.inc(ray_metrics.TRAIN_EPOCHS, 1, tags)
    if seconds > 0:
        ray_metrics.set_gauge(ray_metrics.TRAIN_SAMPLES_PER_SECOND, samples / seconds, tags)


def epoch_line(record: dict[str, Any]) -> str:
    """`epoch 3/30  train_loss 0.4123  val_accuracy 0.9310  12,345 samples/s`."""
    shown = "  ".join(
        f"{name} {value:.4f}"
        for name, value in record["metrics"].items()
        if name != "epoch" and isinstance(value, int | float)
    )
    rate = record["samples"] / record["seconds"] if record["seconds"] > 0 else 0.0
    return f"epoch {record['epoch']}/{record['epochs']}  {shown}  {rate:,.0f} samples/s"


class TrainingProgress:
    """Driver side: `with TrainingProgress(reporter) as progress:` pass `progress.queue` to the
    workers; each record becomes a `train` line while the block runs."""

    def __init__(self, reporter: Reporter, name: str | None = None):
        self.reporter = reporter
        self.name = name  # the queue actor's name on the dashboard (`job/train: progress of run 1a2b3c4d`)
        self.queue: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TrainingProgress:
        if self.reporter.quiet:
            return self
        from ray.util.queue import Queue

        options: dict[str, Any] = {"num_cpus": 0}
        try:
            # A name makes a named actor, unique in the job's namespace: one already taken (the
            # same run's queue left over) leaves this one unnamed rather than failing the run.
            self.queue = Queue(maxsize=1000, actor_options={**options, "name": self.name} if self.name else options)
        except ValueError:
            self.queue = Queue(maxsize=1000, actor_options=options)
        self._thread = threading.Thread(target=self._show, name="raymlp-train-progress", daemon=True)
        self._thread.start()
        return self

    def _show(self) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                record = self.queue.get(timeout=0.5)
            except Empty:
                if self._stop.is_set():
                    return
                continue
            except Exception:  # the queue's actor is gone (Ray shut down)
                return
            self.reporter.info(f"    train  {epoch_line(record)}")

    def __exit__(self, *exc: object) -> None:
        if self.queue is None:
            return
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # let the last records through
            try:
                if self.queue.empty():
                    break
            except Exception:
                break
            time.sleep(0.05)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.queue.shutdown()
        except Exception:
            pass
