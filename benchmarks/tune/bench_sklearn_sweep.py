"""64 trials of a small scikit-learn model on wine: `raymlp tune` against Optuna alone, sequential.

    .venv/bin/python benchmarks/tune/bench_sklearn_sweep.py               # 64 trials
    .venv/bin/python benchmarks/tune/bench_sklearn_sweep.py --trials 16   # smoke size

Both sides run the same search: Optuna's TPE (seed 7) over `n_estimators` (10-300), `max_depth`
(2-16) and `min_samples_leaf` (1, 2, 4, 8) of a RandomForestClassifier (n_jobs 1) on scikit-learn's
wine data, split 60/20/20 stratified with seed 7, standard-scaled, scored by validation accuracy.
The baseline is an Optuna study in this process: per trial, fit and score on the in-memory arrays.
Ray Tune alone (a reference: the floor of any sweep on Ray Tune) runs the same objective as a Tune
function trainable, 2 trials at once with 1 CPU each and reused trial processes, in a fresh process.
raymlp runs `jobs/wine-sklearn-sweep.yaml` with `tune.num_samples=N` through `run_job(only=["tune"])`
in a fresh Python process (its dataset converted first, not timed), with its `max_concurrent` (2)
on an embedded Ray: every trial a train run of its own (catalog run, MLflow run nested under the
sweep's, model package, test metrics). Wall time of each side from its first trial's start to its
last trial's end (raymlp: the tune stage's own `seconds`, Ray start-up excluded); per-trial
overhead = (raymlp's wall x its concurrency - the baseline's wall) / trials.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "wine-sklearn-sweep.yaml"


def baseline(trials: int) -> dict:
    import numpy as np
    import optuna
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    features, labels = load_wine(return_X_y=True)
    train_x, rest_x, train_y, rest_y = train_test_split(
        features, labels, test_size=0.4, random_state=7, stratify=labels
    )
    val_x, _, val_y, _ = train_test_split(rest_x, rest_y, test_size=0.5, random_state=7, stratify=rest_y)
    scaler = StandardScaler().fit(train_x)
    train_x, val_x = scaler.transform(train_x), scaler.transform(val_x)

    def objective(trial) -> float:
        model = RandomForestClassifier(
            n_estimators=trial.suggest_int("n_estimators", 10, 299),
            max_depth=trial.suggest_int("max_depth", 2, 15),
            min_samples_leaf=trial.suggest_categorical("min_samples_leaf", [1, 2, 4, 8]),
            n_jobs=1,
            random_state=7,
        )
        model.fit(train_x, train_y)
        return float(np.mean(model.predict(val_x) == val_y))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=7))
    started = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return {"seconds": time.perf_counter() - started, "best": study.best_value, "trials": len(study.trials)}


def ray_tune_child(trials: int) -> dict:
    """Ray Tune alone on the same Ray settings as raymlp's (2 trials at once, one CPU each, reused
    trial processes): the floor any sweep on Ray Tune starts from."""
    import numpy as np
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    def objective(config: dict) -> None:
        features, labels = load_wine(return_X_y=True)
        train_x, rest_x, train_y, rest_y = train_test_split(
            features, labels, test_size=0.4, random_state=7, stratify=labels
        )
        val_x, _, val_y, _ = train_test_split(rest_x, rest_y, test_size=0.5, random_state=7, stratify=rest_y)
        scaler = StandardScaler().fit(train_x)
        model = RandomForestClassifier(n_jobs=1, random_state=7, **config).fit(scaler.transform(train_x), train_y)
        tune.report({"val_accuracy": float(np.mean(model.predict(scaler.transform(val_x)) == val_y))})

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    space = {
        "n_estimators": tune.randint(10, 300),
        "max_depth": tune.randint(2, 16),
        "min_samples_leaf": tune.choice([1, 2, 4, 8]),
    }
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        grid = tune.Tuner(
            tune.with_resources(objective, {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="val_accuracy",
                mode="max",
                num_samples=trials,
                max_concurrent_trials=2,
                reuse_actors=True,
                search_alg=OptunaSearch(seed=7),
            ),
            run_config=tune.RunConfig(storage_path=folder, verbose=0),
        ).fit()
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "best": float(grid.get_best_result().metrics["val_accuracy"])}


def child(spec: dict) -> dict:
    from raymlp import run_job
    from raymlp.context import Reporter

    os.environ["RAYMLP_HOME"] = spec["home"]
    run_job(JOB, only=["convert"], reporter=Reporter(quiet=True))
    started = time.perf_counter()
    summary = run_job(
        JOB, overrides=[f"tune.num_samples={spec['trials']}"], only=["tune"], reporter=Reporter(quiet=True)
    )
    wall = time.perf_counter() - started
    from raymlp.storage import resolve_storage

    results = json.loads((resolve_storage().folder("runs", summary.run_id) / "tune_results.json").read_text())
    return {
        "seconds": results["seconds"],
        "refit": results.get("best_refit_seconds") or 0.0,
        "wall_with_ray": wall,
        "ray_startup": summary.ray_startup_seconds,
        "best": results["best"]["metric"],
        "finished": sum(row["state"] == "finished" for row in results["trials"]),
    }


def raymlp_side(trials: int, kind: str = "raymlp") -> dict:
    with tempfile.TemporaryDirectory() as folder:
        spec = {"home": str(Path(folder) / "home"), "trials": trials, "kind": kind}
        done = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
            env={**os.environ, "RAY_TMPDIR": folder},
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"raymlp run failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print("RESULT " + json.dumps(ray_tune_child(spec["trials"]) if spec["kind"] == "ray-tune" else child(spec)))
        return
    base = baseline(args.trials)
    print(
        f"optuna alone: {base['seconds']:.1f} s for {base['trials']} trials, best {base['best']:.4f} "
        f"(load {os.getloadavg()[0]:.2f})",
        flush=True,
    )
    floor = raymlp_side(args.trials, "ray-tune")
    print(
        f"ray tune alone: {floor['seconds']:.1f} s, best {floor['best']:.4f} (same searcher, 2 at once, reused "
        f"processes; {floor['seconds'] / base['seconds']:.2f}x optuna)",
        flush=True,
    )
    ours = raymlp_side(args.trials)
    concurrency = 2
    overhead = (ours["seconds"] * concurrency - base["seconds"]) / args.trials
    print(
        f"raymlp tune:  {ours['seconds']:.1f} s for {ours['finished']} finished trials, of which {ours['refit']:.1f} s "
        "the best trial's full run (+ Ray start-up "
        f"{ours['ray_startup']:.1f} s), best {ours['best']:.4f} (load {os.getloadavg()[0]:.2f})"
    )
    print(
        f"ratio raymlp / optuna: {ours['seconds'] / base['seconds']:.2f}x (goal <= 0.6x); per-trial overhead "
        f"{overhead:.2f} s (raymlp's wall x {concurrency} concurrent - optuna's, per trial); raymlp / ray tune alone "
        f"{ours['seconds'] / floor['seconds']:.2f}x"
    )


if __name__ == "__main__":
    main()
