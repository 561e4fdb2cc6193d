"""The online benchmarks' harness: the model and its request shape, the ports and RAY_SERVE_* flags, the
environment of a Serve server process, the Serve processes of a cluster, the load generator and the CPU
accounting. bench_online.py (the variants, their servers, the report) and check_fast_path.py import it.

The load generator runs in a process of its own, so it never shares a GIL with a server:

    python benchmarks/serve/online_harness.py _load URL CLIENTS WARMUP_S SECONDS [HEADER...] < body.json

prints one JSON line of results (see `load`). `run_load_process` and `start_load_process` start it.
"""

import asyncio
import json
import os
import pickle
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

PYTHON = sys.executable

# The 13 wine features, named as sklearn names them but valid as Python identifiers.
FEATURES = [
    "alcohol",
    "malic_acid",
    "ash",
    "alcalinity_of_ash",
    "magnesium",
    "total_phenols",
    "flavanoids",
    "nonflavanoid_phenols",
    "proanthocyanins",
    "color_intensity",
    "hue",
    "od280_od315_of_diluted_wines",
    "proline",
]

PORT_BASELINE = 8700
PORT_SERVE_HTTP = 8701  # Serve proxy, or HAProxy's frontend in HAProxy mode
PORT_FALLBACK_HTTP = 8702  # Python proxy behind HAProxy (scale-from-zero fallback)
PORT_FALLBACK_GRPC = 8703
PORT_DI_HTTP = (8710, 8730)  # direct-ingress replica ports [min, max)
PORT_DI_GRPC = (8740, 8760)
PORT_HAPROXY_STATS = 8790
PORT_HAPROXY_METRICS = 8791


def train_model(path: str) -> dict[str, float]:
    """Train the pipeline on the wine data, pickle it to `path`; return one sample record."""
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_wine()
    model = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=1000))])
    model.fit(data.data, data.target)
    with open(path, "wb") as f:
        pickle.dump(model, f)
    return {name: float(value) for name, value in zip(FEATURES, data.data[0])}


def make_record_model():
    from pydantic import BaseModel

    class WineRecord(BaseModel):
        alcohol: float
        malic_acid: float
        ash: float
        alcalinity_of_ash: float
        magnesium: float
        total_phenols: float
        flavanoids: float
        nonflavanoid_phenols: float
        proanthocyanins: float
        color_intensity: float
        hue: float
        od280_od315_of_diluted_wines: float
        proline: float

    return WineRecord


def load_model(path: str):
    with open(path, "rb") as f:
        return pickle.load(f)


def predict_one(model, values: list[float]) -> dict[str, Any]:
    """One record in, the answer dict out (same code for every server)."""
    import numpy as np

    proba = model.predict_proba(np.asarray([values], dtype=np.float64))[0]
    classes = model.classes_
    best = int(proba.argmax())
    return {
        "prediction": int(classes[best]),
        "probabilities": {f"class_{int(c)}": float(p) for c, p in zip(classes, proba)},
    }


def record_values(record) -> list[float]:
    return [getattr(record, name) for name in FEATURES]


QUIET = {"enable_access_log": False, "log_level": "WARNING"}
MAIN_LOOP = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
DIRECT = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}
HAPROXY = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
# HAProxy tuned for a 2-core box: 1 thread, and no per-request metrics log lines that the
# HAProxyManager actor parses in Python (the replica then emits the ingress metrics itself).
HAPROXY_TUNED = {**HAPROXY, "RAY_SERVE_HAPROXY_NBTHREAD": "1", "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0"}


def serve_env(variant: dict[str, Any], workdir: str) -> dict[str, str]:
    """Environment for a Serve server subprocess: a clean Ray env plus this variant's flags."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    hap = os.path.join(workdir, "haproxy")
    env.update(
        {
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(PORT_DI_HTTP[0]),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(PORT_DI_HTTP[1]),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(PORT_DI_GRPC[0]),
            "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(PORT_DI_GRPC[1]),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(PORT_FALLBACK_HTTP),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(PORT_FALLBACK_GRPC),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(PORT_HAPROXY_STATS),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(PORT_HAPROXY_METRICS),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(hap, "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(hap, "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": hap,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(hap, "server-state"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": os.path.join(hap, "metrics.sock"),
            # A short drain so the benchmark's teardown does not wait 30 s per replica.
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
            "RAY_SERVE_PORT_QUARANTINE_S": "0",
        }
    )
    env.update(variant.get("env", {}))
    return env


def _descendant_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def serve_process_pids(root: int) -> dict[str, int]:
    """PIDs of this cluster's Serve processes (only descendants of our own server process)."""
    pids: dict[str, int] = {}
    for pid in _descendant_pids(root):
        cmd = _cmdline(pid)
        if cmd.startswith("ray::ProxyActor"):
            pids.setdefault("proxy", pid)
        elif cmd.startswith("ray::HAProxyManager"):
            pids.setdefault("haproxy_manager", pid)
        elif cmd.startswith("ray::ServeReplica"):
            n = sum(1 for k in pids if k.startswith("replica"))
            pids[f"replica{n}" if n else "replica"] = pid
        elif cmd.startswith("ray::ServeController"):
            pids.setdefault("controller", pid)
        elif "haproxy" in cmd.split(" ")[0]:
            pids.setdefault("haproxy", pid)
    return pids


def wait_http_ok(url: str, body: bytes, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    last: Any = None
    while time.time() < deadline:
        try:
            req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return
                last = resp.status
        except Exception as exc:
            last = exc
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout_s}s: {last}")


def shutdown_serve_and_ray() -> None:
    """Stop this process's Serve and Ray, saying (not raising) when Serve's shutdown fails."""
    import ray
    from ray import serve

    try:
        serve.shutdown()
    except Exception as exc:
        print(f"serve.shutdown: {exc}", file=sys.stderr)
    ray.shutdown()


async def load(
    url: str, body: bytes, clients: int, warmup_s: float, seconds: float, headers: tuple[str, ...] = ()
) -> dict:
    import httptools

    parsed = httptools.parse_url(url.encode())
    host, port, path = parsed.host.decode(), parsed.port, parsed.path.decode()
    extra = "".join(f"{h}\r\n" for h in headers)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n{extra}\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()

    class Conn(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.waiter: asyncio.Future | None = None
            self.transport = None
            self.used = 0
            self.got_bytes = False

        def connection_made(self, transport) -> None:
            self.transport = transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            self.got_bytes = True
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            if self.waiter and not self.waiter.done():
                self.waiter.set_result(self.parser.get_status_code())

        def connection_lost(self, exc) -> None:
            self.transport = None
            if self.waiter and not self.waiter.done():
                # Closed before any byte of the answer on a reused keep-alive connection
                # is the classic keep-alive race (safe for a client to retry); after some
                # bytes, the answer was cut.
                kind = (
                    "closed_mid_response"
                    if self.got_bytes
                    else ("closed_before_response_reused" if self.used > 1 else "closed_before_response_new")
                )
                self.waiter.set_exception(ConnectionError(kind))

        async def send(self) -> int:
            self.used += 1
            self.got_bytes = False
            self.waiter = loop.create_future()
            self.transport.write(request)
            return await self.waiter

    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + seconds
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = [0]
    error_kinds: dict[str, int] = {}
    completed = [0]

    def error(kind: str) -> None:
        errors[0] += 1
        error_kinds[kind] = error_kinds.get(kind, 0) + 1

    async def client() -> None:
        conn = None
        while True:
            now = time.perf_counter()
            if now >= t_end:
                break
            if conn is None or conn.transport is None:
                try:
                    _, conn = await loop.create_connection(Conn, host, port)
                except OSError as exc:
                    error(f"connect: {type(exc).__name__}")
                    await asyncio.sleep(0.01)
                    continue
            t0 = time.perf_counter()
            try:
                status = await asyncio.wait_for(conn.send(), timeout=30)
            except Exception as exc:
                error(str(exc) if isinstance(exc, ConnectionError) else type(exc).__name__)
                if conn.transport is not None:
                    conn.transport.close()
                conn = None
                continue
            t1 = time.perf_counter()
            completed[0] += 1
            if t0 >= t_measure and t1 <= t_end:
                latencies.append(t1 - t0)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    ok = statuses.get("200", 0)
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "clients": clients,
        "seconds": seconds,
        "requests": len(latencies),
        "ok": ok,
        "rps": ok / seconds,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
        "statuses": statuses,
        "errors": errors[0],
        "error_kinds": error_kinds,
        "completed_total": completed[0],
    }


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def system_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(root: int) -> dict[int, float]:
    return {pid: _cpu_seconds(pid) for pid in [root, *_descendant_pids(root)]}


def cpu_per_request(
    before: dict[int, float], after: dict[int, float], roles: dict[str, int], requests: int, loadgen_cpu_s: float
) -> dict[str, float]:
    """CPU milliseconds per request, by Serve role and for the server's whole process tree."""
    if not requests:
        return {}
    delta = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    out = {role: 1000 * delta.get(pid, 0.0) / requests for role, pid in roles.items() if role != "uvicorn"}
    out["server_total"] = 1000 * sum(delta.values()) / requests
    out["loadgen"] = 1000 * loadgen_cpu_s / requests
    return {k: round(v, 3) for k, v in out.items()}


def other_cores_busy(root: int, interval_s: float = 1.0) -> float:
    """Cores kept busy over `interval_s` by anything outside `root`'s process tree."""
    before, sys0, t0 = cpu_snapshot(root), system_busy_seconds(), time.time()
    time.sleep(interval_s)
    after, sys1, t1 = cpu_snapshot(root), system_busy_seconds(), time.time()
    ours = sum(after[p] - before.get(p, 0.0) for p in after)
    return max(0.0, (sys1 - sys0) - ours) / (t1 - t0)


def wait_quiet(root: int, max_other_cores: float, max_wait_s: float) -> None:
    """Wait (bounded) until other work on the machine leaves both cores to us."""
    if max_other_cores <= 0:
        return
    deadline = time.time() + max_wait_s
    while time.time() < deadline:
        busy = other_cores_busy(root)
        if busy <= max_other_cores:
            return
        print(f"      waiting for a quiet machine (other work: {busy:.2f} cores busy)", flush=True)
        time.sleep(2)


def load_command(url: str, clients: int, warmup_s: float, seconds: float, headers: tuple[str, ...] = ()) -> list[str]:
    """The command line of a load generator process (the body goes to its stdin)."""
    return [PYTHON, os.path.abspath(__file__), "_load", url, str(clients), str(warmup_s), str(seconds), *headers]


def run_load_process(
    url: str, body: bytes, clients: int, warmup_s: float, seconds: float, headers: tuple[str, ...] = ()
) -> dict:
    """One closed-loop load run in its own process; its results (see `load`)."""
    out = subprocess.run(
        load_command(url, clients, warmup_s, seconds, headers),
        input=body.decode(),
        capture_output=True,
        text=True,
        check=True,
        timeout=warmup_s + seconds + 120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_load_process(url: str, body: bytes, clients: int, seconds: float) -> subprocess.Popen:
    """A load run started in the background (no warm-up); `finish_load_process` collects its results."""
    proc = subprocess.Popen(
        load_command(url, clients, 0, seconds), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin
    proc.stdin.write(body.decode())
    proc.stdin.close()
    proc.stdin = None  # so communicate() does not touch it again
    return proc


def finish_load_process(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=600)
    return json.loads(out.strip().splitlines()[-1])


def init_local_ray(workdir: str) -> None:
    """The benchmarks' own embedded Ray: four CPUs, no dashboard, a small object store, under WORKDIR."""
    import ray

    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        _temp_dir=os.path.join(workdir, "ray"),
        log_to_driver=False,
    )


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_load":
        import uvloop

        body = sys.stdin.read().encode()
        res = uvloop.run(
            load(sys.argv[2], body, int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), tuple(sys.argv[6:]))
        )
        print(json.dumps(res))
        return
    raise SystemExit(f"usage: {sys.argv[0]} _load URL CLIENTS WARMUP_S SECONDS [HEADER...] < body")


if __name__ == "__main__":
    main()
