"""What the job file says about a sweep's settings that the checks and the tune stage both need.

Pure descriptions of job paths, no Ray Tune: the Tune objects built from them live in
`raymlp.tune.space`.
"""

from __future__ import annotations


def pbt_mutable(path: str) -> bool:
    """Whether PBT may change a setting between epochs: the optimizer's and the batch size, which a
    checkpoint of another trial can go on with (the model's shape could not)."""
    return path.startswith("train.optimizer.") or path == "train.batch_size"
