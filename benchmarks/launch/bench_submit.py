"""Submission cost: `raymlp submit` against `ray job submit --no-wait` sending the same project folder.

raymlp loads and validates the job file and walks the folder once more than Ray does (to measure it
against Ray's upload limit before anything is sent); this measures what that costs, for a small
project and for one holding many files. Both send the same job to the same cluster (a head started
here, token auth on) and return once it is accepted. Ray's job is `raymlp validate`; raymlp's
(`raymlp run` of the quickstart) is stopped as soon as it is accepted, so the cluster's work does not
disturb the next timing.

    .venv/bin/python benchmarks/launch/bench_submit.py [--files 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _project(root: Path, files: int) -> Path:
    (root / "jobs").mkdir(parents=True)
    shutil.copy(REPO / "jobs" / "quickstart.yaml", root / "jobs" / "quickstart.yaml")
    subprocess.run(
        [BIN / "raymlp", "data", "sample", "wine", "-o", "data/wine.csv"], cwd=root, check=True, capture_output=True
    )
    for number in range(files):
        folder = root / "src" / f"pkg{number // 100}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"module{number}.py").write_text(f"VALUE = {number}\n" + "# padding\n" * 200)
    return root


def _time(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{command[:3]} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed


def _stop_running(url: str, env: dict[str, str]) -> None:
    import json

    listed = subprocess.run(
        [BIN / "raymlp", "jobs", "list", "--json", "--address", url], env=env, capture_output=True, text=True
    )
    text = listed.stdout
    for job in json.loads(text[text.index("[") :]):
        if job["status"] in ("PENDING", "RUNNING"):
            subprocess.run(
                [BIN / "raymlp", "jobs", "stop", job["submission_id"], "--address", url], env=env, capture_output=True
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000, help="extra small source files in the big project")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        "RAYMLP_HOME": str(scratch / "home"),
        "RAY_AUTH_TOKEN": token,
        "RAY_AUTH_MODE": "token",
        "RAY_ADDRESS": "",
    }
    up = subprocess.run(
        [BIN / "raymlp", "cluster", "up", "--local", str(REPO / "clusters" / "local-autoscaling.yaml")],
        env=env,
        capture_output=True,
        text=True,
        cwd=scratch,
    )
    if up.returncode:
        raise SystemExit(up.stderr)
    url = next(word for line in up.stdout.splitlines() for word in line.split() if word.startswith("http://"))
    rows = []
    try:
        for label, files in (("small project (2 files)", 0), (f"{args.files} more source files", args.files)):
            project = _project(scratch / f"project-{files}", files)
            raymlp = [str(BIN / "raymlp"), "submit", "jobs/quickstart.yaml", "--address", url]
            ray = [
                str(BIN / "ray"),
                "job",
                "submit",
                "--no-wait",
                "--address",
                url,
                "--working-dir",
                ".",
                "--",
                "raymlp",
                "validate",
                "jobs/quickstart.yaml",
            ]
            times: dict[str, list[float]] = {"raymlp": [], "ray": []}
            for _ in range(args.repeat):
                times["ray"].append(_time(ray, project, env))
                times["raymlp"].append(_time(raymlp, project, env))
                _stop_running(url, env)
            rows.append((label, statistics.median(times["raymlp"]), statistics.median(times["ray"])))
    finally:
        subprocess.run(
            [BIN / "raymlp", "cluster", "down", "--local", str(REPO / "clusters" / "local-autoscaling.yaml")],
            env=env,
            capture_output=True,
            cwd=scratch,
        )
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{'project':<28} {'raymlp submit':>14} {'ray job submit':>15} {'ratio':>7}")
    for label, ours, theirs in rows:
        print(f"{label:<28} {ours:>13.2f}s {theirs:>14.2f}s {theirs / ours:>6.2f}x")


if __name__ == "__main__":
    main()
