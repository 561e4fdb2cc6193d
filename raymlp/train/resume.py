"""`raymlp train --resume RUN` while RUN is still training: refused.

A run's training goes on for as long as its Ray Train controller lives: after its driver is killed
Ray ends the controller only once it notices (seconds to a minute), and a driver in another
terminal may simply still be running. A resume meanwhile would train into the same checkpoint
folder as the old controller, which keeps writing (and, keeping the newest N, deleting)
checkpoints there. The controller is found with Ray's public state API: the alive
`TrainController` actors of the Ray jobs (drivers) whose metadata says `raymlp.run_id: RUN`
(`raymlp.runtime.ray_runtime` labels every raymlp driver so, resumed ones too).
"""

from __future__ import annotations

from typing import Any

from raymlp.errors import UsageError

#: The class of Ray Train V2's controller actor (one per `trainer.fit()`, in the driver's Ray job).
CONTROLLER_CLASS = "TrainController"
#: The Ray job metadata key naming the raymlp run a driver runs (set by `ray_runtime`).
RUN_ID_METADATA = "raymlp.run_id"
#: Seconds each state API query may take.
_TIMEOUT_S = 15


def alive_controllers(run_id: str, address: str | None) -> list[Any]:
    """The alive Ray Train controllers (`ray.util.state` ActorState) of run `run_id` on the cluster
    at `address` (None: the one `RAY_ADDRESS` names, or this process is connected to)."""
    from ray.util.state import list_actors, list_jobs

    controllers = list_actors(
        address=address,
        filters=[("class_name", "=", CONTROLLER_CLASS), ("state", "=", "ALIVE")],
        limit=10_000,
        timeout=_TIMEOUT_S,
        raise_on_missing_output=False,
    )
    runs_jobs: dict[str, bool] = {}
    for job_id in {actor.job_id for actor in controllers}:
        jobs = list_jobs(
            address=address,
            filters=[("job_id", "=", job_id)],
            detail=True,
            timeout=_TIMEOUT_S,
            raise_on_missing_output=False,
        )
        runs_jobs[job_id] = any((getattr(job, "metadata", None) or {}).get(RUN_ID_METADATA) == run_id for job in jobs)
    return [actor for actor in controllers if runs_jobs.get(actor.job_id)]


def refuse_while_training(run_id: str, address: str | None) -> None:
    """UsageError when run `run_id` still has an alive Ray Train controller on the cluster this
    command would join (`address`, else RAY_ADDRESS). An embedded Ray is started afresh and holds
    no old controller (an embedded Ray's processes end with the driver that started it), so
    without a cluster address there is nothing to look at. A cluster whose state API does not
    answer (no dashboard) is not looked at either: the resume goes on as it did before this check."""
    import ray

    from raymlp import settings

    cluster = address or settings.ray_address()
    if cluster is None and not ray.is_initialized():
        return
    try:
        controllers = alive_controllers(run_id, cluster)
    except Exception:
        return
    if not controllers:
        return
    shown = ", ".join(f"actor {actor.actor_id[:12]} (pid {actor.pid})" for actor in controllers)
    raise UsageError(
        f"--resume: run {run_id} is still training: its Ray Train controller is alive on the cluster ({shown}). "
        "Its driver is still running, or died moments ago and Ray has not ended its actors yet (it does once it "
        "notices, within about a minute). Let that driver finish or stop it (Ctrl-C), wait for the controller to "
        f"end, then run --resume {run_id} again"
    )
