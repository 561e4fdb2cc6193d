"""Run by test_object_storage.py in a process of its own (the test session is connected to another Ray):
a two-node `ray.cluster_utils.Cluster` whose head has no CPUs, so every task, training worker and
replica runs on the second node, whose raylet has a RAYMLP_HOME of its own. Jobs run in turn on it;
each prints one JSON line with its summary, the answer its endpoint gave to a real HTTP request for
the first rows of the predict input, and where it ran.

Arguments: HEAD_HOME NODE_HOME PORT JOB[:STAGE,STAGE...]... (a job's stages: all of them by default)
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def main(head_home: str, node_home: str, port: int, jobs: list[str]) -> None:
    os.environ["RAYMLP_HOME"] = head_home  # the driver's; the worker node's raylet gets its own
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=3, env_vars={"RAYMLP_HOME": node_home})
    ray.init(address=cluster.address, logging_level="WARNING")
    cluster.wait_for_nodes()
    try:
        for argument in jobs:
            job, _, stages = argument.partition(":")
            print(json.dumps(_run(job, port, stages.split(",") if stages else None)), flush=True)
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def _run(job_path: str, port: int, stages: list[str] | None) -> dict:
    import requests

    from raymlp import load_job, run_job
    from raymlp.context import Reporter

    job = load_job(job_path, [f"serve.port={port}"] if load_job(job_path).config.serve else [])
    try:
        summary = run_job(job, only=stages, reporter=Reporter(quiet=True))
    except Exception as error:
        return {"job": job_path, "error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-3000:]}
    from raymlp.storage import files

    outcome = {"job": job_path, "summary": dict(vars(summary))}
    if summary.predictions:
        outcome["predictions"] = files.read_text(summary.predictions)
    if summary.endpoint:  # a real HTTP request for the first rows of what the job predicted
        answer = requests.post(summary.endpoint, json=_first_rows(job.config.predict.input, 5), timeout=60)
        outcome.update(status=answer.status_code, answer=answer.json())
    return outcome


def _first_rows(source: str, count: int) -> list[dict]:
    import io

    import pyarrow.csv as pacsv

    from raymlp.storage import files

    table = pacsv.read_csv(io.BytesIO(files.read_bytes(source)))
    return table.drop(["target"]).slice(0, count).to_pylist()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:])
