"""A worker's node is lost mid-training on a three-node cluster: the run finishes, resumed from a
checkpoint, and meets the same bar. Also: several nodes need storage every node sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO

pytestmark = [pytest.mark.integration]


def _job(folder, shared: bool):
    text = (REPO / "jobs" / "wine-torch.yaml").read_text()
    text = text.replace("  early_stopping: {metric: val_loss, mode: min, patience: 8}\n", "")
    text = text.replace("epochs: 30", "epochs: 14")
    text = text.replace(
        "scaling: {num_workers: 2}",
        "scaling: {num_workers: 2, resources_per_worker: {CPU: 1, train_slot: 1}}\n  max_failures: 2",
    )
    if shared:
        text = text.replace("version: 1\n", "version: 1\nstorage: {shared: true}\n", 1)
    path = folder / f"job-{'shared' if shared else 'local'}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, dict]:
    """Both jobs on one three-node cluster (its start is the slow part), in one RAYMLP_HOME: first the one
    with a local storage root, refused before it trains, then the shared one, which loses a node."""
    folder = tmp_path_factory.mktemp("node-loss")
    jobs = {"local": _job(folder, shared=False), "shared": _job(folder, shared=True)}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "integration" / "node_loss.py"),
            str(folder / "home"),
            str(jobs["local"]),
            str(jobs["shared"]),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={
            **os.environ,
            "RAY_ADDRESS": "",
            # the session cluster's dashboard is not this cluster's; port 9 answers nobody
            "RAY_API_SERVER_ADDRESS": "http://127.0.0.1:9",
        },
        cwd=folder,
    )
    printed = {
        found["job"]: found for found in (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
    }
    return {
        kind: printed.get(str(job), {"error": "no outcome: " + done.stdout[-3000:] + done.stderr[-5000:]})
        for kind, job in jobs.items()
    }


def test_training_survives_the_loss_of_a_workers_node(outcomes):
    outcome = outcomes["shared"]
    assert "error" not in outcome, outcome
    assert outcome["killed"]
    attempts = {int(epoch): attempt for epoch, attempt in outcome["attempts"].items()}
    assert sorted(attempts) == list(range(1, 15))
    resumed_at = min(epoch for epoch, attempt in attempts.items() if attempt >= 1)
    assert resumed_at > 1  # it went on from a checkpoint, not from the start
    assert outcome["metrics"]["test_accuracy"] >= 0.9


def test_a_local_storage_root_is_refused_on_several_nodes(outcomes):
    outcome = outcomes["local"]
    assert outcome["error"].startswith("UsageError: storage.root:") and "storage.shared: true" in outcome["error"], (
        outcome
    )
