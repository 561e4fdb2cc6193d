"""What every stage receives: the job, where state lives, the catalog, and a place to report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from raymlp.config import LoadedJob
from raymlp.storage import Storage


class Reporter:
    """Stage progress on stderr: rich on a terminal, plain lines in a pipe."""

    def __init__(self, quiet: bool = False, console=None, progress_every_s: float = 5.0):
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False)
        self.quiet = quiet
        self.progress_every_s = progress_every_s

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False, soft_wrap=True)

    def stage(self, name: str, detail: str) -> None:
        if not self.quiet:
            self.console.print(f"[bold]{name:>9}[/bold]  {detail}", soft_wrap=True)

    @contextmanager
    def progress(self, name: str, total_bytes: int | None) -> Iterator[Callable[[int, int], None]]:
        """A callback `(rows, bytes)` for each piece of work done: a live bar with rows/s and MB/s
        on a terminal, a line every few seconds in a pipe, nothing when quiet."""
        started = time.perf_counter()
        done = {"rows": 0, "bytes": 0, "shown": started}

        def rates() -> str:
            seconds = max(time.perf_counter() - started, 1e-6)
            return (
                f"{done['rows']:,} rows, {done['bytes'] / 1e6:,.1f} MB ({done['rows'] / seconds:,.0f} rows/s, "
                f"{done['bytes'] / 1e6 / seconds:,.1f} MB/s)"
            )

        if self.quiet:
            yield lambda rows, size: None
            return
        if not self.console.is_terminal:

            def line(rows: int, size: int) -> None:
                done["rows"] += rows
                done["bytes"] += size
                if time.perf_counter() - done["shown"] >= self.progress_every_s:
                    done["shown"] = time.perf_counter()
                    self.console.print(f"{name:>9}  ... {rates()}", soft_wrap=True, markup=False)

            yield line
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn(f"[bold]{name:>9}[/bold]"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[rates]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        ) as bar:
            task = bar.add_task(name, total=total_bytes or None, rates="")

            def advance(rows: int, size: int) -> None:
                done["rows"] += rows
                done["bytes"] += size
                bar.update(task, advance=size, rates=rates())

            yield advance


@dataclass
class StageContext:
    """Shared by the stages of one run."""

    job: LoadedJob
    storage: Storage
    catalog: Any
    run_id: str
    reporter: Reporter
    results: dict[str, Any] = field(default_factory=dict)
    resuming: bool = False  # continuing an earlier run's training (`run_job(resume=...)`)
    retry_errored: bool = False  # a resumed sweep runs its errored trials again
    sweep_trial: dict[str, str] | None = None  # a sweep's trial: {mlflow_run, run_id, trial} of the sweep

    @property
    def config(self):
        return self.job.config
