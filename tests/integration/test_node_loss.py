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
    text = text.replace("scaling: {num_workers: 2}",
                        "scaling: {num_workers: 2, resources_per_worker: {CPU: 1, train_slot: 1}}\n  max_failures: 2")
    if shared:
        text = text.replace("version: 1\n", "version: 1\nstorage: {shared: true}\n", 1)
    path = folder / f"job-{'shared' if shared else 'local'}.yaml"
    path.write_text(text)
    return path


def _run(job, home) -> dict:
    done = subprocess.run([sys.executable, str(REPO / "tests" / "integration" / "node_loss.py"), str(job), str(home)],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "RAY_ADDRESS": "",
                          # the session cluster's dashboard is not this cluster's; port 9 answers nobody
                          "RAY_API_SERVER_ADDRESS": "http://127.0.0.1:9"}, cwd=job.parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout[-3000:] + done.stderr[-5000:]
    return json.loads(lines[-1])


def test_training_survives_the_loss_of_a_workers_node(tmp_path):
    outcome = _run(_job(tmp_path, shared=True), tmp_path / "home")
    assert "error" not in outcome, outcome
    assert outcome["killed"]
    attempts = {int(epoch): attempt for epoch, attempt in outcome["attempts"].items()}
    assert sorted(attempts) == list(range(1, 15))
    resumed_at = min(epoch for epoch, attempt in attempts.items() if attempt >= 1)
    assert resumed_at > 1  # it went on from a checkpoint, not from the start
    assert outcome["metrics"]["test_accuracy"] >= 0.9


def test_a_local_storage_root_is_refused_on_several_nodes(tmp_path):
    outcome = _run(_job(tmp_path, shared=False), tmp_path / "home")
    assert outcome["error"].startswith("UsageError: storage.root:") and "storage.shared: true" in outcome["error"]
