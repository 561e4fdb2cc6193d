"""Torch MLP on tabular rows: raymlp's train stage (Ray Train, 1 and 2 workers) against plain PyTorch.

    .venv/bin/python benchmarks/train/bench_torch_mlp.py                          # 500k rows, 6 epochs
    .venv/bin/python benchmarks/train/bench_torch_mlp.py --rows 50000 --epochs 3  # smoke size

The data: `--rows` rows of 20 float32 features (standard normal) and a 4-class label from a fixed
random two-layer function, written as one Parquet file. raymlp runs the job's `convert` and `train`
stages through the Python API, each run in a fresh Python process as `raymlp run` would be (an
embedded local Ray it starts itself, one RAYMLP_HOME in a temporary folder for all runs): split
80/10/10, a standard scaler, the MLP on Ray Train with 1 and then 2 workers, a pass over the whole
validation split and a checkpoint every epoch. The baseline is a plain PyTorch loop in this process
over tensors of the same size as the train split: the same MLP, batch size and Adam, a fresh
`randperm` every epoch, `torch.set_num_threads(1)`: what one Ray worker with 1 CPU gets (Ray sets
OMP_NUM_THREADS to a worker's CPUs). For 2 workers there is a second reference: the same loop in
2 processes under plain torch DistributedDataParallel (gloo), each on half the rows.

Steady-state samples/s: the train rows divided by each epoch's `train_seconds` (the torch
backend's own timing of its pass over its shard; rank 0's, read back from the MLflow run), the
first epoch excluded; best and median over epochs. Start-up: from the call of `run_job` to the
first epoch's first batch, in parts (see `startup`). raymlp and the baseline alternate,
`--repeats` times each; the machine's load average is printed beside every figure.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FEATURES = 20
CLASSES = 4
HELD_OUT = 0.2  # split: validation 0.1, test 0.1


def write_rows(path: Path, rows: int) -> None:
    """`rows` rows: f00..f19 standard normal (float32), label = argmax of a fixed random 2-layer net."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    first, second = rng.standard_normal((FEATURES, 16)), rng.standard_normal((16, CLASSES))
    features = rng.standard_normal((rows, FEATURES), dtype=np.float32)
    label = np.argmax(np.tanh(features @ first) @ second, axis=1).astype(np.int64)
    columns = {f"f{index:02d}": features[:, index] for index in range(FEATURES)}
    pq.write_table(pa.table({**columns, "label": label}), path)


def write_job(folder: Path, data: Path, args: argparse.Namespace, workers: int) -> Path:
    job = folder / f"bench-{workers}.yaml"
    hidden = ", ".join(str(width) for width in args.hidden)
    job.write_text(f"""version: 1
name: bench-torch-mlp
data:
  source: {{format: parquet, path: '{data}'}}
  dataset: {{name: bench_tabular}}
  label: label
  split: {{validation: 0.1, test: 0.1, seed: 0}}
preprocess:
  - {{type: standard_scaler}}
train:
  framework: torch
  model: {{type: mlp, hidden_layers: [{hidden}], dropout: 0.0}}
  epochs: {args.epochs}
  batch_size: {args.batch_size}
  optimizer: {{name: adam, lr: 0.001}}
  scaling: {{num_workers: {workers}}}
  checkpoint: {{num_to_keep: 1, metric: val_loss, mode: min}}
  seed: 0
""")
    return job


# --- raymlp, in a child process ----------------------------------------------------------------


def recording_reporter():
    """A Reporter that shows nothing but notes when each stage line and epoch line arrives.

    Not quiet, so the run sends its per-epoch progress records to this process as a user's
    terminal would get them."""
    from rich.console import Console

    from raymlp.context import Reporter

    class Recording(Reporter):
        def __init__(self) -> None:
            super().__init__(quiet=False, console=Console(file=io.StringIO()))
            self.events: list[tuple[float, str, str]] = []

        def stage(self, name: str, detail: str) -> None:
            self.events.append((time.time(), name, detail))

        def info(self, message: str) -> None:
            self.events.append((time.time(), "info", message))

    return Recording()


def epoch_history(mlflow_run_id: str, key: str) -> list[float]:
    from raymlp.storage import resolve_storage
    from raymlp.tracking import Tracker

    storage = resolve_storage()
    history = Tracker(storage.tracking_uri, storage.root).client.get_metric_history(mlflow_run_id, key)
    return [metric.value for metric in sorted(history, key=lambda metric: metric.step)]


def first_train_iteration_at(ray_tmpdir: str) -> float | None:
    """When a worker first iterated its train shard: the first line of Ray Data's log for the
    train split's first execution (each epoch's pass over a shard is one execution)."""
    logs = sorted(glob.glob(f"{ray_tmpdir}/ray/session_*/logs/ray-data/ray-data-train_*_0.log"))
    if not logs:
        return None
    with open(logs[-1]) as log:
        stamp = log.readline()[:23]  # 2026-12-01 18:37:58,072
    try:
        return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def startup(
    events: list[tuple[float, str, str]],
    run_started: float,
    ray_seconds: float,
    train_seconds: list[float],
    first_iteration: float | None,
) -> dict:
    """Seconds from `run_job` to the first epoch's first batch, in parts (wall clock of this machine).

    convert: the convert stage. ray_init: `ray.init` of the embedded Ray. prepare: Ray up to
    TorchTrainer.fit (the `train` line): the version read, split, scaler fitted and both splits
    materialised on Ray Data, the MLflow run opened. trainer: fit to the worker's first pass over
    its shard (controller, worker group and torch process group, shard set-up). Not in the total:
    first_pass_extra, how much longer the first pass took than a steady one, and
    after_pass_per_epoch, an epoch's work after its train pass (validation pass, checkpoint,
    report; the median over epochs of record interval minus train pass).
    When Ray Data's log is not there, the first pass's start is estimated: epoch 1's record
    arrival minus its train pass minus the after-pass work (validation, checkpoint, report) of
    later epochs."""
    ray_up = next(at for at, name, _ in events if name == "ray")
    convert_done = ray_up - ray_seconds
    fit_called = next(at for at, name, _ in events if name == "train")
    arrivals = [at for at, name, text in events if name == "info" and "epoch " in text]
    after_pass = (
        statistics.median(arrivals[i] - arrivals[i - 1] - train_seconds[i] for i in range(1, len(arrivals)))
        if len(arrivals) > 1
        else 0.0
    )
    estimated = first_iteration is None
    if estimated:
        first_iteration = arrivals[0] - train_seconds[0] - after_pass
    parts = {
        "convert": convert_done - run_started,
        "ray_init": ray_seconds,
        "prepare": fit_called - ray_up,
        "trainer": first_iteration - fit_called,
    }
    parts["total"] = sum(parts.values())
    steady = statistics.median(train_seconds[1:]) if len(train_seconds) > 1 else train_seconds[0]
    parts["first_pass_extra"] = max(train_seconds[0] - steady, 0.0)
    parts["after_pass_per_epoch"] = after_pass
    parts["estimated"] = estimated
    return parts


def child_run(spec: dict) -> dict:
    """One raymlp run (this process is fresh: imports and Ray start as `raymlp run` pays them)."""
    from raymlp import load_job, run_job

    os.environ["RAYMLP_HOME"] = spec["home"]
    # ray.init() with no address joins the cluster in <RAY_TMPDIR>/ray/ray_current_cluster when
    # one is up (another user's on the same machine): give this run's Ray a temp dir of its own.
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="r", dir=spec["tmp"])
    reporter = recording_reporter()
    job = load_job(spec["job"])
    started = time.time()
    summary = run_job(job, only=["convert", "train"], reporter=reporter)
    wall = time.time() - started
    seconds = epoch_history(summary.mlflow_run_id, "train_seconds")
    rows = spec["train_rows"]
    steady = [rows / value for value in seconds[1:]] or [rows / seconds[0]]
    return {
        "workers": spec["workers"],
        "wall": wall,
        "stages": summary.stages,
        "epoch_train_seconds": seconds,
        "samples_per_s": max(steady),
        "samples_per_s_median": statistics.median(steady),
        "startup": startup(
            reporter.events,
            started,
            summary.ray_startup_seconds,
            seconds,
            first_train_iteration_at(os.environ["RAY_TMPDIR"]),
        ),
        "val_accuracy": epoch_history(summary.mlflow_run_id, "val_accuracy")[-1],
    }


def run_raymlp(home: Path, data: Path, args: argparse.Namespace, workers: int, train_rows: int) -> dict:
    spec = {
        "home": str(home / ".raymlp"),
        "tmp": str(home),
        "job": str(write_job(home, data, args, workers)),
        "workers": workers,
        "train_rows": train_rows,
    }
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], check=False, capture_output=True, text=True
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"raymlp run failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


# --- baselines ---------------------------------------------------------------------------------


def baseline_tensors(data: Path, train_rows: int):
    """The first `train_rows` rows, standardised, as float32 features and int64 labels."""
    import pyarrow.parquet as pq
    import torch

    table = pq.read_table(data)
    matrix = np.column_stack([table[f"f{index:02d}"].to_numpy() for index in range(FEATURES)])[:train_rows]
    features = torch.from_numpy((matrix - matrix.mean(0)) / matrix.std(0)).float()
    return features, torch.from_numpy(table["label"].to_numpy()[:train_rows].copy())


def train_plainly(model, features, labels, batch_size: int, epochs: int) -> list[float]:
    """A plain PyTorch loop; seconds of each epoch's pass."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    loss_fn = torch.nn.CrossEntropyLoss()
    rows, seconds = len(labels), []
    for _ in range(epochs):
        model.train()
        started = time.perf_counter()
        order, total = torch.randperm(rows), 0.0
        for start in range(0, rows, batch_size):
            index = order[start : start + batch_size]
            batch, target = features[index], labels[index]
            loss = loss_fn(model(batch), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(target)
        seconds.append(time.perf_counter() - started)
    return seconds


def rates(rows: int, seconds: list[float]) -> dict:
    steady = [rows / value for value in seconds[1:]] or [rows / seconds[0]]
    return {
        "epoch_train_seconds": seconds,
        "samples_per_s": max(steady),
        "samples_per_s_median": statistics.median(steady),
    }


def run_baseline(data: Path, args: argparse.Namespace, train_rows: int) -> dict:
    import torch

    from raymlp.package.networks import build_torch_mlp

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        features, labels = baseline_tensors(data, train_rows)
        torch.manual_seed(0)
        model = build_torch_mlp(FEATURES, CLASSES, list(args.hidden), 0.0, "relu")
        return rates(train_rows, train_plainly(model, features, labels, args.batch_size, args.epochs))
    finally:
        torch.set_num_threads(previous)


def _ddp_rank(rank: int, world: int, port: int, data: str, train_rows: int, args: dict, out: str) -> None:
    import torch
    import torch.distributed as dist

    from raymlp.package.networks import build_torch_mlp

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    features, labels = baseline_tensors(Path(data), train_rows)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(build_torch_mlp(FEATURES, CLASSES, args["hidden"], 0.0, "relu"))
    seconds = train_plainly(model, features[rank::world], labels[rank::world], args["batch_size"], args["epochs"])
    if rank == 0:
        Path(out).write_text(json.dumps(seconds))
    dist.barrier()
    dist.destroy_process_group()


def run_ddp_baseline(data: Path, args: argparse.Namespace, train_rows: int, world: int, folder: Path) -> dict:
    """The plain loop in `world` processes under torch DistributedDataParallel (gloo, 1 thread each)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = folder / "ddp.json"
    mp.start_processes(
        _ddp_rank,
        args=(
            world,
            port,
            str(data),
            train_rows,
            {"hidden": list(args.hidden), "batch_size": args.batch_size, "epochs": args.epochs},
            str(out),
        ),
        nprocs=world,
        start_method="spawn",
    )
    return rates(train_rows, json.loads(out.read_text()))


# --- report ------------------------------------------------------------------------------------


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _busy_fraction(seconds: float = 2.0) -> float:
    """Share of all CPUs' time spent busy over `seconds` (Linux /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(value) for value in stat.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    total, idle = sample()
    time.sleep(seconds)
    total_after, idle_after = sample()
    return 1.0 - (idle_after - idle) / max(total_after - total, 1)


def wait_until_idle(limit_s: float, busy_below: float = 0.25) -> None:
    """On a shared machine: wait (at most `limit_s`) until other work leaves the CPUs mostly idle."""
    deadline = time.monotonic() + limit_s
    while limit_s > 0 and time.monotonic() < deadline and _busy_fraction() >= busy_below:
        pass


def _range(runs: list[dict], key: str) -> str:
    values = [run[key] for run in runs]
    return f"{min(values):,.0f}-{max(values):,.0f}"


def report(args: argparse.Namespace, train_rows: int, runs: dict[str, list[dict]]) -> None:
    baseline = max(run["samples_per_s"] for run in runs["baseline"])
    print(
        f"torch MLP {args.hidden}, {args.rows:,} rows ({train_rows:,} train), batch {args.batch_size}, Adam, "
        f"{args.epochs} epochs, {args.repeats} runs each, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    print("samples/s: steady state (epochs after the first), best epoch of the best run; range: best epoch of each run")
    print(f"{'side':<30}{'samples/s':>11}{'range':>20}{'vs baseline':>13}{'start-up s':>13}")
    print(
        f"{'baseline (1 process, 1 thread)':<30}{baseline:>11,.0f}{_range(runs['baseline'], 'samples_per_s'):>20}{'1.00x':>13}{'-':>13}"
    )
    if runs.get("ddp"):
        best = max(run["samples_per_s"] for run in runs["ddp"])
        print(
            f"{'torch DDP, 2 processes':<30}{best:>11,.0f}{_range(runs['ddp'], 'samples_per_s'):>20}{best / baseline:>12.2f}x{'-':>13}"
        )
    for workers in args.workers:
        done = runs[f"raymlp-{workers}"]
        best = max(run["samples_per_s"] for run in done)
        starts = [run["startup"]["total"] for run in done]
        print(
            f"{f'raymlp, {workers} worker(s)':<30}{best:>11,.0f}{_range(done, 'samples_per_s'):>20}{best / baseline:>12.2f}x"
            f"{f'{min(starts):.1f}-{max(starts):.1f}':>13}"
        )
    if len(args.workers) > 1:
        one = max(run["samples_per_s"] for run in runs[f"raymlp-{args.workers[0]}"])
        for workers in args.workers[1:]:
            many = max(run["samples_per_s"] for run in runs[f"raymlp-{workers}"])
            print(f"raymlp scaling {args.workers[0]} -> {workers} workers: {many / one:.2f}x")
    print("start-up, s (run_job to the first epoch's first batch), each run in order:")
    for workers in args.workers:
        for run in runs[f"raymlp-{workers}"]:
            parts = run["startup"]
            shown = ", ".join(f"{key} {parts[key]:.1f}" for key in ("convert", "ray_init", "prepare", "trainer"))
            print(
                f"  {workers} worker(s): {parts['total']:.1f} = {shown}; first pass +{parts['first_pass_extra']:.1f}, "
                f"after each pass {parts['after_pass_per_epoch']:.2f}"
                + (" (first pass start estimated)" if parts["estimated"] else "")
                + f"  [load {run['load']}]"
            )
    print("goals: 1 worker >= 0.9x the baseline; start-up < 15 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternated")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON too")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for the CPUs to be at least 75%% idle (a shared machine)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child_run(json.loads(args.child))), flush=True)
        return
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not steady state)")

    runs: dict[str, list[dict]] = {"baseline": [], "ddp": [], **{f"raymlp-{workers}": [] for workers in args.workers}}
    with tempfile.TemporaryDirectory() as folder:
        home, data = Path(folder), Path(folder) / "rows.parquet"
        write_rows(data, args.rows)
        train_rows = args.rows - math.ceil(args.rows * HELD_OUT)  # what the split leaves (sklearn rounds up)
        for repeat in range(args.repeats):
            for workers in args.workers:
                if workers == args.workers[0]:
                    wait_until_idle(args.wait_idle)
                    runs["baseline"].append({**run_baseline(data, args, train_rows), "load": load_average()})
                    print(
                        f"[{repeat + 1}/{args.repeats}] baseline: {runs['baseline'][-1]['samples_per_s']:,.0f} samples/s "
                        f"(load {runs['baseline'][-1]['load']})",
                        file=sys.stderr,
                        flush=True,
                    )
                if workers == 2:
                    wait_until_idle(args.wait_idle)
                    runs["ddp"].append(
                        {**run_ddp_baseline(data, args, train_rows, workers, home), "load": load_average()}
                    )
                    print(
                        f"[{repeat + 1}/{args.repeats}] torch DDP 2 processes: {runs['ddp'][-1]['samples_per_s']:,.0f} "
                        f"samples/s (load {runs['ddp'][-1]['load']})",
                        file=sys.stderr,
                        flush=True,
                    )
                wait_until_idle(args.wait_idle)
                result = {**run_raymlp(home, data, args, workers, train_rows), "load": load_average()}
                runs[f"raymlp-{workers}"].append(result)
                print(
                    f"[{repeat + 1}/{args.repeats}] raymlp {workers} worker(s): {result['samples_per_s']:,.0f} samples/s, "
                    f"start-up {result['startup']['total']:.1f} s (load {result['load']})",
                    file=sys.stderr,
                    flush=True,
                )
    report(args, train_rows, runs)
    if args.json:
        print(json.dumps({"args": vars(args), "train_rows": train_rows, "runs": runs}))


if __name__ == "__main__":
    main()
