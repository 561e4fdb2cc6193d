"""What every data benchmark does on raymlp's side: write a one-dataset job, run one stage of it."""

from __future__ import annotations

import os
import time
from pathlib import Path


def write_job(home: Path, data: str) -> Path:
    """A job named `bench` whose `data:` section is the YAML lines in `data` (indented by two)."""
    job_file = home / "bench.yaml"
    job_file.write_text(f"version: 1\nname: bench\ndata:\n{data}  dataset: {{name: bench}}\n")
    return job_file


def time_stage(job_file: Path, home: Path, stage: str):
    """(seconds, run summary) of one stage of `job_file`, with RAYMLP_HOME under `home`."""
    from raymlp import load_job, run_job
    from raymlp.context import Reporter

    os.environ["RAYMLP_HOME"] = str(home / ".raymlp")
    job = load_job(job_file)
    started = time.perf_counter()
    summary = run_job(job, only=[stage], reporter=Reporter(quiet=True))
    return time.perf_counter() - started, summary
