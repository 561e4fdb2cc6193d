"""Population-based training over a sweep's epochs (Ray Tune's PBT, bounded by the job's epochs)."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import PopulationBasedTraining


class EpochBoundedPBT(PopulationBasedTraining):
    """PBT that leaves a trial's last two epochs alone: a trial that takes over another's checkpoint
    (taken at the epoch PBT looked at, at most the last but one) always has an epoch left to train.
    A trial's final report (its run's test metrics) has no `epoch`, so PBT never acts on it."""

    def __init__(self, epochs: int, **settings: Any):
        super().__init__(**settings)
        self._epochs = epochs

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if result.get("epoch", 0) >= self._epochs - 1:
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)
