"""Run by test_node_loss.py in a process of its own (the test session is connected to another Ray):
a three-node `ray.cluster_utils.Cluster`, a torch job whose two workers sit on the two worker
nodes, and one of those nodes killed once training has checkpointed. A replacement node joins, as
an autoscaler would add one. Prints the run's summary and per-epoch attempts as JSON.

Arguments: HOME JOB...: the jobs run in turn on the one cluster and the one RAYMLP_HOME (a cluster's
start is the slow part), a JSON line each; a job refused before it trains leaves both as they were."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path


def main(home: str, jobs: list[str]) -> None:
    import os

    os.environ["RAYMLP_HOME"] = home  # before the cluster starts: its processes inherit it
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    doomed = [cluster.add_node(num_cpus=1, resources={"train_slot": 1})]
    cluster.add_node(num_cpus=1, resources={"train_slot": 1})
    ray.init(address=cluster.address, logging_level="WARNING")
    cluster.wait_for_nodes()
    try:
        for job_path in jobs:
            print(json.dumps(_run(cluster, doomed, job_path, home)), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


def _run(cluster, doomed: list, job_path: str, home: str) -> dict:
    """One job on the cluster, killing a worker's node (`doomed[0]`, then its replacement) once training has
    checkpointed twice."""
    from raymlp import load_job, run_job
    from raymlp.context import Reporter

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
        cluster.remove_node(doomed[0], allow_graceful=False)
        doomed[0] = cluster.add_node(num_cpus=1, resources={"train_slot": 1})  # the autoscaler's replacement
    trainer.join()
    if "error" in outcome:
        return {"job": job_path, "error": outcome["error"]}
    from mlflow.tracking import MlflowClient

    summary = outcome["summary"]
    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    attempts = {point.step: point.value for point in client.get_metric_history(summary.mlflow_run_id, "attempt")}
    return {"job": job_path, "metrics": summary.metrics, "attempts": attempts, "killed": killed}


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
