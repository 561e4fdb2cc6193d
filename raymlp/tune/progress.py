"""Where a sweep stands, on the terminal while it runs: a live table of the trials (trial, values,
epoch, metric, state) on a terminal, a line per trial as it ends in a pipe.

A Ray Tune callback in the driver. Tune pickles its run config (callbacks included) with the
experiment's state, so the callback holds nothing of the terminal: it draws through the reporter
`showing()` installs for the sweep of this process, found again after `Tuner.restore`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ray.tune import Callback

_SHOWN: dict[str, Any] = {}


@contextmanager
def showing(reporter: Any, metric: str, space: dict[str, Any]) -> Iterator[None]:
    """Draw this process's sweep on `reporter` for the duration of the block."""
    from .space import decoded

    state = {"reporter": reporter, "metric": metric, "space": space, "decode": decoded, "rows": {}, "live": None}
    console = reporter.console
    if not reporter.quiet and console.is_terminal:
        from rich.live import Live

        state["live"] = Live(_table(state), console=console, refresh_per_second=2, transient=False)
        state["live"].start()
    _SHOWN.update(state)
    try:
        yield
    finally:
        if state["live"] is not None:
            state["live"].update(_table(state))
            state["live"].stop()
        _SHOWN.clear()


class SweepProgress(Callback):
    """Keeps each trial's row and redraws (terminal) or prints the trial's end (pipe)."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trial, state="running")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get("done") is True and ("raymlp_run_id" in result or result.get("light")):
            self._update(trial, state="finished", epoch=result.get("epochs"), value=result.get(_SHOWN.get("metric")))
        else:
            self._update(trial, state="running", epoch=result.get("epoch"), value=result.get(_SHOWN.get("metric")))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = _SHOWN.get("rows", {}).get(trial.trial_id, {})
        self._update(trial, state="finished" if row.get("state") == "finished" else "stopped early", final=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trial, state="error", final=True)

    def _update(self, trial: Any, *, state: str, epoch: Any = None, value: Any = None, final: bool = False) -> None:
        if not _SHOWN:
            return
        row = _SHOWN["rows"].setdefault(trial.trial_id, {"epoch": None, "value": None})
        row["state"] = state
        row["params"] = _SHOWN["decode"](
            _SHOWN["space"], {path: (trial.config or {}).get(path) for path in _SHOWN["space"]}
        )
        if epoch is not None:
            row["epoch"] = epoch
        if isinstance(value, int | float):
            row["value"] = value
        live, reporter = _SHOWN["live"], _SHOWN["reporter"]
        if live is not None:
            live.update(_table(_SHOWN))
        elif final and not reporter.quiet:
            reporter.info(
                f"    tune  trial {trial.trial_id} {state}: {_SHOWN['metric']} {_shown(row['value'])} after "
                f"{row['epoch'] or 0} epoch(s); {_params(row['params'])}"
            )


def _table(state: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"sweep: {state['metric']}", title_justify="left")
    for column in ("trial", "values", "epoch", state["metric"], "state"):
        table.add_column(column)
    for trial, row in sorted(state["rows"].items()):
        table.add_row(
            trial,
            _params(row.get("params") or {}),
            str(row.get("epoch") or ""),
            _shown(row.get("value")),
            row.get("state", ""),
        )
    return table


def _shown(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.4f}"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{path.rsplit('.', 1)[-1]}={value:.4g}"
        if isinstance(value, float)
        else f"{path.rsplit('.', 1)[-1]}={json.dumps(value)}"
        for path, value in params.items()
    )
