"""Run by test_node_loss.py in a process of its own (the test session is connected to another Ray):
a three-node `ray.cluster_utils.Cluster`, a torch job whose two workers sit on the two worker
nodes, and one of those nodes killed once training has checkpointed. A replacement node joins, as
an autoscaler would add one. Prints the run's summary and per-epoch attempts as JSON."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path


def main(job_path: str, home: str) -> None:
    import os

    os.environ["RAYMLP_HOME"] = home
    import ray
    from ray.cluster_utils import Cluster

    from raymlp import load_job, run_job
    from raymlp.context import Reporter

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    doomed = cluster.add_node(num_cpus=1, resources={"train_slot": 1})
    cluster.add_node(num_cpus=1, resources={"train_slot": 1})
    ray.init(address=cluster.address, logging_level="WARNING")
    cluster.wait_for_nodes()
    outcome: dict = {}

    def train() -> None:  # in a thread: adding a node needs the main thread (signal handlers)
        try:
            outcome["summary"] = run_job(load_job(job_path), reporter=Reporter(quiet=True))
        except Exception as error:  # reported to the test, which fails with it
            outcome["error"] = f"{type(error).__name__}: {error}"

    trainer = threading.Thread(target=train, name="raymlp-train-driver", daemon=True)
    trainer.start()
    results = Path(home) / "ray_results"
    while trainer.is_alive() and len([p for p in results.rglob("checkpoint_*") if p.is_dir()]) < 2:
        time.sleep(0.1)
    killed = trainer.is_alive()
    if killed:
        cluster.remove_node(doomed, allow_graceful=False)
        cluster.add_node(num_cpus=1, resources={"train_slot": 1})  # the autoscaler's replacement
    trainer.join()
    try:
        if "error" in outcome:
            print(json.dumps({"error": outcome["error"]}))
            return
        from mlflow.tracking import MlflowClient

        summary = outcome["summary"]
        client = MlflowClient(f"sqlite:///{home}/mlflow.db")
        attempts = {point.step: point.value for point in client.get_metric_history(summary.mlflow_run_id, "attempt")}
        print(json.dumps({"metrics": summary.metrics, "attempts": attempts, "killed": killed}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
