"""What capture costs an endpoint: raymlp's endpoint with `serve.capture` at sample 1.0 against
the same endpoint without, at 32 clients (the issue's goal: at most 10% less throughput).

Runs benchmarks/serve/bench_online.py's `raymlp` and `raymlp_capture` variants (2 replicas, the
HAProxy ingress, the wine logistic-regression package; every server in its own subprocess and a
fresh local Ray, the load generator in another process) in the same run, alternating them
`--rounds` times so drift in the machine's load hits both, and prints the best and median
throughput of each and their ratio. The captured rows are counted from the files the replicas
wrote (RAYMLP_HOME is a temporary folder) and compared with the requests answered.

    .venv/bin/python benchmarks/monitor/bench_capture.py                 # 2 rounds of 10 s
    .venv/bin/python benchmarks/monitor/bench_capture.py --seconds 3 --rounds 1   # smoke size
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ONLINE = os.path.join(HERE, "..", "serve", "bench_online.py")


def run_round(seconds: float, clients: int, home: str, variants: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = handle.name
    env = {**os.environ, "RAYMLP_HOME": home}
    subprocess.run(
        [
            sys.executable,
            ONLINE,
            "--variants",
            variants,
            "--clients",
            str(clients),
            "--seconds",
            str(seconds),
            "--json",
            out,
        ],
        check=True,
        env=env,
    )
    with open(out) as handle:
        return json.load(handle)["results"]


def captured_rows(home: str) -> int:
    import pyarrow.parquet as pq

    total = 0
    for folder, _, names in os.walk(os.path.join(home, "captures")):
        for name in names:
            if name.endswith(".parquet") and not name.startswith("."):
                total += pq.read_metadata(os.path.join(folder, name)).num_rows
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rps: dict[str, list[float]] = {"raymlp": [], "raymlp_capture": []}
    answered = captured = 0
    key = str(args.clients)
    for round_number in range(args.rounds):
        order = "raymlp,raymlp_capture" if round_number % 2 == 0 else "raymlp_capture,raymlp"
        home = tempfile.mkdtemp(prefix="bench-capture-")
        results = run_round(args.seconds, args.clients, home, order)
        for name in rps:
            rps[name].append(results[name][key]["rps"])
        point = results["raymlp_capture"][key]
        answered += sum(count for status, count in point["statuses"].items() if str(status) == "200")
        captured += captured_rows(home)
    print()
    print(f"{'variant':<16} {'best req/s':>11} {'median req/s':>13}")
    for name, values in rps.items():
        print(f"{name:<16} {max(values):>11.1f} {statistics.median(values):>13.1f}")
    print(f"capture on / off, best: {max(rps['raymlp_capture']) / max(rps['raymlp']):.3f}")
    print(
        f"capture on / off, median: {statistics.median(rps['raymlp_capture']) / statistics.median(rps['raymlp']):.3f}"
    )
    print(
        f"rows captured {captured:,} (answered in the measured seconds: {answered:,}; warm-up requests are captured too)"
    )


if __name__ == "__main__":
    main()
