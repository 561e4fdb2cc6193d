"""Does the fast path keep Serve's operational behaviour? (HAProxy + direct ingress, Ray 2.60)

Companion to bench_online.py (both import online_harness.py). Starts a local Ray cluster
with the flags the fast path needs (RAY_SERVE_ENABLE_HA_PROXY=1, which turns RAY_SERVE_ENABLE_DIRECT_INGRESS on, plus
HAProxy's 1 thread and no metrics log; user code stays in its own thread unless
--main-loop) and checks, through HAProxy's
port, with the same load generator as the benchmark:

  autoscaling   1 -> 2 replicas under 32 clients; HAProxy's backend follows; no failed request
  rolling       a new version (user_config) rolled out under 8 clients; no failed request
  backpressure  max_ongoing_requests=1, max_queued_requests=1: surplus requests get 503
  timeout       x-request-timeout-seconds: 1 on a 3 s request: 408 from the replica
  drain         replica stop: /-/healthz on the replica port turns 503 (DRAINING) first

    .venv/bin/python benchmarks/serve/check_fast_path.py [--flags-via env|controller_options]

`--flags-via controller_options` sets the RAY_SERVE_* flags only through
serve.start(controller_options={"runtime_env": {"env_vars": ...}}) instead of the
environment of the process that starts Ray, to see whether they reach proxies and replicas.
Ports 8700-8799 only; never runs `ray stop`.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import online_harness as harness

FLAGS = {
    **harness.HAPROXY_TUNED,
    # Short enough for a check, long enough to see the drain (default 30 s).
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
}


def post(url: str, body: bytes, timeout: float = 30) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()[:200]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()[:200]


def get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()[:200]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()[:200]
    except OSError as exc:
        return -1, str(exc)


def build_app(model_path: str, options: dict):
    from fastapi import FastAPI
    from ray import serve

    WineRecord = harness.make_record_model()
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @serve.deployment(name="model")
    @serve.ingress(api)
    class Model:
        def __init__(self, path: str):
            self.model = harness.load_model(path)
            self.version = "none"

        def reconfigure(self, config: dict) -> None:
            self.version = config.get("version", "none")

        @api.post("/predict")
        async def predict(self, record: WineRecord) -> dict:  # type: ignore[valid-type]
            return harness.predict_one(self.model, harness.record_values(record))

        @api.get("/version")
        async def get_version(self) -> dict:
            return {"version": self.version, "pid": os.getpid()}

        @api.get("/slow")
        async def slow(self, seconds: float = 1.0) -> dict:
            await asyncio.sleep(seconds)
            return {"slept": seconds}

    return Model.options(**options).bind(model_path)


def target_ports(controller) -> list[int]:
    import ray

    groups = ray.get(controller.get_target_groups.remote("default", True))
    return sorted(t.port for g in groups if g.app_name == "default" for t in g.targets)


start_load = harness.start_load_process
finish_load = harness.finish_load_process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flags-via", choices=["env", "controller_options"], default="env")
    parser.add_argument(
        "--main-loop",
        action="store_true",
        help="also RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 (faster, but a "
        "fast CPU-bound handler then reports 0 ongoing requests)",
    )
    args = parser.parse_args()
    flags = {**FLAGS, **(harness.MAIN_LOOP if args.main_loop else {})}

    workdir = tempfile.mkdtemp(prefix="rsc_", dir="/tmp")
    model_path = os.path.join(workdir, "wine.pkl")
    body = json.dumps(harness.train_model(model_path)).encode()
    # Ports and HAProxy file locations of the benchmark (never the defaults other clusters use).
    env = harness.serve_env({"env": {}}, workdir)
    env.pop("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", None)
    env.pop("RAY_SERVE_PORT_QUARANTINE_S", None)
    controller_env = {}
    if args.flags_via == "env":
        env.update(flags)
    else:
        controller_env = dict(flags)
    for key in [k for k in os.environ if k.startswith("RAY_")]:
        del os.environ[key]
    os.environ.update(env)

    from ray import serve
    from ray.serve.context import _get_global_client

    results: dict[str, object] = {"flags_via": args.flags_via, "flags": flags}
    url = f"http://127.0.0.1:{harness.PORT_SERVE_HTTP}"
    try:
        harness.init_local_ray(workdir)
        start_kwargs: dict = {"http_options": {"host": "127.0.0.1", "port": harness.PORT_SERVE_HTTP}}
        if controller_env:
            start_kwargs["controller_options"] = {"runtime_env": {"env_vars": controller_env}}
        serve.start(**start_kwargs)
        controller = _get_global_client()._controller

        # 1. autoscaling 1 -> 2 under load, HAProxy backend follows.
        autoscaling = {
            "min_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 4,
            "upscale_delay_s": 1,
            "downscale_delay_s": 600,
            "look_back_period_s": 2,
            "metrics_interval_s": 0.5,
        }
        serve.run(
            build_app(
                model_path,
                {
                    "autoscaling_config": autoscaling,
                    "max_ongoing_requests": 64,
                    "logging_config": harness.QUIET,
                    "user_config": {"version": "v1"},
                },
            ),
            name="default",
            route_prefix="/",
        )
        harness.wait_http_ok(f"{url}/predict", body, 120)
        ports0 = target_ports(controller)
        pids = harness.serve_process_pids(os.getpid())
        results["processes_at_start"] = sorted(pids)
        results["haproxy_targets_at_start"] = ports0
        load = start_load(f"{url}/predict", body, 32, 25)
        timeline = []
        t0 = time.time()
        while load.poll() is None:
            timeline.append((round(time.time() - t0, 1), len(target_ports(controller))))
            time.sleep(1)
        res = finish_load(load)
        results["autoscaling"] = {
            "haproxy_targets_over_time": timeline[::3],
            "targets_after": target_ports(controller),
            "rps": round(res["rps"], 1),
            "statuses": res["statuses"],
            "errors": res["errors"],
            "error_kinds": res["error_kinds"],
        }
        print("autoscaling:", results["autoscaling"], flush=True)

        # 2. rolling update under load: new user_config -> in-place reconfigure; a new
        #    code version (here: changed ray_actor_options) -> replicas replaced one by one.
        load = start_load(f"{url}/predict", body, 8, 60)
        time.sleep(3)
        serve.run(
            build_app(
                model_path,
                {
                    "autoscaling_config": autoscaling,
                    "max_ongoing_requests": 64,
                    "logging_config": harness.QUIET,
                    "ray_actor_options": {"num_cpus": 0.5},
                    "user_config": {"version": "v2"},
                },
            ),
            name="default",
            route_prefix="/",
            blocking=False,
        )
        res = finish_load(load)
        versions = {get(f"{url}/version")[1] for _ in range(6)}
        results["rolling_update"] = {
            "rps": round(res["rps"], 1),
            "statuses": res["statuses"],
            "errors": res["errors"],
            "error_kinds": res["error_kinds"],
            "versions_after": sorted(versions),
            "targets_after": target_ports(controller),
        }
        print("rolling update:", results["rolling_update"], flush=True)

        # 3. backpressure: one running + one queued request per replica; the rest 503.
        serve.run(
            build_app(
                model_path,
                {
                    "num_replicas": 1,
                    "max_ongoing_requests": 1,
                    "max_queued_requests": 1,
                    "logging_config": harness.QUIET,
                },
            ),
            name="default",
            route_prefix="/",
        )
        time.sleep(8)  # let HAProxy drop the replicas that were just stopped

        async def burst(n: int, path: str) -> list[int]:
            def one() -> int:
                return get(f"{url}{path}", timeout=30)[0]

            return list(await asyncio.gather(*(asyncio.to_thread(one) for _ in range(n))))

        codes = asyncio.run(burst(6, "/slow?seconds=0.5"))
        results["backpressure"] = {"codes": sorted(codes)}
        print("backpressure (6 concurrent, 1 running + 1 queued allowed):", sorted(codes), flush=True)

        # 4. request timeout (x-request-timeout-seconds; http_options.request_timeout_s is the
        #    default for it), enforced in the replica.
        t = time.time()
        req = urllib.request.Request(f"{url}/slow?seconds=3", headers={"x-request-timeout-seconds": "1"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                code, text = resp.status, resp.read().decode()[:200]
        except urllib.error.HTTPError as exc:
            code, text = exc.code, exc.read().decode()[:200]
        results["timeout"] = {"code": code, "after_s": round(time.time() - t, 2), "body": text}
        print("timeout:", results["timeout"], flush=True)

        # 5. drain: delete the app; the replica's own /-/healthz should say DRAINING (503)
        #    while it stays reachable for the draining period.
        ports = target_ports(controller)
        serve.delete("default", _blocking=False)
        seen = []
        t = time.time()
        while time.time() - t < 12:
            seen.append(get(f"http://127.0.0.1:{ports[0]}/-/healthz", timeout=2)[:1][0])
            time.sleep(0.5)
        results["drain_healthz_codes"] = seen
        print("drain: replica /-/healthz codes over 12 s:", seen, flush=True)
    finally:
        harness.shutdown_serve_and_ray()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
